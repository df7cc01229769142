"""The ``dmtts synthesize`` entry points for one text (``--text``, optionally ``--stream``) and a
file of texts (``--text-file``): argument checks, the prompt and its transcript, the
:class:`~dmtts.tts.synthesize.Synthesizer` built from the flags. ``--pairs`` is
:mod:`dmtts.tts.synthesize_pairs`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from dmtts.errors import DmttsError
from dmtts.tts.robust import DecodeChecks
from dmtts.tts.synthesize import (
    Synthesizer,
    parse_asr_arg,
    prepare_prompt,
    synthesize_texts,
    transcribe_prompt,
)

logger = logging.getLogger(__name__)


def read_text_file(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-empty line of a UTF-8 text file."""
    from dmtts.utils import require_file

    require_file(path, "--text-file", "pass a UTF-8 text file with one text to synthesize per line")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DmttsError(f"--text-file '{path}' is not UTF-8 text ({e}): save it as UTF-8") from None
    items = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not items:
        raise DmttsError(f"--text-file '{path}' has no non-empty line: put one text to synthesize per line")
    return items


def _no_prompt_text_error(where: str) -> DmttsError:
    return DmttsError(
        f"{where} has no prompt transcript and --asr is none: pass --prompt-text \"...\" (the words spoken in "
        "the first 3 s of the prompt), or drop '--asr none' to transcribe it with the bundled Whisper tiny.en "
        "(--asr faster-whisper, the default) or another ASR (--asr BACKEND:DIR)"
    )


def _load_prompt(args, synth: Synthesizer) -> tuple[np.ndarray, str]:
    """The ``--prompt-audio`` cut to ``--prompt-seconds`` and its transcript (``--prompt-text``,
    else the ``--asr`` transcript of the cut prompt)."""
    from dmtts.audio import load_audio
    from dmtts.text.tts_input_norm import check_not_empty
    from dmtts.utils import require_file

    require_file(args.prompt_audio, "--prompt-audio", "pass a wav/flac file with at least 1 s of the target speaker")
    if args.prompt_text is not None:
        check_not_empty(args.prompt_text, "--prompt-text")
    wav, _ = load_audio(args.prompt_audio, synth.sample_rate)
    prompt = prepare_prompt(wav, synth.sample_rate, args.prompt_seconds, f"--prompt-audio '{args.prompt_audio}'")
    prompt_text = args.prompt_text
    if prompt_text is None:
        asr = parse_asr_arg(args.asr)
        if asr is None:
            raise _no_prompt_text_error(f"--prompt-audio '{args.prompt_audio}'")
        logger.info("--prompt-text not given: transcribing the prompt with %s (--asr)", asr.name)
        prompt_text = transcribe_prompt(asr, prompt, f"--prompt-audio '{args.prompt_audio}'")
    return prompt, prompt_text


def _log_retries(records: list[dict]) -> None:
    retries = sum(r["retries"] for r in records)
    failed = sum(r["failures"] for r in records)
    n = sum(len(r["sentences"]) for r in records)
    if retries or failed:
        logger.info("%d of %d sentences needed retries (%d retries in all); %d still failed every check", 
                    sum(any(a["failure"] for a in s["attempts"]) for r in records for s in r["sentences"]), n,
                    retries, failed)


def synthesize_one(args) -> Path:
    """``dmtts synthesize --text ... --prompt-audio ... --out ...`` (any length: long text is
    split into sentences and joined)."""
    from dmtts.text.tts_input_norm import check_not_empty

    check_not_empty(args.text, "--text")
    synth = _make_synth(args)
    prompt, prompt_text = _load_prompt(args, synth)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    records = synthesize_texts(synth, [args.text], prompt, prompt_text, [Path(args.out)], gen,
                               batch_size=args.batch_size, pause=args.sentence_pause, max_words=args.max_words,
                               progress=len(args.text.split()) > args.max_words and not getattr(args, "no_progress", False))
    _log_retries(records)
    logger.info("wrote %s (%.2f s, %d sentences)", args.out, records[0]["duration"], len(records[0]["sentences"]))
    return Path(args.out)


def synthesize_text_file(args) -> Path:
    """``dmtts synthesize --text-file lines.txt --prompt-audio p.wav --output-dir DIR``: one wav per
    non-empty line (``line00001.wav`` for line 1, ...) and ``DIR/manifest.jsonl``."""
    from dmtts.utils import atomic_write_text

    lines = read_text_file(args.text_file)
    synth = _make_synth(args)
    prompt, prompt_text = _load_prompt(args, synth)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    paths = [out_dir / f"line{n:05d}.wav" for n, _ in lines]
    records = synthesize_texts(synth, [text for _, text in lines], prompt, prompt_text, paths, gen,
                               batch_size=args.batch_size, pause=args.sentence_pause, max_words=args.max_words)
    _log_retries(records)
    for (n, _), rec in zip(lines, records):
        rec.update(id=f"line{n:05d}", line=n, path=str(Path(rec["path"]).resolve()),
                   prompt_audio=str(Path(args.prompt_audio).resolve()), prompt_text=prompt_text)
    manifest = out_dir / "manifest.jsonl"
    atomic_write_text(manifest, "".join(json.dumps(r) + "\n" for r in records))
    logger.info("wrote %d wavs and %s", len(records), manifest)
    return manifest


def _make_synth(args) -> Synthesizer:
    from dmtts.utils import require_dir

    for flag, path in (("--ar", args.ar), ("--nar", args.nar)):
        require_dir(path, flag, "pass an exported TTS model directory (exp/<run>/export)")
    if not str(args.codec).startswith("preset:"):
        require_dir(args.codec, "--codec", "pass an exported codec directory (dmtts codec export)")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--max-words", args.max_words, 1),
                             ("--sentence-pause", args.sentence_pause, 0), ("--max-loop-seconds", args.max_loop_seconds, 0)):
        if value < low or (flag == "--max-loop-seconds" and value == 0):
            raise DmttsError(f"{flag} {value}: must be {'> 0' if flag == '--max-loop-seconds' else f'>= {low}'}")
    lo, hi = args.duration_range
    if not 0 < lo < 1 < hi:
        raise DmttsError(f"--duration-range {lo} {hi}: give LOW < 1 < HIGH, e.g. 0.5 2.0")
    checks = DecodeChecks(max_loop_seconds=args.max_loop_seconds, min_duration_ratio=lo, max_duration_ratio=hi)
    return Synthesizer(
        args.ar, args.nar, args.codec, device=device, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, max_len_ratio=args.max_len_ratio,
        dtype=getattr(torch, args.dtype), ras=args.ras, ras_window=args.ras_window,
        ras_threshold=args.ras_threshold, max_retries=args.max_retries, checks=checks,
        quantize=getattr(args, "quantize", "none"), nar_decoding=getattr(args, "nar_decoding", "argmax"),
    )


def stream_settings(args):
    """The ``--stream-*`` flags as checked :class:`~dmtts.tts.streaming.StreamSettings`."""
    from dmtts.tts.streaming import StreamSettings

    return StreamSettings(args.stream_first_chunk_frames, args.stream_chunk_frames, args.stream_lookahead_frames,
                          args.stream_context_frames).check()


def synthesize_stream(args) -> None:
    """``dmtts synthesize --stream --text ... --out OUT.wav|-``: the audio is written chunk by
    chunk while the AR is still generating (``dmtts.tts.streaming``). A file is renamed into
    place when complete; ``--out -`` writes a WAV stream to stdout (e.g. ``| aplay``)."""
    import time

    from dmtts.text.tts_input_norm import check_not_empty
    from dmtts.tts.streaming import StdoutWav, stream_text
    from dmtts.tts.synthesize import _StreamedWav

    if getattr(args, "nar_decoding", "argmax") != "argmax":
        raise DmttsError("--nar-decoding expected does not stream (a chunk is decoded from codes): drop --stream, "
                         "or use --nar-decoding argmax")
    settings = stream_settings(args)
    check_not_empty(args.text, "--text")
    synth = _make_synth(args)
    prompt, prompt_text = _load_prompt(args, synth)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    to_stdout = args.out == "-"
    sink = StdoutWav(synth.sample_rate) if to_stdout else _StreamedWav(Path(args.out), synth.sample_rate)
    records: list = []
    started, first, n_chunks, ok = time.perf_counter(), None, 0, False
    try:
        for chunk in stream_text(synth, args.text, prompt, prompt_text, settings, gen, args.sentence_pause,
                                 args.max_words, records, "stdout" if to_stdout else Path(args.out).stem):
            sink.write(chunk)
            sink.flush()
            n_chunks += 1
            if first is None:
                first = time.perf_counter() - started
        ok = True
    finally:
        sink.close(ok)
    failed = sum(r.check["failure"] is not None for _, r in records)
    logger.info("streamed %s: %.2f s of audio in %d chunks, the first after %.2f s; %d sentence(s)%s",
                "to stdout" if to_stdout else args.out, sink.frames / synth.sample_rate, n_chunks, first or 0.0,
                len(records), f", {failed} failed a check (streamed sentences are not retried)" if failed else "")
