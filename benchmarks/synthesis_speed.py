#!/usr/bin/env python3
"""End-to-end synthesis speed: text in, audio out (AR + NAR + codec), whole-utterance and streamed.

For each speed option (``fp32``; ``fp16`` / ``bf16``: linear weights stored in that type;
``int8``: ``torch.ao`` dynamic int8 linear layers), in a fresh process (so that its peak RSS is
its own), with ``--threads`` intra-op threads, a 3 s prompt and sentences of 5, 15 and 40 words:

* whole-utterance synthesis (``Synthesizer.synthesize_results``) at batch 1 and batch 8 (8
  copies of the sentence): wall time and real-time factor (seconds of compute per second of
  audio), split into AR, NAR and codec; the time to first audio is the whole time;
* streamed synthesis (``dmtts.tts.streaming``, batch 1, default chunking): time to first audio
  and the RTF of the whole stream;
* peak RSS (``VmHWM``) after the batch-1 runs and after all runs.

Models: ``--size paper`` builds the paper-size AR and NAR (12 layers, d 1024, random weights)
and the paper codec preset; ``--size demo`` loads the shipped demo models
(``recipes/demo/pretrained``, the quality scale). Random weights never stop on their own and the
demo models stop early, so every sentence is made exactly ``--words-per-second`` (2.5 words/s,
i.e. 20 frames per word at 50 Hz) long: the AR's minimum and maximum lengths are set to it.
The figures are ratios to the audio duration and to the ``fp32`` row of the same run.

    python benchmarks/synthesis_speed.py --size paper --threads 2
    python benchmarks/synthesis_speed.py --size demo --options fp32,int8 --batches 1
    python benchmarks/synthesis_speed.py --quality --options fp32,fp16,bf16,int8   # effect on the output

``--quality``: see :func:`quality`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("Please call Stella and ask her to bring these things with her from the store. Six spoons of fresh snow "
         "peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob. We also need a small plastic "
         "snake and a big toy frog for the kids.").split()
PRETRAINED = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "pretrained"
PAPER = dict(n_layers=12, n_heads=16, d_model=1024, ffn_dim=4096)


def sentence(n_words: int) -> str:
    return " ".join(WORDS[:n_words]).rstrip(",.") + "."


def build_paper_models(root: Path) -> dict:
    """Random paper-size AR + NAR exported as training does, over a symbol table of the sentences."""
    import torch

    from dmtts.codec.config import model_config
    from dmtts.text.phonemizer import Phonemizer
    from dmtts.text.symbols import SymbolTable
    from dmtts.tts.config import TTSModelConfig, TTSTrainConfig
    from dmtts.tts.export import export_model
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.model import build_model

    torch.manual_seed(0)
    ccfg = model_config("paper")
    texts = [sentence(40), (PRETRAINED / "prompt.txt").read_text().strip()]
    SymbolTable.from_sequences(Phonemizer("en-us").phonemize_batch(texts)).to_file(root / "symbols.txt")
    text = TTSText("phonemes", root / "symbols.txt")
    mcfg = TTSModelConfig(**PAPER, codebook_size=ccfg.codebook_size, n_q=ccfg.n_q, text_vocab_size=text.vocab_size)
    for kind in ("ar", "nar"):
        export_model(build_model(kind, mcfg).eval(), kind, mcfg, text, TTSTrainConfig(), root / kind)
    return {"ar": root / "ar", "nar": root / "nar", "codec": "preset:paper"}


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    """One speed option in this process; prints one JSON line of results."""
    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(args.threads)
    from dmtts.codec.model import load_codec
    from dmtts.tts.streaming import StreamRecord, StreamSettings, playback_stalls, stream_sentence
    from dmtts.tts.synthesize import SynthesisItem, Synthesizer

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.option, torch.float32)
    codec = load_codec(args.codec).prepare_for_inference()
    synth = Synthesizer(args.ar, args.nar, codec, dtype=dtype, quantize="int8" if args.option == "int8" else "none",
                        max_retries=0)
    prompt = sf.read(PRETRAINED / "prompt.wav", dtype="float32")[0][:48000]
    prompt_text = (PRETRAINED / "prompt.txt").read_text().strip()
    parts = {"ar": 0.0, "nar": 0.0, "codec": 0.0}

    def timed(part, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            parts[part] += time.perf_counter() - t0
            return out
        return run

    synth.ar.generate, synth.nar.generate = timed("ar", synth.ar.generate), timed("nar", synth.nar.generate)
    synth.codec.decode = timed("codec", synth.codec.decode)

    def force_length(text: str, n_words: int) -> None:
        frames = n_words / args.words_per_second * synth.frame_rate
        ratio = frames / len(synth.text.text_symbols(text))
        synth.min_len_ratio = synth.max_len_ratio = ratio

    def whole(n_words: int, batch: int) -> dict:
        text = sentence(n_words)
        force_length(text, n_words)
        items = [SynthesisItem(text, prompt, prompt_text, f"b{i}") for i in range(batch)]
        for k in parts:
            parts[k] = 0.0
        t0 = time.perf_counter()
        wavs = [r.wav for r in synth.synthesize_results(items, torch.Generator().manual_seed(0))]
        wall = time.perf_counter() - t0
        audio = sum(len(w) for w in wavs) / synth.sample_rate
        return {"words": n_words, "batch": batch, "audio_s": audio, "wall_s": wall, "first_audio_s": wall,
                **{f"{k}_s": v for k, v in parts.items()}}

    def streamed(n_words: int) -> dict:
        text = sentence(n_words)
        force_length(text, n_words)
        item = SynthesisItem(text, prompt, prompt_text)
        record = StreamRecord()
        t0 = time.perf_counter()
        n = sum(len(c) for c in stream_sentence(synth, item, StreamSettings(), torch.Generator().manual_seed(0), record))
        wall = time.perf_counter() - t0
        return {"words": n_words, "batch": "1 stream", "audio_s": n / synth.sample_rate, "wall_s": wall,
                "first_audio_s": record.first_chunk_seconds, "chunks": len(record.chunks),
                "first_split": record.first_chunk_split, "first_ar_frames": record.chunks[0]["ar_frames"],
                "stalls_s": playback_stalls(record.chunks, synth.frame_rate),
                **{f"{k}_s": v for k, v in record.seconds.items()}}

    whole(5, 1)  # warm-up: first-call allocations, phonemizer start-up, the prompt's codes
    rows = []
    for n in args.words:
        rows.append(whole(n, 1))
        if not args.no_stream:
            rows.append(streamed(n))
    rss1 = peak_rss_mib()
    for batch in [b for b in args.batches if b != 1]:
        for n in args.words:
            rows.append(whole(n, batch))
    print(json.dumps({"option": args.option, "rows": rows, "rss_batch1_mib": rss1, "rss_all_mib": peak_rss_mib()}))


QUALITY_SENTENCES = [
    "The old map was hidden in the wooden chest.", "She walked to the market early in the morning.",
    "A cold wind blew across the empty field.", "The children laughed at the funny little dog.",
    "He opened the window and looked at the sea.", "We will meet again at the station tomorrow.",
    "The teacher wrote a long list on the board.", "My brother plays the piano every evening.",
    "The red boat drifted slowly down the river.", "Please close the door when you leave the room.",
]


def quality_jobs(args, models, sample_rate: int) -> list[tuple[str, "np.ndarray", str, str]]:
    """(target text, prompt audio, prompt transcript, name) per sentence: ``--pairs`` (the demo's
    held-out evaluation pairs, each with its own speaker's prompt crop, transcribed by the WER
    model when the pair has no transcript) or the shipped prompt with ``QUALITY_SENTENCES``."""
    import soundfile as sf

    if args.pairs:
        from lhotse import CutSet

        from dmtts.data.subsets import load_prompt_audio
        from dmtts.tts.synthesize import prepare_prompt, transcribe_prompt

        jobs = []
        for c in list(CutSet.from_file(args.pairs))[: args.n_sentences]:
            prompt = prepare_prompt(load_prompt_audio(c, sample_rate), sample_rate, 3.0, f"prompt of pair '{c.id}'")
            prompt_text = c.custom.get("prompt_text") or transcribe_prompt(models.asr, prompt, f"pair '{c.id}'")
            jobs.append((c.custom["target_text"], prompt, prompt_text, c.id))
        return jobs
    prompt = sf.read(PRETRAINED / "prompt.wav", dtype="float32")[0][:48000]
    prompt_text = (PRETRAINED / "prompt.txt").read_text().strip()
    return [(text, prompt, prompt_text, f"s{i}") for i, text in enumerate(QUALITY_SENTENCES[: args.n_sentences])]


def teacher_forced(synth, pairs: list) -> dict:
    """The models' own measure of an option's numeric effect, independent of sampling: the
    teacher-forced cross-entropy (nats per frame) and top-1 accuracy of the AR (level 1) and of
    the NAR (levels 2..n_q, the first half of each utterance as its prompt) on the ground-truth
    codes (this codec) and phonemes of the pairs' target utterances."""
    import torch

    sums = {m: {"nll": 0.0, "acc": 0.0, "frames": 0} for m in ("ar", "nar")}

    def add(model: str, stats: dict) -> None:  # frame-weighted, so that the means are per frame
        n = int(stats["frames"])
        sums[model]["nll"] += float(stats["loss"]) * n
        sums[model]["acc"] += float(stats["acc"]) * n
        sums[model]["frames"] += n

    with torch.inference_mode():
        for c in pairs:
            codes = synth._prompt_codes(c.load_audio()[0].astype("float32"))[None]  # [1, T, n_q]
            text, text_lens = synth.text.collate([synth.text.text_symbols(c.custom["target_text"])])
            T = torch.tensor([codes.shape[1]])
            add("ar", synth.ar(text, text_lens, codes[..., 0], T)[1])
            for level in range(2, synth.n_q + 1):
                add("nar", synth.nar(text, text_lens, codes, T, T // 2, torch.tensor([level]))[1])
    return {f"{m}_{k}": sums[m][k] / sums[m]["frames"] for m in sums for k in ("nll", "acc")}


def quality(args) -> None:
    """Effect of each speed option and of streaming on the output of the shipped demo models:
    per sentence (``quality_jobs``), one seeded synthesis (``--seed`` + index, no retries) with
    each option; the codes against fp32 (level 1 / all levels identical), then Whisper tiny.en
    WER against the text, speaker similarity (resemblyzer) to the sentence's prompt and, where
    the level-1 codes equal fp32's (streaming always) and the audio is at least 1 s long, STOI
    against the fp32 audio; with ``--pairs``, :func:`teacher_forced` per option."""
    import numpy as np
    import torch

    from dmtts.eval.metrics import EvalModels, corpus_rates, cosine, stoi_score, word_errors
    from dmtts.tts.streaming import StreamRecord, StreamSettings, stream_sentence
    from dmtts.tts.synthesize import SynthesisItem, Synthesizer

    torch.set_num_threads(args.threads)
    dirs = [PRETRAINED / k for k in ("ar", "nar", "codec")]
    models = EvalModels(asr="faster-whisper", sim="resemblyzer")
    jobs = None
    outputs = {}  # option -> list of (level1, codes, wav)
    forced = {}  # option -> teacher_forced(...)
    if args.pairs:
        from lhotse import CutSet

        forced_pairs = list(CutSet.from_file(args.pairs))[: args.n_sentences]
    for option in args.options.split(",") + ["stream"]:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(option, torch.float32)
        synth = Synthesizer(*dirs, dtype=dtype, quantize="int8" if option == "int8" else "none", max_retries=0)
        jobs = jobs or quality_jobs(args, models, synth.sample_rate)
        codes_seen = []
        synth.nar.generate = (lambda fn: lambda *a, **k: codes_seen.append(fn(*a, **k)[0]) or [codes_seen[-1]])(
            synth.nar.generate)
        rows = []
        t0 = time.perf_counter()
        for i, (text, prompt, prompt_text, name) in enumerate(jobs):
            item = SynthesisItem(text, prompt, prompt_text, name)
            gen = torch.Generator().manual_seed(args.seed + i)
            if option == "stream":
                record = StreamRecord()
                wav = np.concatenate(list(stream_sentence(synth, item, StreamSettings(), gen, record)))
                rows.append((record.level1, record.codes, wav))
            else:
                codes_seen.clear()
                wav = synth.synthesize([item], gen)[0]
                rows.append((codes_seen[-1][:, 0].cpu(), codes_seen[-1].cpu(), wav))
        outputs[option] = rows
        print(f"{option}: {time.perf_counter() - t0:.1f} s for {len(jobs)} sentences", flush=True)
        if args.pairs and option != "stream":
            forced[option] = teacher_forced(synth, forced_pairs)
    prompt_embs = models.sim.embed([prompt for _, prompt, _, _ in jobs])
    texts = [text for text, _, _, _ in jobs]
    ref = outputs["fp32"]
    print(f"\n{'pairs ' + args.pairs if args.pairs else 'the shipped prompt'}, {len(jobs)} sentences, seed {args.seed}")
    print("\n| option | level 1 identical | all codes identical | frames | WER % | SIM | STOI vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for option, rows in outputs.items():
        same1 = [len(a[0]) == len(b[0]) and torch.equal(a[0], b[0]) for a, b in zip(rows, ref)]
        same = sum(a[1].shape == b[1].shape and torch.equal(a[1], b[1]) for a, b in zip(rows, ref))
        frames = sum(len(r[0]) for r in rows)
        hyps = models.asr.transcribe([r[2] for r in rows])
        wer = corpus_rates([word_errors(t, h) for t, h in zip(texts, hyps)])[0]
        sim = float(np.mean([cosine(e, p) for e, p in zip(models.sim.embed([r[2] for r in rows]), prompt_embs)]))
        # pystoi needs ~0.4 s of frames and scores shorter signals 1e-5: outputs under 1 s are left out
        pairs = [(a[2], b[2]) for a, b, s in zip(rows, ref, same1) if s and min(len(a[2]), len(b[2])) >= 16000]
        stoi = f"{np.mean([stoi_score(r, x) for x, r in pairs]):.3f} ({len(pairs)})" if option != "fp32" and pairs else "-"
        print(f"| {option} | {sum(same1)}/{len(rows)} | {same}/{len(rows)} | {frames} | {wer:.1f} | {sim:.3f} | {stoi} |")
    if forced:
        print("\nTeacher-forced on the pairs' ground-truth codes (nats per frame; accuracy of the top code)\n")
        print("| option | AR NLL | AR accuracy | NAR NLL (levels 2-8) | NAR accuracy |")
        print("|---|---|---|---|---|")
        for option, f in forced.items():
            print(f"| {option} | {f['ar_nll']:.4f} | {f['ar_acc']:.4f} | {f['nar_nll']:.4f} | {f['nar_acc']:.4f} |")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["paper", "demo"], default="paper")
    p.add_argument("--options", default="fp32,fp16,int8", help="comma-separated: fp32, fp16, bf16, int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--words", type=int, nargs="+", default=[5, 15, 40])
    p.add_argument("--words-per-second", type=float, default=2.5)
    p.add_argument("--no-stream", action="store_true", help="skip the streamed runs")
    p.add_argument("--quality", action="store_true",
                   help="instead of speed: the effect of each option and of streaming on the demo models' output")
    p.add_argument("--n-sentences", type=int, default=10)
    p.add_argument("--pairs", help="--quality on these evaluation pairs (e.g. the demo's "
                                   "data/cuts/demo_tts_eval_pairs.jsonl.gz) instead of the shipped prompt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--option", help=argparse.SUPPRESS)
    p.add_argument("--ar", help=argparse.SUPPRESS)
    p.add_argument("--nar", help=argparse.SUPPRESS)
    p.add_argument("--codec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.quality:
        print(f"load average before: {load_average()}; {args.threads} threads; demo models", flush=True)
        quality(args)
        print(f"load average after: {load_average()}")
        return

    options = args.options.split(",")
    print(f"load average before: {load_average()}; {args.threads} threads; size {args.size}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_paper_models(Path(tmp)) if args.size == "paper" else \
            {k: PRETRAINED / k for k in ("ar", "nar", "codec")}
        results = {}
        for option in options:
            cmd = [sys.executable, __file__, "--worker", "--option", option, "--threads", str(args.threads),
                   "--ar", str(dirs["ar"]), "--nar", str(dirs["nar"]), "--codec", str(dirs["codec"]),
                   "--words", *map(str, args.words), "--batches", *map(str, args.batches),
                   "--words-per-second", str(args.words_per_second)] + (["--no-stream"] if args.no_stream else [])
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{option}: failed\n{out.stderr[-3000:]}", flush=True)
                continue
            results[option] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{option}: done in {time.perf_counter() - t0:.0f} s; load average {load_average()}", flush=True)
    print_table(results, args)
    print(f"load average after: {load_average()}")


def print_table(results: dict, args) -> None:
    ref = {(r["words"], str(r["batch"])): r for r in results.get("fp32", {}).get("rows", [])}
    print(f"\n| option | words | batch | audio (s) | RTF | AR | NAR | codec | first audio (s) | vs fp32 | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for option, res in results.items():
        for r in res["rows"]:
            rtf = r["wall_s"] / r["audio_s"]
            split = [r[f"{k}_s"] / r["audio_s"] for k in ("ar", "nar", "codec")]
            base = ref.get((r["words"], str(r["batch"])))
            speedup = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else "-"
            rss = res["rss_batch1_mib"] if str(r["batch"]).startswith("1") else res["rss_all_mib"]
            print(f"| {option} | {r['words']} | {r['batch']} | {r['audio_s']:.1f} | {rtf:.2f} | {split[0]:.2f} | "
                  f"{split[1]:.2f} | {split[2]:.2f} | {r['first_audio_s']:.2f} | {speedup} | {rss:.0f} |")
    streamed = [(option, r) for option, res in results.items() for r in res["rows"] if r.get("first_split")]
    if streamed:
        print("\nTime to first audio, streamed (seconds): where it goes")
        print("\n| option | words | first audio | prepare (text, prompt codes) | AR prefill | AR frames (n) | NAR | codec "
              "| stalls after it |")
        print("|---|---|---|---|---|---|---|---|---|")
        for option, r in streamed:
            f = r["first_split"]
            print(f"| {option} | {r['words']} | {r['first_audio_s']:.2f} | {f['prepare']:.2f} | {f['ar_prefill']:.2f} | "
                  f"{f['ar'] - f['ar_prefill']:.2f} ({r['first_ar_frames']}) | {f['nar']:.2f} | {f['codec']:.2f} | "
                  f"{r['stalls_s']:.2f} |")


if __name__ == "__main__":
    main()
