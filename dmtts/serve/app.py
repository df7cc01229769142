"""``dmtts serve``: a local Gradio web app for zero-shot synthesis.

The page: record or upload a prompt; it is cut to 3 s (the start is a slider, and the cut is
shown and playable); the cut is transcribed by the bundled ASR into an editable transcript;
type the text (any length: long text is split into sentences), set the sampling options and
synthesize; with *Stream* (the default) the audio plays as it is made (``dmtts.tts.streaming``,
Gradio's streaming audio output), and the whole result is then shown and can be downloaded. Every handler turns an error
into a message shown in the page (``DmttsError`` as it is, anything else as one line and a
traceback in the server log only).

:class:`SynthesisService` holds the models and does the work (tested without a browser);
:func:`build_app` lays out the Gradio page around it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)

PROMPT_SECONDS = 3.0
PRETRAINED_DIR = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "pretrained"


def default_model_dirs() -> dict[str, Path] | None:
    """The shipped demo models (``recipes/demo/pretrained/{ar,nar,codec}``) when they exist."""
    dirs = {k: PRETRAINED_DIR / k for k in ("ar", "nar", "codec")}
    return dirs if all((d / "config.json").is_file() for d in dirs.values()) else None


def to_mono_float(audio) -> tuple[np.ndarray, int]:
    """Gradio's ``(sample_rate, int16/float array [n] or [n, channels])`` -> float32 mono in [-1, 1]."""
    if audio is None:
        raise DmttsError("no prompt: record or upload a few seconds of the target speaker first")
    sr, data = audio
    data = np.asarray(data)
    if data.size == 0:
        raise DmttsError("the prompt recording is empty: record or upload a few seconds of speech")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data, int(sr)


class SynthesisService:
    """The models behind the page, loaded once; one synthesis at a time (the models are shared)."""

    def __init__(self, ar, nar, codec, device: str = "cpu", asr: str = "faster-whisper",
                 out_dir: str | Path | None = None):
        from dmtts.tts.synthesize import Synthesizer

        self.dirs = {"ar": str(ar), "nar": str(nar), "codec": str(codec)}
        self.synth = Synthesizer(ar, nar, codec, device=device)
        self.sample_rate = self.synth.sample_rate
        self.asr_spec = asr
        self._asr = None
        self._lock = threading.Lock()
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="dmtts-serve-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._count = 0

    # -- prompt ------------------------------------------------------------------------------
    def cut_prompt(self, audio, start: float) -> tuple[np.ndarray, str]:
        """The 3 s of ``audio`` from ``start`` seconds (resampled to the codec's rate) and a line
        saying which part is used."""
        from dmtts.audio import resample
        from dmtts.tts.synthesize import prepare_prompt

        wav, sr = to_mono_float(audio)
        wav = resample(wav, sr, self.sample_rate)
        total = len(wav) / self.sample_rate
        start = float(start or 0.0)
        if start < 0 or start >= total:
            raise DmttsError(f"the prompt start {start:.2f} s is outside the {total:.2f} s recording: "
                             "move the slider below its length")
        start = min(start, max(0.0, total - PROMPT_SECONDS))  # keep 3 s when the recording has them
        piece = wav[int(round(start * self.sample_rate)):]
        piece = prepare_prompt(piece, self.sample_rate, PROMPT_SECONDS, "the prompt")
        end = start + len(piece) / self.sample_rate
        return piece, f"Prompt: {start:.2f}–{end:.2f} s of the {total:.2f} s recording ({end - start:.2f} s used)."

    def transcribe(self, prompt: np.ndarray) -> str:
        from dmtts.tts.synthesize import parse_asr_arg, transcribe_prompt

        with self._lock:
            if self._asr is None:
                self._asr = parse_asr_arg(self.asr_spec)
                if self._asr is None:
                    raise DmttsError("this server runs with --asr none: type the prompt's transcript")
            return transcribe_prompt(self._asr, prompt, "the prompt")

    # -- synthesis ---------------------------------------------------------------------------
    def synthesize(self, prompt: np.ndarray, prompt_text: str, text: str, top_k: int = 50, top_p: float = 1.0,
                   temperature: float = 1.0, seed: int = 42, ras: bool = False, max_retries: int = 2) -> tuple[Path, str]:
        """Synthesize ``text`` (any length) in the prompt's voice; returns the wav and a summary line."""
        import torch

        from dmtts.tts.synthesize import synthesize_texts

        _check_request(text, prompt_text, top_p)
        with self._lock:
            s = self._set_sampling(top_k, top_p, temperature, ras)
            s.max_retries = int(max_retries)
            self._count += 1
            out = self.out_dir / f"dmtts_{self._count:04d}.wav"
            gen = torch.Generator().manual_seed(int(seed))
            rec = synthesize_texts(s, [text], prompt, prompt_text, [out], gen, progress=False)[0]
        n = len(rec["sentences"])
        note = f"{rec['duration']:.2f} s of audio, {n} sentence{'s' * (n != 1)}"
        if rec["retries"]:
            note += f", {rec['retries']} retr{'ies' if rec['retries'] != 1 else 'y'} after failed generations"
        if rec["failures"]:
            note += f"; {rec['failures']} sentence(s) failed every check (kept the closest attempt)"
        return out, note + "."

    def _set_sampling(self, top_k, top_p, temperature, ras: bool):
        """The shared synthesizer with this request's sampling settings (call under the lock)."""
        s = self.synth
        s.top_k, s.top_p, s.temperature = int(top_k), float(top_p), float(temperature)
        s.ras_window = 10 if ras else 0
        return s

    def stream(self, prompt: np.ndarray, prompt_text: str, text: str, top_k: int = 50, top_p: float = 1.0,
               temperature: float = 1.0, seed: int = 42, ras: bool = False):
        """Streaming synthesis (``dmtts.tts.streaming``): yields ``("chunk", float32 audio)`` for
        every chunk as soon as it is ready, then ``("done", wav path, summary line)``; the whole
        audio is also written to the wav, for download."""
        import time

        import torch

        from dmtts.tts.streaming import StreamSettings, stream_text
        from dmtts.tts.synthesize import _StreamedWav

        _check_request(text, prompt_text, top_p)
        with self._lock:
            s = self._set_sampling(top_k, top_p, temperature, ras)
            self._count += 1
            out = self.out_dir / f"dmtts_{self._count:04d}.wav"
            writer, records, ok = _StreamedWav(out, self.sample_rate), [], False
            started, first = time.perf_counter(), None
            try:
                for chunk in stream_text(s, text, prompt, prompt_text, StreamSettings(),
                                         torch.Generator().manual_seed(int(seed)), records=records):
                    writer.write(chunk)
                    if first is None:
                        first = time.perf_counter() - started
                    yield "chunk", chunk
                ok = True
            finally:
                writer.close(ok)
        failed = sum(r.check["failure"] is not None for _, r in records)
        n = len(records)
        note = (f"{writer.frames / self.sample_rate:.2f} s of audio, {n} sentence{'s' * (n != 1)}, streamed: first "
                f"audio after {first:.2f} s")
        if failed:
            note += f"; {failed} sentence(s) failed a check (a streamed sentence is not retried)"
        yield "done", out, note + "."


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """A chunk of float32 audio as the bytes of a 16-bit WAV file (what Gradio streams)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _error_text(e: Exception) -> str:
    if isinstance(e, DmttsError):
        return f"**Error:** {e}"
    logger.error("unexpected error in the web app:\n%s", traceback.format_exc())
    return f"**Error:** {type(e).__name__}: {e} (details in the server log)"


def build_app(service: SynthesisService, default_prompt: str | Path | None = None,
              default_prompt_text: str | None = None):
    """The Gradio page around ``service`` (see the module docstring)."""
    import gradio as gr

    def on_prompt(audio, start):
        """New recording or start: show the cut and transcribe it; the slider spans the recording."""
        if audio is None:
            return None, "Record or upload a prompt (3 s of it are used).", gr.skip(), "", gr.skip()
        try:
            seconds = len(to_mono_float(audio)[0]) / int(audio[0])
            span = gr.Slider(maximum=max(0.1, round(seconds - 0.1, 1)))
            piece, info = service.cut_prompt(audio, start)
        except Exception as e:  # noqa: BLE001 - every error is shown in the page
            return None, "", gr.skip(), _error_text(e), gr.skip()
        try:
            transcript = service.transcribe(piece)
        except Exception as e:  # noqa: BLE001
            return (service.sample_rate, piece), info, "", _error_text(e) + " Type the transcript yourself.", span
        return (service.sample_rate, piece), info, transcript, "", span

    def on_synthesize(audio, start, prompt_text, text, top_k, top_p, temperature, seed, ras, max_retries, stream):
        """A generator: streamed chunks go to the live player as they come, then the whole wav to
        the result player (download) and the summary to the status line."""
        try:
            piece, _ = service.cut_prompt(audio, start)
            if not stream:
                path, note = service.synthesize(piece, prompt_text, text, top_k, top_p, temperature, seed, ras,
                                                max_retries)
                yield gr.skip(), str(path), note
                return
            yield None, None, "Synthesizing: the audio plays as it is made..."
            for event in service.stream(piece, prompt_text, text, top_k, top_p, temperature, seed, ras):
                if event[0] == "chunk":
                    yield wav_bytes(event[1], service.sample_rate), gr.skip(), gr.skip()
                else:
                    yield gr.skip(), str(event[1]), event[2]
        except Exception as e:  # noqa: BLE001
            yield gr.skip(), None, _error_text(e)

    with gr.Blocks(title="dmtts: zero-shot TTS") as app:
        gr.Markdown("# dmtts: zero-shot speech synthesis\n"
                    f"AR `{service.dirs['ar']}` · NAR `{service.dirs['nar']}` · codec `{service.dirs['codec']}`")
        with gr.Row():
            with gr.Column():
                prompt = gr.Audio(value=str(default_prompt) if default_prompt else None, sources=["upload", "microphone"],
                                  type="numpy", label="Prompt: record or upload the target voice", elem_id="prompt_audio",
                                  buttons=["download"])
                start = gr.Slider(0.0, 30.0, value=0.0, step=0.1, label="Prompt start (s); 3 s from here are used",
                                  elem_id="prompt_start")
                cut_info = gr.Markdown(elem_id="prompt_info")
                cut = gr.Audio(label="Prompt used (3 s)", interactive=False, type="numpy", elem_id="prompt_cut",
                               buttons=["download"])
                prompt_text = gr.Textbox(value=default_prompt_text or "", label="Prompt transcript (automatic; edit it if wrong)",
                                         elem_id="prompt_text")
            with gr.Column():
                text = gr.Textbox(lines=6, label="Text to speak (any length)", elem_id="text",
                                  placeholder="The old map was hidden in the wooden chest.")
                with gr.Accordion("Sampling options", open=False):
                    top_k = gr.Slider(1, 256, value=50, step=1, label="top-k")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
                    temperature = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="temperature (0 = greedy)")
                    seed = gr.Number(value=42, precision=0, label="seed")
                    ras = gr.Checkbox(value=False, label="repetition-aware sampling (VALL-E 2)")
                    retries = gr.Slider(0, 5, value=2, step=1, label="retries of a failed generation (not when streaming)")
                # Gradio encodes streamed audio with ffmpeg (AAC): without it, synthesis is not streamed
                can_stream = shutil.which("ffmpeg") is not None
                stream = gr.Checkbox(value=can_stream, interactive=can_stream, elem_id="stream",
                                     label="Stream: play the audio while it is being made" + (
                                         "" if can_stream else " (needs ffmpeg on PATH: apt-get install -y ffmpeg)"))
                button = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
                live = gr.Audio(label="Playing as it is made", streaming=True, autoplay=True, interactive=False,
                                elem_id="live")
                result = gr.Audio(label="Result", type="filepath", interactive=False, buttons=["download"],
                                  elem_id="result")
                status = gr.Markdown(elem_id="status")
        prompt.change(on_prompt, [prompt, start], [cut, cut_info, prompt_text, status, start])
        start.release(on_prompt, [prompt, start], [cut, cut_info, prompt_text, status, start])
        button.click(on_synthesize, [prompt, start, prompt_text, text, top_k, top_p, temperature, seed, ras, retries,
                                     stream], [live, result, status])
        if default_prompt:
            app.load(on_prompt, [prompt, start], [cut, cut_info, prompt_text, status, start])
    return app


def offline_theme():
    """Gradio's default look with system fonts: the page fetches nothing from the internet."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])


def serve(args) -> None:
    """``dmtts serve``: load the models, build the page, serve it until Ctrl-C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    from dmtts.utils import require_dir

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise DmttsError("dmtts serve needs Gradio: install it with "
                         "'.venv/bin/pip install -c constraints.txt -r requirements.txt' (or 'make venv')") from None

    defaults = default_model_dirs()
    dirs = {}
    for key in ("ar", "nar", "codec"):
        value = getattr(args, key)
        if value is None:
            if defaults is None:
                raise DmttsError(f"--{key} is required: the demo models ({PRETRAINED_DIR}) are not there; pass "
                                 "--ar, --nar and --codec exported model directories")
            value = defaults[key]
        dirs[key] = require_dir(value, f"--{key}", "pass an exported model directory")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    service = SynthesisService(dirs["ar"], dirs["nar"], dirs["codec"], device=device, asr=args.asr)
    prompt = prompt_text = None
    if defaults is not None and all(getattr(args, k) is None for k in ("ar", "nar", "codec")):
        prompt = PRETRAINED_DIR / "prompt.wav"
        prompt_text = (PRETRAINED_DIR / "prompt.txt").read_text().strip() if (PRETRAINED_DIR / "prompt.txt").is_file() else None
        prompt = prompt if prompt.is_file() else None
    app = build_app(service, prompt, prompt_text)
    logger.info("serving on http://%s:%d (Ctrl-C to stop); outputs in %s", args.host, args.port, service.out_dir)
    try:
        app.queue().launch(server_name=args.host, server_port=args.port, show_error=False, quiet=False,
                           theme=offline_theme(), ssr_mode=False, allowed_paths=[str(service.out_dir)],
                           footer_links=[])
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise DmttsError(f"cannot serve on {args.host}:{args.port} ({e}): pass another --port, or --host 127.0.0.1") from None


def _check_request(text: str, prompt_text: str, top_p: float) -> None:
    """One-line errors for an empty text or prompt transcript, or a top-p outside (0, 1]."""
    from dmtts.text.tts_input_norm import check_not_empty

    check_not_empty(text, "the text to synthesize")
    check_not_empty(prompt_text, "the prompt transcript")
    if not 0 < float(top_p) <= 1:
        raise DmttsError(f"top-p must be in (0, 1], got {top_p}")
