"""The toolkit's per-utterance scores format and summary tables.

Scores CSV (one file per system, e.g. ``scores_dmcodec_nq8.csv``; the system name is the stem
without ``scores_``): header ``utt_id,wer,wil,stoi,pesq,visqol,sim,sim_r,mos_proxy,comb``, one row per
utterance, a metric that was not computed (or failed for that utterance) is an empty cell.
WER and WIL are percentages.

Summary (``summary.csv`` / ``summary.md``): one row per system. ``wer``/``wil`` are corpus-level
(errors pooled over all words, the usual definition), ``wer_utt`` is the mean of the
per-utterance WERs (the other convention in the literature; utterances with an empty normalised
reference are left out); the other columns are means over utterances. ``n`` is the number of
scored utterances.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dmtts.errors import DmttsError
from dmtts.eval.metrics import METRICS, SCORE_COLUMNS
from dmtts.eval.word_errors import WordErrors, corpus_rates
from dmtts.utils import atomic_write_text

GROUND_TRUTH = "ground_truth"  # the system name of the original audio

# How each metric is printed in tables.
FORMATS = {"wer": "{:.2f}", "wer_utt": "{:.2f}", "wil": "{:.2f}", "stoi": "{:.3f}", "pesq": "{:.2f}",
           "visqol": "{:.2f}", "sim": "{:.3f}", "sim_r": "{:.3f}", "mos_proxy": "{:.2f}",
           "comb": "{:.1f}"}
HEADERS = {"wer": "WER % ↓", "wer_utt": "WER utt-mean % ↓", "wil": "WIL % ↓", "stoi": "STOI ↑", "pesq": "PESQ ↑",
           "visqol": "ViSQOL ↑", "sim": "SIM-o ↑", "sim_r": "SIM-r ↑", "mos_proxy": "MOS proxy ↑",
           "comb": "comb dB ↓"}


def summary_columns(metrics: Sequence[str]) -> list[str]:
    """The summary's metric columns: ``metrics`` with ``wer_utt`` right after ``wer``."""
    out = []
    for m in metrics:
        out.append(m)
        if m == "wer":
            out.append("wer_utt")
    return out


def _cell(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def write_scores_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write per-utterance ``rows`` (dicts with ``utt_id`` and metric keys) atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SCORE_COLUMNS)
    for row in rows:
        w.writerow([row["utt_id"]] + [_cell(row.get(m, math.nan)) for m in METRICS])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def read_scores_csv(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a scores CSV into ``{utt_id: {metric: value (NaN when empty)}}``."""
    path = Path(path)
    if not path.is_file():
        raise DmttsError(f"scores file '{path}' does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "utt_id" not in reader.fieldnames:
            raise DmttsError(f"'{path}' is not a scores CSV: its header must start with "
                             f"{','.join(SCORE_COLUMNS)}")
        metrics = [c for c in reader.fieldnames if c != "utt_id"]
        out: dict[str, dict[str, float]] = {}
        for i, row in enumerate(reader, start=2):
            values = {}
            for m in metrics:
                cell = (row.get(m) or "").strip()
                try:
                    values[m] = float(cell) if cell else math.nan
                except ValueError:
                    raise DmttsError(f"'{path}' line {i}: column {m} holds '{cell}', not a number") from None
            out[row["utt_id"]] = values
    return out


def system_name_from_path(path: str | Path) -> str:
    stem = Path(path).name
    for suffix in (".csv",):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    return stem[len("scores_"):] if stem.startswith("scores_") and len(stem) > 7 else stem


def nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


@dataclass
class SummaryRow:
    system: str
    n: int
    values: dict[str, float]
    extra: dict[str, str] = field(default_factory=dict)  # e.g. n_q, bitrate


def write_summary(out_dir: str | Path, rows: Sequence[SummaryRow], metrics: Sequence[str],
                  models: dict[str, str], title: str, extra_columns: Sequence[str] = (),
                  notes: Sequence[str] = (), stem: str = "summary") -> tuple[Path, Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``models.json``; return the (csv, md) paths."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["system", *extra_columns, "n", *metrics])
    for r in rows:
        w.writerow([r.system, *[r.extra.get(c, "") for c in extra_columns], r.n,
                    *[_cell(r.values.get(m, math.nan)) for m in metrics]])
    csv_path = out_dir / f"{stem}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    md_path = out_dir / f"{stem}.md"
    atomic_write_text(md_path, markdown_summary(rows, metrics, models, title, extra_columns, notes))
    atomic_write_text(out_dir / "models.json", json.dumps(models, indent=2) + "\n")
    return csv_path, md_path


def markdown_summary(rows: Sequence[SummaryRow], metrics: Sequence[str], models: dict[str, str],
                     title: str, extra_columns: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    head = ["System", *extra_columns, "n", *[HEADERS.get(m, m) for m in metrics]]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.system, *[r.extra.get(c, "") for c in extra_columns], str(r.n)]
        for m in metrics:
            v = r.values.get(m, math.nan)
            cells.append(FORMATS.get(m, "{:.3f}").format(v) if v is not None and math.isfinite(v) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Models and methods behind the figures:", ""]
    lines += [f"- **{HEADERS.get(m, m)}**: {desc}" for m, desc in models.items()]
    if notes:
        lines += [""] + [f"{n}" for n in notes]
    return "\n".join(lines) + "\n"


def read_summary_csv(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DmttsError(f"summary file '{path}' does not exist: run `dmtts eval codec` / `dmtts eval tts` first")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarize(rows: Sequence[dict], errors: Sequence[WordErrors], metrics: Sequence[str]) -> dict:
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
    """``transcripts_<system>.tsv``: utt_id, reference, ASR hypothesis (tabs and newlines blanked)."""
    lines = ["utt_id\treference\thypothesis"]
    lines += ["\t".join(x.replace("\t", " ").replace("\n", " ") for x in t) for t in transcripts]
    atomic_write_text(path, "\n".join(lines) + "\n")


def wer_note(models, per: str = "an utterance") -> str:
    """The table note that defines the WER/WIL columns and names ``models``' text normaliser."""
    return (f"WER/WIL: corpus-level (errors pooled over all words) and `WER utt-mean` (the mean of the "
            f"per-utterance WERs, {per} each), in %, after the text normaliser: {models.text_norm.name}.")
