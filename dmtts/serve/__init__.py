"""``dmtts serve``: a local web app (Gradio) for zero-shot synthesis."""
