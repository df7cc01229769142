"""Zero-shot TTS benchmark (paper §4, Table 2; VALL-E protocol; DESIGN §7).

PAIRS is a lhotse CutSet (``dmtts subset librispeech-tts-eval`` / ``vctk-tts-eval``): every cut is
the TARGET utterance, with custom fields ``prompt_cut_id``, ``prompt_start``, ``prompt_duration``,
``prompt_recording`` (a lhotse Recording as a dict), ``prompt_text`` and ``target_text``, and
``prompt_offset`` (the crop start within the recording; ``prompt_start`` is used when absent).

For each cut the synthesis directory holds ``<cut_id>_rep{i}.wav`` (repetitions) and/or
``<cut_id>.wav``. Each file is scored — WER/WIL of its ASR transcript against ``target_text``,
speaker similarity to the prompt (SIM-o: the 3 s crop the synthesizer was given; SIM-r: that
crop re-synthesized through the codec, encode + decode with all levels, which leaves out what the
codec itself loses of the voice), MOS proxy — and the repetitions of one cut are averaged into
one row (VALL-E: 3 repetitions, average). A ``ground_truth`` row scores the target utterance's
own recording the same way (ASR floor, and the similarity of two real utterances of the
speaker), when the cuts' audio is readable.

Outputs: ``scores_<name>.csv`` (columns stoi/pesq/visqol empty: there is no aligned reference),
``scores_ground_truth.csv``, ``transcripts_<name>.tsv``, ``summary.{csv,md}``, ``models.json``,
``trained_models.json`` (the steps the AR, NAR and codec behind the syntheses trained, when
their config.json says; :mod:`dmtts.eval.trained_models`) and ``score_cache/`` (per-file scores,
:mod:`dmtts.eval.cache`: a rerun scores only what is missing). Under ``torchrun`` the pairs are
read lazily in units of ``unit_size``; unit ``j`` is scored by rank ``j % world_size``, and rank 0
merges the cached scores in the original order.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from dmtts.errors import DmttsError
from dmtts.eval.cache import CACHE_DIRNAME, ScoreCache, cut_identity, file_identity, module_identity, record_key
from dmtts.eval.eval_cuts import iter_cuts, iter_units
from dmtts.eval.metrics import EvalModels, WordErrors, corpus_rates, cosine, word_errors
from dmtts.eval.scores import (GROUND_TRUTH, SummaryRow, nanmean, summary_columns, wer_note, write_scores_csv,
                               write_summary, write_transcripts)
from dmtts.eval.trained_models import synthesis_models, trained_models, training_notes, write_trained_models

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
TTS_METRICS = ("wer", "wil", "sim", "sim_r", "mos_proxy")
PAIR_FIELDS = ("prompt_start", "prompt_duration", "prompt_recording")
UNIT_SIZE = 16  # pairs per scoring unit (shard granule, one cache file per system)


@dataclass
class Pair:
    cut_id: str
    target_text: str
    prompt: np.ndarray  # float32 [N] 16 kHz: the prompt crop
    target_cut: object  # the lhotse cut (for the ground-truth row)


def check_pair(cut, pairs_path) -> str:
    """The target text of a pair cut; a clear error when the cut is not a TTS pair."""
    custom = cut.custom or {}
    missing = [f for f in PAIR_FIELDS if f not in custom]
    if missing:
        raise DmttsError(f"cut '{cut.id}' in '{pairs_path}' lacks the custom field(s) {', '.join(missing)}: "
                         "PAIRS must come from `dmtts subset librispeech-tts-eval|vctk-tts-eval`")
    text = custom.get("target_text") or (cut.supervisions[0].text if cut.supervisions else None)
    if not text:
        raise DmttsError(f"cut '{cut.id}' in '{pairs_path}' has no target_text")
    return text


def load_pair(cut, pairs_path) -> Pair:
    from dmtts.data.subsets import load_prompt_audio

    text = check_pair(cut, pairs_path)
    prompt = load_prompt_audio(cut, SAMPLE_RATE)
    if prompt.size == 0:
        raise DmttsError(f"the prompt of cut '{cut.id}' is empty")
    return Pair(cut.id, text, prompt, cut)


def load_pairs(pairs_path: str | Path, limit: int | None = None) -> list[Pair]:
    return [load_pair(cut, pairs_path) for _, cut in iter_cuts(pairs_path, limit, "--pairs")]


def find_synth_files(synth_dir: Path, cut_id: str) -> list[Path]:
    """``<cut_id>_rep{i}.wav`` sorted by i, then ``<cut_id>.wav`` if present."""
    reps = []
    pattern = re.compile(re.escape(cut_id) + r"_rep(\d+)\.wav$")
    for p in synth_dir.glob(f"{glob_escape(cut_id)}_rep*.wav"):
        m = pattern.match(p.name)
        if m:
            reps.append((int(m.group(1)), p))
    files = [p for _, p in sorted(reps)]
    single = synth_dir / f"{cut_id}.wav"
    if single.is_file():
        files.append(single)
    return files


def glob_escape(s: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", s)


class PromptResynthesizer:
    """The prompt crop through the codec: ``decode(encode(prompt))`` with all levels, one prompt
    at a time (no padding), in ``torch.inference_mode`` (for SIM-r)."""

    def __init__(self, codec, device: str = "cpu") -> None:
        if isinstance(codec, (str, Path)):
            from dmtts.codec.model import load_codec

            codec = load_codec(codec, device)
        self.codec = codec.eval()
        self.device = device
        self.identity = module_identity(self.codec)
        self.n_q = int(self.codec.n_q)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(wav, dtype=np.float32).reshape(1, 1, -1)).to(self.device)
            y = self.codec.decode(self.codec.encode(x, self.n_q, sample_rate=SAMPLE_RATE), length=x.shape[-1])
        out = y.reshape(-1).float().cpu().numpy()
        if len(out) < len(wav):
            out = np.pad(out, (0, len(wav) - len(out)))
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def evaluate_tts(synth_dir: str | Path, pairs: str | Path, out_dir: str | Path, models: EvalModels | None = None,
                 metrics: Sequence[str] = TTS_METRICS, name: str = "dmcodec_tts", ground_truth: bool = True,
                 limit: int | None = None, device: str = "cpu", codec=None, ctx=None, rescore: bool = False,
                 unit_size: int = UNIT_SIZE) -> dict | None:
    """Score the syntheses; returns ``{"summary_md", "summary_csv", "scores"}`` on rank 0, else None.

    ``codec``: an exported codec dir or a loaded :class:`~dmtts.codec.model.DMCodec`, needed for
    ``sim_r`` (SIM-r). ``ctx``: a :class:`dmtts.data.sharding.ShardContext` (default one process).
    """
    from dmtts.data.sharding import ShardContext

    ctx = ctx or ShardContext(device=device)
    synth_dir, out_dir = Path(synth_dir), Path(out_dir)
    metrics = [m for m in TTS_METRICS if m in metrics]
    if not synth_dir.is_dir():
        raise DmttsError(f"synthesis dir '{synth_dir}' does not exist: pass --synth-dir with the output of "
                         "`dmtts tts synthesize` (<cut_id>_rep{i}.wav or <cut_id>.wav files)")
    if name == GROUND_TRUTH:
        raise DmttsError(f"--name {GROUND_TRUTH} is reserved")
    if "sim_r" in metrics and codec is None:
        raise DmttsError("--metrics sim_r (SIM-r, similarity to the prompt re-synthesized through the codec) needs "
                         "--codec DIR: the exported codec the TTS model was trained with")
    models = models or EvalModels(device=device)
    resynth = PromptResynthesizer(codec, device) if "sim_r" in metrics else None
    n_pairs, n_with, first_id = 0, 0, None
    for _, cut in iter_cuts(pairs, limit, "--pairs"):  # lazily: check every pair before any work
        check_pair(cut, pairs)
        n_pairs += 1
        first_id = first_id or cut.id
        n_with += bool(find_synth_files(synth_dir, cut.id))
    if n_with == 0:
        raise DmttsError(f"'{synth_dir}' holds no synthesis for any of the {n_pairs} pairs (expected e.g. "
                         f"{synth_dir / (first_id + '_rep0.wav')} or {first_id}.wav)")
    models.load_for(metrics)
    cache = ScoreCache(out_dir / CACHE_DIRNAME, read=not rescore)
    context = _TtsScoring(models, metrics, cache, resynth, synth_dir, name, pairs)
    gt_ok = ground_truth
    for unit_index, items in tqdm(iter_units(pairs, limit, unit_size, "--pairs"), desc=f"score {name}",
                                  unit="unit", disable=not ctx.is_main):
        if not ctx.owns(unit_index):
            continue
        context.score_unit(unit_index, items, ground_truth=gt_ok)
        gt_ok = gt_ok and not context.gt_failed
    ctx.barrier()
    if not ctx.is_main:
        return None
    cache.reload()
    context.trained = trained_models(synthesis_models(synth_dir, codec if isinstance(codec, (str, Path)) else None))
    return context.merge(out_dir, limit, unit_size, ground_truth, n_pairs)


class _TtsScoring:
    """Scoring of the units of one rank, and the merge on rank 0."""

    def __init__(self, models: EvalModels, metrics: list[str], cache: ScoreCache, resynth, synth_dir: Path,
                 name: str, pairs_path) -> None:
        self.models, self.metrics, self.cache, self.resynth = models, metrics, cache, resynth
        self.synth_dir, self.name, self.pairs_path = synth_dir, name, pairs_path
        self.cached = (["asr"] if ("wer" in metrics or "wil" in metrics) else []) + \
                      [m for m in metrics if m not in ("wer", "wil")]
        self.gt_failed = False
        self.trained: list[dict] = []  # the models behind the syntheses that say how they trained

    def key(self, system: str, metric: str, pair_id: str, file_id: str) -> str:
        identity = [self.models.identity(metric), system, pair_id, file_id]
        if metric == "sim_r":
            identity.append(f"codec|{self.resynth.identity}|nq{self.resynth.n_q}|{self.resynth.device}")
        return record_key(metric, *identity)

    def score_unit(self, unit_index: int, items, ground_truth: bool) -> None:
        from dmtts.audio import load_audio

        pairs: dict[str, Pair] = {}
        prompt_emb: dict[tuple[str, str], np.ndarray] = {}  # shared by the unit's systems

        def prompt_embedding(pair: Pair, which: str) -> np.ndarray:
            if (pair.cut_id, which) not in prompt_emb:
                audio = pair.prompt if which == "sim" else self.resynth(pair.prompt)
                prompt_emb[(pair.cut_id, which)] = self.models.sim.embed([audio])[0]
            return prompt_emb[(pair.cut_id, which)]

        for system in ([GROUND_TRUTH] if ground_truth else []) + [self.name]:
            wanted: dict[str, tuple[object, object, list[str], dict[str, str]]] = {}
            for _, cut in items:
                ident = cut_identity(cut)
                if system == GROUND_TRUTH:
                    files = [(cut.id, None, "")]
                else:
                    files = [(p.stem, p, file_identity(p)) for p in find_synth_files(self.synth_dir, cut.id)]
                for utt_key, path, file_id in files:
                    keys = {m: self.key(system, m, ident, file_id) for m in self.cached}
                    todo = [m for m in self.cached if not self.cache.has(system, utt_key, keys[m])]
                    if todo:
                        wanted[utt_key] = (cut, path, todo, keys)
            if not wanted:
                continue
            wavs: dict[str, np.ndarray] = {}
            for utt_key, (cut, path, _, _) in wanted.items():
                if cut.id not in pairs:
                    pairs[cut.id] = load_pair(cut, self.pairs_path)
                if path is not None:
                    wavs[utt_key] = load_audio(path, SAMPLE_RATE)[0]
                    continue
                try:  # the ground truth: the target utterance's own recording
                    target = cut.resample(SAMPLE_RATE) if cut.sampling_rate != SAMPLE_RATE else cut
                    wavs[utt_key] = np.asarray(target.load_audio(), dtype=np.float32).mean(axis=0)
                except Exception as e:  # e.g. the target recordings are not on this machine
                    logger.warning("ground-truth row skipped: cannot load target audio (%s)", e)
                    self.gt_failed = True
                    break
            if system == GROUND_TRUTH and self.gt_failed:
                continue
            records = []
            asr_ids = [u for u, w in wanted.items() if "asr" in w[2]]
            hyps = dict(zip(asr_ids, self.models.asr.transcribe([wavs[u] for u in asr_ids]))) if asr_ids else {}
            for utt_key, (cut, _, todo, keys) in wanted.items():
                pair, wav = pairs[cut.id], wavs[utt_key]
                emb = None
                for m in todo:
                    if m == "asr":
                        value = hyps[utt_key]
                    elif m in ("sim", "sim_r"):
                        emb = self.models.sim.embed([wav])[0] if emb is None else emb
                        value = cosine(prompt_embedding(pair, m), emb)
                    elif m == "mos_proxy":
                        value = self.models.mos(wav)
                    else:
                        raise ValueError(m)
                    records.append((utt_key, keys[m], value))
            self.cache.put(system, unit_index, records)

    def merge(self, out_dir: Path, limit, unit_size, ground_truth: bool, n_pairs: int) -> dict:
        summary: list[SummaryRow] = []
        result_files = {}
        for system in ([GROUND_TRUTH] if ground_truth else []) + [self.name]:
            rows, errors, transcripts, n_files = [], [], [], []
            complete = True
            for _, cut in iter_cuts(self.pairs_path, limit, "--pairs"):
                ident = cut_identity(cut)
                text = check_pair(cut, self.pairs_path)
                if system == GROUND_TRUTH:
                    files = [(cut.id, "")]
                else:
                    files = [(p.stem, file_identity(p)) for p in find_synth_files(self.synth_dir, cut.id)]
                if not files:
                    continue
                per: dict[str, list[float]] = defaultdict(list)
                errs: list[WordErrors] = []
                for utt_key, file_id in files:
                    for m in self.cached:
                        key = self.key(system, m, ident, file_id)
                        if not self.cache.has(system, utt_key, key):
                            if system == GROUND_TRUTH:
                                complete = False
                                break
                            raise DmttsError(f"no {m} score of '{utt_key}' in {self.cache.root} (a rank stopped "
                                             "early, or a file changed during the run): rerun the same command; "
                                             "it scores only what is missing")
                        value = self.cache.get(system, utt_key, key)
                        if m == "asr":
                            e = word_errors(text, value, self.models.text_norm)
                            errs.append(e)
                            per["wer"].append(e.wer)
                            per["wil"].append(e.wil)
                            transcripts.append((utt_key, text, value))
                        else:
                            per[m].append(math.nan if value is None else float(value))
                    if not complete:
                        break
                if not complete:
                    break
                row = {"utt_id": cut.id}
                row.update({m: nanmean(v) for m, v in per.items() if m in self.metrics})
                rows.append(row)
                n_files.append(len(files))
                if errs:  # one utterance weighs the same however many repetitions it has
                    k = len(errs)
                    errors.append(WordErrors(sum(e.hits for e in errs) / k, sum(e.substitutions for e in errs) / k,
                                             sum(e.deletions for e in errs) / k, sum(e.insertions for e in errs) / k))
            if not complete:
                logger.warning("ground-truth row skipped: some target recordings could not be scored")
                continue
            missing = n_pairs - len(rows)
            if system != GROUND_TRUTH and missing:
                logger.warning("%d of %d pairs have no synthesis in %s (skipped)", missing, n_pairs, self.synth_dir)
            values = {m: nanmean([r.get(m, math.nan) for r in rows]) for m in self.metrics if m not in ("wer", "wil")}
            if errors:
                wer, wil = corpus_rates(errors)
                values.update({k: v for k, v in (("wer", wer), ("wil", wil)) if k in self.metrics})
                if "wer" in self.metrics:
                    values["wer_utt"] = nanmean([r.get("wer", math.nan) for r in rows])
            result_files[system] = write_scores_csv(out_dir / f"scores_{system}.csv", rows)
            if transcripts:
                write_transcripts(out_dir / f"transcripts_{system}.tsv", transcripts)
            reps = "1" if system == GROUND_TRUTH else (
                f"{min(n_files)}" if min(n_files) == max(n_files) else f"{min(n_files)}-{max(n_files)}")
            summary.append(SummaryRow(system, len(rows), values, {"reps": reps}))

        notes = []
        if "wer" in self.metrics or "wil" in self.metrics:
            notes.append(wer_note(self.models, "its repetitions averaged") +
                         " The corpus-level rates pool each utterance's repetition-averaged error counts.")
        notes.append("SIM-o: cosine between the speaker embedding of each synthesis and of the 3 s prompt crop; "
                     "SIM-r: the same against the prompt crop re-synthesized through the codec (encode + decode, "
                     "all levels)" + ("" if "sim_r" in self.metrics else " (not computed: pass --codec DIR)") +
                     ". Per-utterance scores average the repetitions (VALL-E protocol). `ground_truth` scores "
                     "the real target recording.")
        notes += training_notes(self.trained)
        write_trained_models(out_dir, self.trained)
        described = self.models.describe(self.metrics)
        if "sim_r" in described:
            described["sim_r"] += f" (codec weights {self.resynth.identity[:12]}, {self.resynth.n_q} levels)"
        n_rows = next((r.n for r in summary if r.system == self.name), 0)
        csv_path, md_path = write_summary(out_dir, summary, summary_columns(self.metrics), described,
                                          f"Zero-shot TTS ({n_rows} utterances, {Path(self.pairs_path).name})",
                                          extra_columns=["reps"], notes=notes)
        return {"summary_md": md_path, "summary_csv": csv_path, "scores": result_files}
