"""``dmtts synthesize --pairs``: evaluation pairs (target text + prompt crop) synthesized in
batches, sharded under ``torchrun`` and resumable (committed in units; rank 0 merges)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from dmtts.errors import DmttsError
from dmtts.tts.synthesize import SynthesisItem, parse_asr_arg, prepare_prompt, transcribe_prompt
from dmtts.tts.synthesize_cli import _make_synth, _no_prompt_text_error

logger = logging.getLogger(__name__)


def _recording_id(rec) -> str | None:
    return rec.get("id") if isinstance(rec, dict) else getattr(rec, "id", None)


PAIRS_UNIT = 32  # pairs per commit unit: a hard kill loses at most this many
BLOCK_SEED_STRIDE = 1000  # seeds of consecutive batches of pairs; retries use the seeds in between


def _check_pairs(path: str, asr_spec: str | None, prompt_seconds: float = 0.0) -> int:
    """Lazy pass over the pair manifest: every cut is a pair; count those without a prompt
    transcript, which need an ASR (an error with ``--asr none``). A pair's transcript covers its
    whole crop, so ``prompt_seconds`` must not cut that crop shorter (an error)."""
    from lhotse import load_manifest_lazy

    n = missing = 0
    first_missing = None
    for c in load_manifest_lazy(path):
        n += 1
        if not c.custom or "target_text" not in c.custom or "prompt_recording" not in c.custom:
            raise DmttsError(f"--pairs '{path}': cut '{c.id}' has no target_text/prompt_recording: it is not a TTS "
                             "evaluation pair manifest (make one with 'dmtts subset librispeech-tts-eval|vctk-tts-eval')")
        if not c.custom.get("prompt_text"):
            missing += 1
            first_missing = first_missing or c.id
        elif prompt_seconds and float(c.custom.get("prompt_duration", 0.0)) > prompt_seconds + 1e-3:
            dur = float(c.custom["prompt_duration"])
            raise DmttsError(
                f"--pairs '{path}': pair '{c.id}' has a {dur:g} s prompt and a transcript of all of it, but "
                f"--prompt-seconds {prompt_seconds:g} would cut the audio: the AR would be given words the prompt "
                f"does not speak. Pass --prompt-seconds {dur:g} (or 0), or make the pairs with --prompt-duration "
                f"{prompt_seconds:g}")
    if n == 0:
        raise DmttsError(f"--pairs '{path}' holds no pairs")
    if missing and not asr_spec:
        raise _no_prompt_text_error(f"pair '{first_missing}' (and {missing - 1} more) in '{path}'")
    return missing


def synthesize_pairs(args) -> Path:
    """``dmtts synthesize --pairs PAIRS --output-dir DIR``: one wav per pair (and repeat) + manifest.

    Sharded under torchrun (``dmtts.data.sharding``): the pairs are cut into blocks of one batch
    (``--batch-size // --repeats`` consecutive pairs), block ``b`` goes to rank ``b % world_size``
    and samples from seed ``--seed + 1000 b``, so every world size writes the same audio. Each rank
    commits its finished pairs in units under ``DIR/progress/``; rank 0 merges them into
    ``DIR/manifest.jsonl`` in the pair order. A rerun (any world size) skips committed pairs.
    """
    from tqdm import tqdm

    from dmtts.audio import save_audio
    from dmtts.data.sharding import ShardedJob, shard_context, sigterm_as_interrupt
    from dmtts.data.subsets import load_prompt_audio
    from dmtts.utils import atomic_path, require_file

    require_file(args.pairs, "--pairs", "make it with 'dmtts subset librispeech-tts-eval' or 'dmtts subset vctk-tts-eval'")
    if args.repeats < 1:
        raise DmttsError("--repeats must be >= 1")
    asr_spec = None if (args.asr or "none") == "none" else args.asr
    missing = _check_pairs(args.pairs, asr_spec, args.prompt_seconds)
    ctx = shard_context(args.device)
    args.device = ctx.device
    synth = _make_synth(args)
    out_dir = Path(args.output_dir)
    settings = {k: getattr(args, k) for k in ("repeats", "seed", "top_k", "top_p", "temperature", "max_len_ratio",
                                              "prompt_seconds", "dtype", "ras", "ras_window", "ras_threshold",
                                              "max_retries")}
    settings.update({k: str(Path(getattr(args, k)).resolve()) for k in ("ar", "nar", "codec")}, checks=synth.checks.to_dict())
    # one batch = one block of consecutive pairs, sampled from a seed of its own: every world size
    # makes the same batches with the same seeds, so the audio does not depend on the sharding
    pairs_per_batch = max(1, args.batch_size // args.repeats)
    job = ShardedJob(args.pairs, work_dir=out_dir / "progress", ctx=ctx, settings=settings, overwrite=args.overwrite,
                     input_flag="--pairs", block_size=pairs_per_batch)
    asr = None
    if missing and ctx.is_main:
        logger.info("%d pairs have no prompt transcript: transcribing their prompts with --asr %s "
                    "(--asr none demands transcripts instead)", missing, asr_spec)
    if job.num_done:
        logger.info("%d of %d pairs already synthesized (in %s), skipped", job.num_done, job.num_items, job.work_dir)
    torch.manual_seed(args.seed)

    def synthesize_block(block, unit):
        pending = []
        for index, c in block:
            prompt = prepare_prompt(load_prompt_audio(c, synth.sample_rate), synth.sample_rate, args.prompt_seconds,
                                    f"prompt of pair '{c.id}'")
            prompt_text = c.custom.get("prompt_text")
            if not prompt_text:
                nonlocal asr
                if asr is None:
                    asr = parse_asr_arg(asr_spec)
                prompt_text = transcribe_prompt(asr, prompt, f"the prompt of pair '{c.id}'")
            outs = [(SynthesisItem(c.custom["target_text"], prompt, prompt_text,
                                   f"{c.id}_rep{rep}" if args.repeats > 1 else c.id), rep) for rep in range(args.repeats)]
            pending.append((index, c, outs))
        items = [item for _, _, outs in pending for item, _ in outs]
        # block b samples from --seed + BLOCK_SEED_STRIDE * b; its retries from the following seeds
        gen = torch.Generator().manual_seed(args.seed + BLOCK_SEED_STRIDE * (block[0][0] // pairs_per_batch))
        results = iter(synth.synthesize_results(items, gen))
        for index, c, outs in pending:
            records = []
            # the prompt crop, kept to listen to next to the outputs (report.html plays it)
            prompt_path = out_dir / "prompts" / f"{c.id}.wav"
            save_audio(prompt_path, outs[0][0].prompt_wav, synth.sample_rate)
            for item, rep in outs:
                res = next(results)
                path = out_dir / f"{item.name}.wav"
                save_audio(path, res.wav, synth.sample_rate)
                records.append({
                    "id": item.name, "cut_id": c.id, "repeat": rep, "path": str(path.resolve()),
                    "duration": round(len(res.wav) / synth.sample_rate, 3),
                    "speaker": c.supervisions[0].speaker if c.supervisions else None,
                    "target_text": item.text, "prompt_text": item.prompt_text,
                    "prompt_text_source": "pairs" if c.custom.get("prompt_text") else "asr",
                    "prompt_cut_id": c.custom.get("prompt_cut_id"),
                    "prompt_recording_id": _recording_id(c.custom["prompt_recording"]),
                    "prompt_offset": c.custom.get("prompt_offset"), "prompt_path": str(prompt_path.resolve()),
                    "prompt_duration": round(len(item.prompt_wav) / synth.sample_rate, 3),
                    "failure": res.failure, "retries": len(res.attempts) - 1, "attempts": res.attempts,
                })
            unit.add(index, c.id, {"outputs": records})
        return len(items)

    out_dir.mkdir(parents=True, exist_ok=True)
    unit = job.new_unit()
    bar = tqdm(total=job.num_todo * args.repeats, desc=f"synthesize (rank {ctx.rank})" if ctx.is_distributed else "synthesize",
               unit="utt", disable=getattr(args, "no_progress", False))
    try:
        with sigterm_as_interrupt():
            for block in job.todo_blocks():
                bar.update(synthesize_block(block, unit))
                if len(unit) >= PAIRS_UNIT:
                    job.commit(unit)
                    unit = job.new_unit()
    finally:
        bar.close()
        job.commit(unit)  # finished pairs survive Ctrl-C, kill and errors
    job.finish()
    manifest = out_dir / "manifest.jsonl"
    if ctx.is_main:
        n = retried = failed = 0
        with atomic_path(manifest) as tmp, open(tmp, "w") as f:
            for _, _, record in job.merged():
                for r in record["outputs"]:
                    f.write(json.dumps(r) + "\n")
                    n += 1
                    retried += r["retries"] > 0
                    failed += r["failure"] is not None
        logger.info("wrote %d wavs and %s (%d needed retries, %d failed every attempt)", n, manifest, retried, failed)
    ctx.close()
    return manifest
