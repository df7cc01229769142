"""One evaluation directory as a section of the report: what both ``report.md``
(:mod:`dmtts.eval.report`) and ``report.html`` (:mod:`dmtts.eval.report_html`) show of it.

A section is the directory's ``summary.md`` (the table, the models behind it and, when the models'
config.json say, how long they trained), its per-speaker or per-group table
(``summary_groups.md``) when ``dmtts eval codec --group-by/--speaker-groups`` wrote one, and the
significance tables (``significance_*.md``) found in it or one level below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dmtts.errors import DmttsError
from dmtts.eval.group_tables import GROUPS_STEM
from dmtts.eval.trained_models import capped_warning, read_trained_models


def eval_section(eval_dir: str | Path, what: str, command: str) -> tuple[str, Path | None]:
    """``(markdown, mel figure or None)`` of one evaluation directory; ``what`` (codec, TTS) and
    ``command`` name the evaluation in the error for a directory without ``summary.md``."""
    eval_dir = Path(eval_dir)
    summary = eval_dir / "summary.md"
    if not summary.is_file():
        raise DmttsError(f"{what} evaluation dir '{eval_dir}' has no summary.md: run `{command}` first")
    text = summary.read_text().rstrip() + "\n"
    groups = eval_dir / f"{GROUPS_STEM}.md"
    if groups.is_file():
        text += "\n" + groups.read_text().rstrip() + "\n"
    for sig in sorted(eval_dir.glob("significance_*.md")) + sorted(eval_dir.glob("*/significance_*.md")):
        text += "\n" + sig.read_text().rstrip() + "\n"
    fig = eval_dir / "mel_spectrograms.png"
    return text, (fig if fig.is_file() else None)


def capped_warnings(eval_dirs: Sequence[str | Path]) -> list[str]:
    """The bold warning of every model (once) that a wall-clock cap stopped early, read from the
    directories' ``trained_models.json``."""
    out: list[str] = []
    for d in eval_dirs:
        for entry in read_trained_models(d):
            warning = capped_warning(entry)
            if warning and warning not in out:
                out.append(warning)
    return out
