"""Codec reconstruction benchmark (paper §4, Table 1 / Table 7; DESIGN §7).

For every cut: reconstruct with DM-Codec at each ``n_q`` (batched, ``torch.inference_mode``),
encode and decode it with classic codecs (``baselines``: codec2, Opus; see
:mod:`dmtts.eval.classic_codecs`), optionally take other systems' reconstructions from
``DIR/<utt_id>.wav``, and score each system against the original audio. Outputs under ``out_dir``:

* ``scores_<system>.csv``  per-utterance scores (``utt_id,wer,wil,stoi,pesq,visqol,sim,sim_r,mos_proxy,comb``),
  one per system, e.g. ``scores_dmcodec_nq8.csv``, ``scores_codec2_3200.csv``;
  ``scores_ground_truth.csv`` for the originals (WER/WIL and MOS proxy only: the ASR / MOS floor);
* ``transcripts_<system>.tsv`` (utt_id, reference, hypothesis);
* ``summary.csv`` / ``summary.md`` and ``models.json`` (which model produced each column);
* ``summary_groups.csv`` / ``summary_groups.md`` with ``grouping`` (``--group-by speaker`` or
  ``--speaker-groups FILE``): the same figures per speaker or group (:mod:`dmtts.eval.group_tables`);
* ``trained_models.json``: the codec's steps trained against steps configured, when its
  config.json says (:mod:`dmtts.eval.trained_models`); also lines of ``summary.md``;
* ``mel_spectrograms.png`` for the first few utterances;
* ``recon/<system>/<utt_id>.wav`` the DM-Codec and baseline reconstructions (16-bit PCM, for
  listening); ``inputs.json`` names the evaluated cuts (for the report's players);
* ``score_cache/`` the per-utterance scores (:mod:`dmtts.eval.cache`): a rerun scores only what
  is missing (new cuts, systems, baselines, metrics or models).

Sharding (``torchrun``, :mod:`dmtts.data.sharding`): the cuts are read lazily in units of
``unit_size`` consecutive cuts; unit ``j`` belongs to rank ``j % world_size``. Inside a unit the
cuts are sorted by length and cut into codec batches, so a reconstruction (which padding changes
slightly) and therefore every score is the same whatever the world size. Each rank stores its
units' scores in the cache; after a barrier rank 0 reads them back in the original cut order and
writes every output.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from dmtts.errors import DmttsError
from dmtts.eval.cache import CACHE_DIRNAME, ScoreCache, cut_identity, file_identity, module_identity, record_key
from dmtts.eval.classic_codecs import ClassicCodec
from dmtts.eval.codec_systems import Scorer, System, system_file
from dmtts.eval.eval_cuts import SAMPLE_RATE, UNIT_SIZE, Utterance, iter_cuts, iter_units, load_utterance
from dmtts.eval.group_tables import GROUPS_STEM, Grouping, group_rows, write_group_tables
from dmtts.eval.metrics import METRICS, EvalModels
from dmtts.eval.scores import (GROUND_TRUTH, SummaryRow, summarize, summary_columns, wer_note, write_scores_csv,
                               write_summary, write_transcripts)
from dmtts.eval.trained_models import trained_models, training_notes, write_trained_models
from dmtts.eval.word_errors import WordErrors, word_errors
from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)

CODEC_METRICS = tuple(m for m in METRICS if m != "sim_r")  # SIM-r is a TTS metric
__all__ = ["evaluate_codec", "reconstruct", "CODEC_METRICS", "GROUND_TRUTH", "UNIT_SIZE"]


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


def evaluate_codec(cuts: str | Path, out_dir: str | Path, model_dir: str | Path | None = None, codec=None,
                   n_qs: Sequence[int] = (1, 3, 6, 8), systems: Mapping[str, str | Path] | None = None,
                   models: EvalModels | None = None, metrics: Sequence[str] = CODEC_METRICS,
                   name: str = "dmcodec", batch_size: int = 8, device: str = "cpu", n_figure: int = 3,
                   limit: int | None = None, ctx=None, rescore: bool = False, unit_size: int = UNIT_SIZE,
                   baselines: Sequence[ClassicCodec] = (), grouping: Grouping | None = None) -> dict | None:
    """Run the codec benchmark; returns ``{"summary_md", "summary_csv", "groups_md", "figure",
    "scores": {...}}`` on rank 0 (``ctx``: a :class:`dmtts.data.sharding.ShardContext`; default one
    process) and ``None`` on the other ranks. ``rescore``: ignore the scores cached by earlier runs.
    ``baselines``: classic codecs scored as rows of the same tables; ``grouping``: per-speaker or
    per-group tables as well."""
    from dmtts.data.sharding import ShardContext

    ctx = ctx or ShardContext(device=device)
    out_dir = Path(out_dir)
    models = models or EvalModels(device=device)
    bad = [m for m in metrics if m not in CODEC_METRICS]
    if bad:
        raise DmttsError(f"--metrics {' '.join(bad)}: not a codec metric (choose from {' '.join(CODEC_METRICS)})")
    if codec is None and model_dir is None and not systems and not baselines:
        raise DmttsError("nothing to evaluate: pass --model DIR (an exported DM-Codec), --baselines SPEC ... "
                         "and/or --systems NAME=DIR")
    if codec is None and model_dir is not None:
        from dmtts.codec.model import DMCodec

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise DmttsError(f"codec model dir '{model_dir}' has no config.json: pass --model with the "
                             "directory written by `dmtts codec export` (config.json + model.safetensors)")
        codec = DMCodec.from_pretrained(model_dir, device=device)
    table = _build_table(codec, n_qs, name, batch_size, unit_size, device, dict(systems or {}), baselines, metrics)
    _check_inputs(cuts, limit, [s for s in table if s.directory is not None], grouping)
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
    trained = trained_models([("codec", model_dir)])
    return _merge_codec(cuts, limit, out_dir, table, metrics, models, cache, n_figure, timings, grouping, trained)


def _build_table(codec, n_qs, name, batch_size, unit_size, device, systems, baselines, metrics) -> list[System]:
    """The rows: ground truth (when a reference-free metric is asked for), the codec at each
    ``n_q``, the baselines, then the ``--systems`` directories; names must be distinct."""
    table: list[System] = []
    if any(m in metrics for m in ("wer", "wil", "mos_proxy", "comb")):
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
    for baseline in baselines:
        table.append(System(baseline.name, baseline.identity(), {"bitrate_kbps": f"{baseline.bitrate_kbps:g}"},
                            baseline=baseline))
    if name == GROUND_TRUTH:
        raise DmttsError(f"--name {GROUND_TRUTH} is reserved for the original audio; pick another --name")
    for sys_name, directory in systems.items():
        directory = Path(directory)
        if not directory.is_dir():
            raise DmttsError(f"--systems {sys_name}={directory}: the directory does not exist; it must hold "
                             "<utt_id>.wav reconstructions of the evaluated cuts")
        table.append(System(sys_name, f"files|{sys_name}", {}, directory=directory))
    names = [s.name for s in table]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DmttsError(f"two rows are named {' and '.join(clash)}: rename the --systems entry (or --name)")
    return table


def _check_inputs(cuts, limit, dir_systems: Sequence[System], grouping: Grouping | None) -> None:
    """Before any work: a ``--systems`` directory without any of the cuts' files is a mistake, and
    every cut must have a group (speaker, and the speaker a line in ``--speaker-groups``)."""
    if grouping is not None:
        grouping.check(cut for _, cut in iter_cuts(cuts, limit))
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
        elif system.baseline is not None:  # one utterance at a time: only those with something to score
            degs = {u: system.baseline.roundtrip(utts[u].wav, SAMPLE_RATE) for u in wanted}
        elif system.directory is not None:
            degs = {u: load_audio(files[u], SAMPLE_RATE)[0] for u in wanted}
        else:
            degs = {u: utt.wav for u, utt in utts.items()}
        if system.n_q is not None or system.baseline is not None:
            timing[f"reconstruct_{system.name}"] += time.perf_counter() - t0
            for utt_id, wav in degs.items():
                save_audio(out_dir / "recon" / system.name / f"{utt_id}.wav", wav, SAMPLE_RATE)
        t0 = time.perf_counter()
        values = scorer.score(wanted, utts, degs)
        timing[f"score_{system.name}"] += time.perf_counter() - t0
        cache.put(system.name, unit_index, [(u, keys[(u, m)], v) for (u, m), v in values.items()])


def _merge_codec(cuts, limit, out_dir, table, metrics, models, cache, n_figure, timings, grouping, trained) -> dict:
    """Rank 0: every system's rows from the cache, in the original cut order; the outputs."""
    rows: dict[str, list[dict]] = {s.name: [] for s in table}
    errors: dict[str, dict[str, WordErrors]] = {s.name: {} for s in table}
    transcripts: dict[str, list[tuple[str, str, str]]] = {s.name: [] for s in table}
    missing_files: dict[str, list[str]] = defaultdict(list)
    groups: dict[str, str] = {}
    figure_cuts = []
    n_cuts = 0
    for pos, cut in iter_cuts(cuts, limit):
        n_cuts += 1
        if len(figure_cuts) < n_figure:
            figure_cuts.append(cut)
        if grouping is not None:
            groups[cut.id] = grouping.group(cut)
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
                    errors[system.name][cut.id] = e
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
        values = summarize(rows[system.name], list(errors[system.name].values()), metrics)
        summary.append(SummaryRow(system.name, len(rows[system.name]), values, system.extra))
        logger.info("%s: %s", system.name, {k: round(v, 4) for k, v in values.items()})

    described = models.describe(metrics)
    notes = [(wer_note(models) + " " if "wer" in metrics or "wil" in metrics else "") +
             "Other columns: means over utterances. `ground_truth` scores the original audio (the ASR / MOS "
             "floor). bitrate_kbps: RVQ levels x frame rate x log2(codebook size) (0.5 kbps per level for 50 Hz "
             "x 1024 codes); 256 for 16-bit 16 kHz PCM."]
    if any(s.baseline is not None for s in table):
        notes.append("Baselines: `codec2_<mode>` is Codec 2 (Debian codec2, c2enc/c2dec) at 8 kHz, resampled "
                     "back to 16 kHz, its fixed decoder delay removed; `opus_<k>kbps` is Opus (opus-tools, "
                     "opusenc --bitrate k, variable bitrate) decoded at 16 kHz. Their bitrate is the nominal one.")
    notes += training_notes(trained)
    csv_path, md_path = write_summary(out_dir, summary, summary_columns(metrics), described,
                                      f"Codec reconstruction ({n_cuts} utterances, {Path(cuts).name})",
                                      extra_columns=["bitrate_kbps"], notes=notes)
    write_trained_models(out_dir, trained)
    atomic_write_text(out_dir / "inputs.json", json.dumps({"cuts": str(Path(cuts).resolve())}) + "\n")
    groups_md = None
    if grouping is not None:
        by_group = group_rows([(s.name, s.extra.get("bitrate_kbps", "")) for s in table], rows, errors, groups,
                              metrics)
        _, groups_md = write_group_tables(out_dir, by_group, summary_columns(metrics), grouping.label,
                                          f"Codec reconstruction per {grouping.label} ({n_cuts} utterances, "
                                          f"{len(set(groups.values()))} {grouping.label}s)")
    else:  # a table from an earlier run with other options would be reported as this run's
        for suffix in (".md", ".csv"):
            (out_dir / f"{GROUPS_STEM}{suffix}").unlink(missing_ok=True)
    fig_path = None
    if n_figure > 0 and len(table) > (1 if table and table[0].name == GROUND_TRUTH else 0):
        fig_path = _figure(out_dir, cuts, figure_cuts, table)
    timing: dict[str, float] = defaultdict(float)
    for t in timings or []:
        for k, v in t.items():
            timing[k] += v
    timing_lines = [f"{k}\t{v:.2f}\t{v / n_cuts:.3f}" for k, v in timing.items()]
    atomic_write_text(out_dir / "timing.tsv", "step\tseconds\tseconds_per_utt\n" + "\n".join(timing_lines) + "\n")
    return {"summary_md": md_path, "summary_csv": csv_path, "groups_md": groups_md, "figure": fig_path,
            "scores": score_files, "timing": dict(timing)}


def _figure(out_dir: Path, cuts, figure_cuts, table: Sequence[System]) -> Path:
    """``mel_spectrograms.png``: the originals, the codec at its most levels, the baselines and the
    ``--systems`` directories."""
    from dmtts.audio import load_audio
    from dmtts.eval.figures import mel_figure

    ids = [c.id for c in figure_cuts]
    columns: dict[str, dict[str, np.ndarray]] = {"original": {c.id: load_utterance(c, cuts).wav for c in figure_cuts}}
    codec_rows = [s for s in table if s.n_q is not None]
    shown = ([max(codec_rows, key=lambda s: s.n_q)] if codec_rows else []) + [
        s for s in table if s.baseline is not None or s.directory is not None]
    for system in shown:
        folder = system.directory if system.directory is not None else out_dir / "recon" / system.name
        columns[system.name] = {u: load_audio(p, SAMPLE_RATE)[0] for u in ids
                                if (p := system_file(folder, u)) is not None}
    return mel_figure(out_dir / "mel_spectrograms.png", ids, columns,
                      title="Log-mel spectrograms: original vs reconstructions")
