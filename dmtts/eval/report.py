"""The final evaluation report: codec reconstruction table, TTS table and the figure path.

``dmtts eval report --codec-eval exp/codec/eval --tts-eval exp/tts/eval --out exp/report.md``
prints the report and writes it (Markdown). Each section is an evaluation directory as
:func:`dmtts.eval.report_sections.eval_section` reads it: the ``summary.md`` written by ``dmtts
eval codec`` / ``dmtts eval tts`` (which lists the models behind every column and the steps they
trained), the per-group table and the significance tables. A model whose training a wall-clock
cap cut short is also named in a bold warning under the title.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from dmtts.errors import DmttsError
from dmtts.eval.report_html import html_report_for
from dmtts.eval.report_sections import capped_warnings, eval_section
from dmtts.utils import atomic_write_text


def build_report(codec_eval: Sequence[str | Path] | str | Path | None = None,
                 tts_eval: Sequence[str | Path] | str | Path | None = None,
                 figures: Sequence[str | Path] = ()) -> str:
    """The report: one section per evaluation directory (its summary.md and significance
    tables), then links to training-curve figures (e.g. loss and accuracy PNGs)."""
    codec_dirs, tts_dirs = _as_list(codec_eval), _as_list(tts_eval)
    if not codec_dirs and not tts_dirs:
        raise DmttsError("nothing to report: pass --codec-eval DIR and/or --tts-eval DIR")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# dmtts evaluation report ({stamp})", ""]
    parts += [line for w in capped_warnings([*codec_dirs, *tts_dirs]) for line in (w, "")]
    several = len(codec_dirs) + len(tts_dirs) > 2
    for d in codec_dirs:
        text, fig = eval_section(d, "codec", "dmtts eval codec")
        parts += ([f"## Codec: {d}", ""] if several else []) + [text]
        parts += [f"Mel-spectrogram figure: {fig.resolve()}" if fig else "Mel-spectrogram figure: (none written)", ""]
    for d in tts_dirs:
        text, _ = eval_section(d, "TTS", "dmtts eval tts")
        parts += ([f"## TTS: {d}", ""] if several else []) + [text]
    missing = [str(f) for f in figures if not Path(f).is_file()]
    if missing:
        raise DmttsError(f"--figures: {', '.join(missing)} not found (run the training stages first)")
    if figures:
        parts += ["## Training curves", ""] + [f"- {Path(f).resolve()}" for f in figures] + [""]
    return "\n".join(parts).rstrip() + "\n"


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)


def write_report(out: str | Path, codec_eval=None, tts_eval=None, echo: bool = True,
                 figures: Sequence[str | Path] = ()) -> Path:
    report = build_report(codec_eval, tts_eval, figures)
    out = Path(out)
    atomic_write_text(out, report)
    # the same report as a page with audio players (report.html + report_files/)
    page = html_report_for(out.with_suffix(".html"), _as_list(codec_eval), _as_list(tts_eval), list(figures),
                           stamp=report.splitlines()[0].partition("(")[2].rstrip(")"))
    if echo:
        print(report)
        print(f"[report written to {out}; listen to it in {page}]")
    return out
