"""Codec reconstruction benchmark (paper §4, Table 1 / Table 7; DESIGN §7).

For every cut: reconstruct with DM-Codec at each ``n_q`` (batched, ``torch.inference_mode``),
optionally take other systems' reconstructions from ``DIR/<utt_id>.wav``, and score each
system against the original audio. Outputs under ``out_dir``:

* ``scores_<system>.csv``  per-utterance scores (``utt_id,wer,wil,stoi,pesq,visqol,sim,mos_proxy``),
  one per system, e.g. ``scores_dmcodec_nq8.csv``; ``scores_ground_truth.csv`` for the originals
  (WER/WIL and MOS proxy only: the ASR / MOS floor);
* ``transcripts_<system>.tsv`` (utt_id, reference, hypothesis);
* ``summary.csv`` / ``summary.md`` and ``models.json`` (which model produced each column);
* ``mel_spectrograms.png`` for the first few utterances;
* ``recon/<system>/<utt_id>.wav`` the DM-Codec reconstructions (16-bit PCM, for listening);
* ``score_cache/`` the per-utterance scores (:mod:`dmtts.eval.cache`): a rerun scores only what
  is missing (new cuts, systems, metrics or models).

Sharding (``torchrun``, :mod:`dmtts.data.sharding`): the cuts are read lazily in units of
``unit_size`` consecutive cuts; unit ``j`` belongs to rank ``j % world_size``. Inside a unit the
cuts are sorted by length and cut into codec batches, so a reconstruction (which padding changes
slightly) and therefore every score is the same whatever the world size. Each rank stores its
units' scores in the cache; after a barrier rank 0 reads them back in the original cut order and
writes every output.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from dmtts.errors import DmttsError
from dmtts.eval.cache import CACHE_DIRNAME, ScoreCache, cut_identity, file_identity, module_identity, record_key
from dmtts.eval.metrics import METRICS, EvalModels, WordErrors, corpus_rates, cosine, word_errors
from dmtts.eval.scores import SummaryRow, nanmean, summary_columns, write_scores_csv, write_summary
from dmtts.utils import atomic_write_text, require_file

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CODEC_METRICS = tuple(m for m in METRICS if m != "sim_r")  # SIM-r is a TTS metric
GROUND_TRUTH = "ground_truth"
UNIT_SIZE = 64  # cuts per scoring unit: the shard granule, one cache file, the length-sorting window
SIGNAL_METRICS = ("stoi", "pesq", "visqol", "sim")  # need the reference audio


@dataclass
class Utterance:
    utt_id: str
    wav: np.ndarray  # float32 [N] at 16 kHz
    text: str | None


def iter_cuts(cuts_path: str | Path, limit: int | None = None, flag: str = "--cuts") -> Iterator[tuple[int, object]]:
    """``(position, cut)`` of a lhotse CutSet manifest, read lazily (never all in memory); a
    repeated cut id is a clear error."""
    from lhotse import CutSet, load_manifest_lazy

    path = require_file(cuts_path, f"{flag} manifest", "pass a lhotse CutSet (*.jsonl.gz)")
    try:
        cuts = load_manifest_lazy(path)
    except Exception as e:
        raise DmttsError(f"cannot read cut manifest '{path}': {e}") from None
    if not isinstance(cuts, CutSet):
        raise DmttsError(f"'{path}' is a {type(cuts).__name__}, not a CutSet: pass a *_cuts_*.jsonl.gz file")
    seen: set[str] = set()
    n = 0
    for pos, cut in enumerate(cuts):
        if limit is not None and pos >= limit:
            break
        if cut.id in seen:
            raise DmttsError(f"'{path}' has the cut id '{cut.id}' twice; ids must be unique")
        seen.add(cut.id)
        n += 1
        yield pos, cut
    if n == 0:
        raise DmttsError(f"'{path}' holds no cuts")


def iter_units(cuts_path: str | Path, limit: int | None = None, unit_size: int = UNIT_SIZE,
               flag: str = "--cuts") -> Iterator[tuple[int, list[tuple[int, object]]]]:
    """Units of ``unit_size`` consecutive cuts: ``(unit index, [(position, cut), ...])``, lazily."""
    unit: list[tuple[int, object]] = []
    for pos, cut in iter_cuts(cuts_path, limit, flag):
        unit.append((pos, cut))
        if len(unit) == unit_size:
            yield pos // unit_size, unit
            unit = []
    if unit:
        yield unit[0][0] // unit_size, unit


def load_utterance(cut, cuts_path: str | Path) -> Utterance:
    """A cut's audio (16 kHz mono float32) and first supervision's text."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    try:
        audio = cut.load_audio()
    except Exception as e:
        raise DmttsError(f"cannot load the audio of cut '{cut.id}' in '{cuts_path}': {e}") from None
    wav = np.asarray(audio, dtype=np.float32)
    wav = wav.mean(axis=0) if wav.ndim == 2 else wav.reshape(-1)
    if wav.size == 0 or not np.isfinite(wav).all():
        raise DmttsError(f"cut '{cut.id}' in '{cuts_path}' has empty or non-finite audio")
    return Utterance(cut.id, wav, cut.supervisions[0].text if cut.supervisions else None)


def reconstruct(codec, utts: Sequence[Utterance], n_q: int, batch_size: int = 8,
                device: str = "cpu") -> dict[str, np.ndarray]:
    """DM-Codec reconstructions ``{utt_id: wav}`` using the first ``n_q`` RVQ levels.

    Utterances are sorted by length and zero-padded to a multiple of the hop inside a batch;
    ``batch_size=1`` reproduces single-utterance encoding exactly (the BiLSTM sees the padding
    otherwise, which changes the last frames very slightly).
    """
    import torch

    hop = int(getattr(codec, "hop_length", 320))
    order = sorted(range(len(utts)), key=lambda i: (len(utts[i].wav), i))
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            lengths = [len(utts[i].wav) for i in idx]
            n_pad = math.ceil(max(lengths) / hop) * hop
            batch = torch.zeros(len(idx), 1, n_pad)
            for j, i in enumerate(idx):
                batch[j, 0, :lengths[j]] = torch.from_numpy(utts[i].wav)
            codes = codec.encode(batch.to(device), n_q)
            wav = codec.decode(codes)
            wav = wav.reshape(len(idx), -1).float().cpu().numpy()
            for j, i in enumerate(idx):
                rec = wav[j, :lengths[j]]
                if len(rec) < lengths[j]:
                    rec = np.pad(rec, (0, lengths[j] - len(rec)))
                out[utts[i].utt_id] = np.clip(rec, -1.0, 1.0).astype(np.float32)
    return out


def system_file(directory: Path, utt_id: str) -> Path | None:
    """Another system's reconstruction ``DIR/<utt_id>.wav`` (or ``.flac``), if present."""
    for ext in (".wav", ".flac"):
        p = directory / f"{utt_id}{ext}"
        if p.is_file():
            return p
    return None


@dataclass
class System:
    """One row of the table: the originals (``ground_truth``), a DM-Codec at ``n_q`` levels, or
    reconstructions read from ``directory``."""

    name: str
    identity: str
    extra: dict
    n_q: int | None = None
    directory: Path | None = None
    reference_free: bool = False

    def cached_metrics(self, metrics: Sequence[str]) -> list[str]:
        """What is cached per utterance: ``asr`` (the transcript behind WER/WIL) and the metrics
        other than WER/WIL; the ground truth has no reference to compare with."""
        out = ["asr"] if ("wer" in metrics or "wil" in metrics) else []
        out += [m for m in metrics if m not in ("wer", "wil") and not (self.reference_free and m in SIGNAL_METRICS)]
        return out


class Scorer:
    """Scores the audio of one unit; caches reference embeddings across the unit's systems."""

    def __init__(self, models: EvalModels, asr_batch: int = 16):
        self.models = models
        self.asr_batch = asr_batch
        self._ref_emb: dict[str, np.ndarray] = {}

    def new_unit(self) -> None:
        self._ref_emb.clear()

    def transcribe(self, wavs: Mapping[str, np.ndarray]) -> dict[str, str]:
        ids = sorted(wavs, key=lambda i: len(wavs[i]))  # similar lengths share an ASR batch
        out: dict[str, str] = {}
        for s in range(0, len(ids), self.asr_batch):
            chunk = ids[s:s + self.asr_batch]
            hyps = self.models.asr.transcribe([wavs[i] for i in chunk])
            if len(hyps) != len(chunk):
                raise RuntimeError(f"the ASR returned {len(hyps)} transcripts for {len(chunk)} inputs")
            out.update(zip(chunk, hyps))
        return out

    def ref_embedding(self, utt: Utterance) -> np.ndarray:
        if utt.utt_id not in self._ref_emb:
            self._ref_emb[utt.utt_id] = self.models.sim.embed([utt.wav])[0]
        return self._ref_emb[utt.utt_id]

    def score(self, wanted: Mapping[str, list[str]], refs: Mapping[str, Utterance],
              degs: Mapping[str, np.ndarray]) -> dict[tuple[str, str], object]:
        """``{(utt_id, metric): value}`` for the ``wanted`` metrics of each utterance."""
        from dmtts.eval.metrics import pesq_wb, stoi_score

        hyps = self.transcribe({u: degs[u] for u, ms in wanted.items() if "asr" in ms})
        out: dict[tuple[str, str], object] = {}
        for utt_id, ms in wanted.items():
            ref, deg = refs[utt_id], degs[utt_id]
            for m in ms:
                if m == "asr":
                    value = hyps[utt_id]
                elif m == "stoi":
                    value = stoi_score(ref.wav, deg)
                elif m == "pesq":
                    value = pesq_wb(ref.wav, deg)
                elif m == "visqol":
                    value = self.models.visqol(ref.wav, deg)
                elif m == "sim":
                    value = cosine(self.ref_embedding(ref), self.models.sim.embed([deg])[0])
                elif m == "mos_proxy":
                    value = self.models.mos(deg)
                else:
                    raise ValueError(m)
                out[(utt_id, m)] = value
        return out


def summarize(system: str, rows: Sequence[dict], errors: Sequence[WordErrors], metrics: Sequence[str]) -> dict:
    """Summary values: corpus-level WER/WIL (pooled ``errors``), ``wer_utt`` (mean per-utterance
    WER) and the means of the other metrics."""
    values = {}
    for m in metrics:
        if m in ("wer", "wil"):
            if errors:
                values["wer"], values["wil"] = corpus_rates(errors)
                values["wer_utt"] = nanmean([r.get("wer", math.nan) for r in rows])
        else:
            values[m] = nanmean([r.get(m, math.nan) for r in rows])
    return {k: v for k, v in values.items() if k in summary_columns(metrics)}


def write_transcripts(path: Path, transcripts: Sequence[tuple[str, str, str]]) -> None:
    lines = ["utt_id\treference\thypothesis"]
    lines += ["\t".join(x.replace("\t", " ").replace("\n", " ") for x in t) for t in transcripts]
    atomic_write_text(path, "\n".join(lines) + "\n")


def wer_note(models: EvalModels, per: str = "an utterance") -> str:
    return (f"WER/WIL: corpus-level (errors pooled over all words) and `WER utt-mean` (the mean of the "
            f"per-utterance WERs, {per} each), in %, after the text normaliser: {models.text_norm.name}.")


def evaluate_codec(cuts: str | Path, out_dir: str | Path, model_dir: str | Path | None = None, codec=None,
                   n_qs: Sequence[int] = (1, 3, 6, 8), systems: Mapping[str, str | Path] | None = None,
                   models: EvalModels | None = None, metrics: Sequence[str] = CODEC_METRICS,
                   name: str = "dmcodec", batch_size: int = 8, device: str = "cpu", n_figure: int = 3,
                   limit: int | None = None, ctx=None, rescore: bool = False,
                   unit_size: int = UNIT_SIZE) -> dict | None:
    """Run the codec benchmark; returns ``{"summary_md", "summary_csv", "figure", "scores": {...}}``
    on rank 0 (``ctx``: a :class:`dmtts.data.sharding.ShardContext`; default one process) and
    ``None`` on the other ranks. ``rescore``: ignore the scores cached by earlier runs."""
    from dmtts.data.sharding import ShardContext

    ctx = ctx or ShardContext(device=device)
    out_dir = Path(out_dir)
    systems = dict(systems or {})
    models = models or EvalModels(device=device)
    bad = [m for m in metrics if m not in CODEC_METRICS]
    if bad:
        raise DmttsError(f"--metrics {' '.join(bad)}: not a codec metric (choose from {' '.join(CODEC_METRICS)})")
    if codec is None and model_dir is None and not systems:
        raise DmttsError("nothing to evaluate: pass --model DIR (an exported DM-Codec) and/or --systems NAME=DIR")
    if codec is None and model_dir is not None:
        from dmtts.codec.model import DMCodec

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise DmttsError(f"codec model dir '{model_dir}' has no config.json: pass --model with the "
                             "directory written by `dmtts codec export` (config.json + model.safetensors)")
        codec = DMCodec.from_pretrained(model_dir, device=device)
    table: list[System] = []
    if any(m in metrics for m in ("wer", "wil", "mos_proxy")):
        table.append(System(GROUND_TRUTH, GROUND_TRUTH, {"bitrate_kbps": "256"}, reference_free=True))
    if codec is not None:
        codec.eval()
        max_q = int(getattr(codec, "n_q", max(n_qs)))
        bad_q = [q for q in n_qs if not 1 <= q <= max_q]
        if bad_q:
            raise DmttsError(f"--n-q {' '.join(map(str, bad_q))}: the codec has {max_q} RVQ levels (use 1..{max_q})")
        weights = module_identity(codec)
        for q in n_qs:
            bitrate = codec.bitrate(q) / 1000 if hasattr(codec, "bitrate") else q * 0.5
            table.append(System(f"{name}_nq{q}", f"codec|{weights}|nq{q}|batch{batch_size}|unit{unit_size}|{device}",
                                {"bitrate_kbps": f"{bitrate:g}"}, n_q=q))
    if name == GROUND_TRUTH or name in systems:
        raise DmttsError(f"system name '{name}' clashes with another system; pick another --name")
    for sys_name, directory in systems.items():
        directory = Path(directory)
        if not directory.is_dir():
            raise DmttsError(f"--systems {sys_name}={directory}: the directory does not exist; it must hold "
                             "<utt_id>.wav reconstructions of the evaluated cuts")
        table.append(System(sys_name, f"files|{sys_name}", {}, directory=directory))
    _check_system_dirs(cuts, limit, [s for s in table if s.directory is not None])
    models.load_for(metrics)  # fail on a bad model spec before the long work
    cache = ScoreCache(out_dir / CACHE_DIRNAME, read=not rescore)
    timing: dict[str, float] = defaultdict(float)

    scorer = Scorer(models)
    for unit_index, items in tqdm(iter_units(cuts, limit, unit_size), desc="eval units", unit="unit",
                                  disable=not ctx.is_main):
        if not ctx.owns(unit_index):
            continue
        _score_unit(unit_index, items, table, metrics, models, cache, scorer, codec, batch_size, device,
                    out_dir, cuts, timing)

    ctx.barrier()  # every rank has stored its units' scores
    timings = ctx.gather(dict(timing))
    if not ctx.is_main:
        return None
    cache.reload()
    return _merge_codec(cuts, limit, out_dir, table, metrics, models, cache, n_figure, timings)


def _check_system_dirs(cuts, limit, dir_systems: Sequence[System]) -> None:
    """A ``--systems`` directory without any of the cuts' files is a mistake: say so before any work."""
    if not dir_systems:
        return
    found = {s.name: 0 for s in dir_systems}
    first = None
    for _, cut in iter_cuts(cuts, limit):
        first = first or cut.id
        for s in dir_systems:
            found[s.name] += system_file(s.directory, cut.id) is not None
    for s in dir_systems:
        if not found[s.name]:
            raise DmttsError(f"--systems {s.name}={s.directory}: none of the cuts has a file <utt_id>.wav there "
                             f"(first expected: {s.directory / (first + '.wav')})")


def _key(models: EvalModels, system: System, metric: str, cut_id: str, file_id: str = "") -> str:
    return record_key(metric, models.identity(metric), system.identity, cut_id, file_id)


def _score_unit(unit_index, items, table, metrics, models, cache, scorer, codec, batch_size, device, out_dir,
                cuts_path, timing) -> None:
    """Score what the cache lacks for one unit, every system; store it (one file per system)."""
    from dmtts.audio import load_audio, save_audio

    scorer.new_unit()
    idents = {cut.id: cut_identity(cut) for _, cut in items}
    utts: dict[str, Utterance] | None = None
    for system in table:
        files = {cut.id: system_file(system.directory, cut.id) for _, cut in items} if system.directory else {}
        wanted: dict[str, list[str]] = {}
        keys: dict[tuple[str, str], str] = {}
        for _, cut in items:
            if system.directory is not None and files[cut.id] is None:
                continue
            file_id = file_identity(files[cut.id]) if system.directory else ""
            for m in system.cached_metrics(metrics):
                key = _key(models, system, m, idents[cut.id], file_id)
                keys[(cut.id, m)] = key
                if not cache.has(system.name, cut.id, key):
                    wanted.setdefault(cut.id, []).append(m)
        if not wanted:
            continue
        if utts is None:
            t0 = time.perf_counter()
            utts = {cut.id: load_utterance(cut, cuts_path) for _, cut in items}
            timing["load_audio"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if system.n_q is not None:  # the whole unit, so that every cut's batch is the same as in any run
            degs = reconstruct(codec, list(utts.values()), system.n_q, batch_size, device)
            timing[f"reconstruct_{system.name}"] += time.perf_counter() - t0
            for utt_id, wav in degs.items():
                save_audio(out_dir / "recon" / system.name / f"{utt_id}.wav", wav, SAMPLE_RATE)
        elif system.directory is not None:
            degs = {u: load_audio(files[u], SAMPLE_RATE)[0] for u in wanted}
        else:
            degs = {u: utt.wav for u, utt in utts.items()}
        t0 = time.perf_counter()
        values = scorer.score(wanted, utts, degs)
        timing[f"score_{system.name}"] += time.perf_counter() - t0
        cache.put(system.name, unit_index, [(u, keys[(u, m)], v) for (u, m), v in values.items()])


def _merge_codec(cuts, limit, out_dir, table, metrics, models, cache, n_figure, timings) -> dict:
    """Rank 0: every system's rows from the cache, in the original cut order; the outputs."""
    from dmtts.audio import load_audio

    rows: dict[str, list[dict]] = {s.name: [] for s in table}
    errors: dict[str, list[WordErrors]] = {s.name: [] for s in table}
    transcripts: dict[str, list[tuple[str, str, str]]] = {s.name: [] for s in table}
    missing_files: dict[str, list[str]] = defaultdict(list)
    figure_cuts = []
    n_cuts = 0
    for pos, cut in iter_cuts(cuts, limit):
        n_cuts += 1
        if len(figure_cuts) < n_figure:
            figure_cuts.append(cut)
        ident = cut_identity(cut)
        text = cut.supervisions[0].text if cut.supervisions else None
        for system in table:
            file_id = ""
            if system.directory is not None:
                path = system_file(system.directory, cut.id)
                if path is None:
                    missing_files[system.name].append(cut.id)
                    continue
                file_id = file_identity(path)
            row: dict = {"utt_id": cut.id}
            for m in system.cached_metrics(metrics):
                key = _key(models, system, m, ident, file_id)
                if not cache.has(system.name, cut.id, key):
                    raise DmttsError(f"no {m} score of cut '{cut.id}' for system {system.name} in {cache.root} "
                                     "(a rank stopped early, or a file changed during the run): rerun the same "
                                     "command; it scores only what is missing")
                value = cache.get(system.name, cut.id, key)
                if m != "asr":
                    row[m] = math.nan if value is None else float(value)
                elif text is None:
                    logger.warning("cut '%s' has no transcript; WER/WIL left empty", cut.id)
                else:
                    e = word_errors(text, value, models.text_norm)
                    errors[system.name].append(e)
                    row["wer"], row["wil"] = e.wer, e.wil
                    transcripts[system.name].append((cut.id, text, value))
            rows[system.name].append(row)
    for sys_name, ids in missing_files.items():
        logger.warning("system %s: %d of %d utterances have no file (skipped), e.g. %s", sys_name, len(ids),
                       n_cuts, ids[0])
    summary: list[SummaryRow] = []
    score_files: dict[str, Path] = {}
    for system in table:
        score_files[system.name] = write_scores_csv(out_dir / f"scores_{system.name}.csv", rows[system.name])
        if transcripts[system.name]:
            write_transcripts(out_dir / f"transcripts_{system.name}.tsv", transcripts[system.name])
        values = summarize(system.name, rows[system.name], errors[system.name], metrics)
        summary.append(SummaryRow(system.name, len(rows[system.name]), values, system.extra))
        logger.info("%s: %s", system.name, {k: round(v, 4) for k, v in values.items()})

    described = models.describe(metrics)
    notes = [(wer_note(models) + " " if "wer" in metrics or "wil" in metrics else "") +
             "Other columns: means over utterances. `ground_truth` scores the original audio (the ASR / MOS "
             "floor). bitrate_kbps: RVQ levels x frame rate x log2(codebook size) (0.5 kbps per level for 50 Hz "
             "x 1024 codes); 256 for 16-bit 16 kHz PCM."]
    csv_path, md_path = write_summary(out_dir, summary, summary_columns(metrics), described,
                                      f"Codec reconstruction ({n_cuts} utterances, {Path(cuts).name})",
                                      extra_columns=["bitrate_kbps"], notes=notes)
    fig_path = None
    if n_figure > 0 and len(table) > (1 if table and table[0].name == GROUND_TRUTH else 0):
        from dmtts.eval.figures import mel_figure

        ids = [c.id for c in figure_cuts]
        columns: dict[str, dict[str, np.ndarray]] = {"original": {c.id: load_utterance(c, cuts).wav for c in figure_cuts}}
        codec_rows = [s for s in table if s.n_q is not None]
        shown = ([max(codec_rows, key=lambda s: s.n_q)] if codec_rows else []) + [s for s in table if s.directory]
        for system in shown:
            folder = system.directory if system.directory is not None else out_dir / "recon" / system.name
            columns[system.name] = {u: load_audio(p, SAMPLE_RATE)[0] for u in ids
                                    if (p := system_file(folder, u)) is not None}
        fig_path = mel_figure(out_dir / "mel_spectrograms.png", ids, columns,
                              title="Log-mel spectrograms: original vs reconstructions")
    timing: dict[str, float] = defaultdict(float)
    for t in timings or []:
        for k, v in t.items():
            timing[k] += v
    timing_lines = [f"{k}\t{v:.2f}\t{v / n_cuts:.3f}" for k, v in timing.items()]
    atomic_write_text(out_dir / "timing.tsv", "step\tseconds\tseconds_per_utt\n" + "\n".join(timing_lines) + "\n")
    return {"summary_md": md_path, "summary_csv": csv_path, "figure": fig_path, "scores": score_files,
            "timing": dict(timing)}
