"""``dmtts serve``: the local web app (Gradio is imported inside the handler)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="local web app: prompt (record/upload, cut to 3 s, auto transcript) + text -> speech",
        description="Serve a Gradio page for zero-shot synthesis on this machine. Without --ar/--nar/--codec it "
        "uses the shipped demo models (recipes/demo/pretrained) and their prompt.",
    )
    p.add_argument("--ar", default=None, help="exported AR model directory (default: the demo's pretrained AR)")
    p.add_argument("--nar", default=None, help="exported NAR model directory (default: the demo's pretrained NAR)")
    p.add_argument("--codec", default=None, help="exported codec directory (default: the demo's pretrained codec)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--asr", default="faster-whisper",
                   help="ASR for the prompt transcript: faster-whisper (bundled Whisper tiny.en), BACKEND:DIR or none")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from dmtts.serve.app import serve

    serve(args)
    return 0
