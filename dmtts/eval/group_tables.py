"""Per-group tables of ``dmtts eval codec``: every metric per system and speaker (``--group-by
speaker``) or per group of speakers (``--speaker-groups FILE``, e.g. voice families).

The speaker of a cut is its first supervision's ``speaker``. A speaker-groups file has two
whitespace-separated columns per line, ``speaker group`` (blank lines and ``#`` comments are
skipped); every evaluated speaker must be in it. The tables (``summary_groups.csv`` /
``summary_groups.md``) use the main table's definitions: corpus-level WER/WIL pooled over the
group's words, ``WER utt-mean`` and the other metrics as means over the group's utterances, ``n``
the group's scored utterances.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from dmtts.errors import DmttsError
from dmtts.eval.scores import FORMATS, HEADERS, summarize
from dmtts.utils import atomic_write_text

GROUP_BY = ("speaker",)
GROUPS_STEM = "summary_groups"


def read_speaker_groups(path: str | Path) -> dict[str, str]:
    """``{speaker: group}`` from a two-column text file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DmttsError(f"--speaker-groups '{path}' does not exist: pass a text file of `speaker group` lines")
    groups: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DmttsError(f"--speaker-groups '{path}' line {number}: '{line.strip()}' has {len(fields)} "
                             "columns; each line is `speaker group` (two whitespace-separated columns)")
        speaker, group = fields
        if groups.get(speaker, group) != group:
            raise DmttsError(f"--speaker-groups '{path}' line {number}: speaker '{speaker}' is in two groups "
                             f"('{groups[speaker]}' and '{group}')")
        groups[speaker] = group
    if not groups:
        raise DmttsError(f"--speaker-groups '{path}' holds no `speaker group` line")
    return groups


class Grouping:
    """The group of each cut: its speaker, or the speaker's group in ``speaker_groups``."""

    def __init__(self, group_by: str | None = None, speaker_groups: Mapping[str, str] | None = None,
                 groups_file: str | Path | None = None) -> None:
        if group_by is not None and group_by not in GROUP_BY:
            raise DmttsError(f"--group-by {group_by}: choose from {' '.join(GROUP_BY)}")
        self.speaker_groups = dict(speaker_groups) if speaker_groups is not None else None
        self.groups_file = groups_file
        self.label = "group" if self.speaker_groups is not None else "speaker"

    @classmethod
    def from_options(cls, group_by: str | None, speaker_groups: str | Path | None) -> "Grouping | None":
        """None when neither ``--group-by`` nor ``--speaker-groups`` is given."""
        if group_by is None and speaker_groups is None:
            return None
        mapping = read_speaker_groups(speaker_groups) if speaker_groups is not None else None
        return cls(group_by, mapping, speaker_groups)

    def _speaker(self, cut) -> str:
        speaker = cut.supervisions[0].speaker if cut.supervisions else None
        if not speaker:
            raise DmttsError(f"cut '{cut.id}' has no speaker: --group-by speaker / --speaker-groups need "
                             "cuts whose first supervision names its speaker")
        return speaker

    def check(self, cuts: Iterable) -> None:
        """Fail before any scoring when a cut has no speaker or a speaker is missing from the map."""
        missing: list[str] = []
        for cut in cuts:
            speaker = self._speaker(cut)
            if self.speaker_groups is not None and speaker not in self.speaker_groups and speaker not in missing:
                missing.append(speaker)
        if missing:
            shown = " ".join(missing[:20]) + (f" (and {len(missing) - 20} more)" if len(missing) > 20 else "")
            raise DmttsError(f"--speaker-groups '{self.groups_file}' has no group for the speaker(s) {shown}: "
                             "add a `speaker group` line for each")

    def group(self, cut) -> str:
        speaker = self._speaker(cut)
        return speaker if self.speaker_groups is None else self.speaker_groups[speaker]


def group_rows(systems: Sequence[tuple[str, str]], rows: Mapping[str, Sequence[dict]],
               errors: Mapping[str, Mapping[str, object]], groups: Mapping[str, str],
               metrics: Sequence[str]) -> list[tuple[str, str, str, int, dict]]:
    """``(group, system, bitrate, n, values)`` for every group (sorted) and system (in table order).

    ``systems``: ``(name, bitrate)``; ``rows``: each system's per-utterance rows; ``errors``: each
    system's ``{utt_id: WordErrors}``; ``groups``: ``{utt_id: group}``.
    """
    out = []
    for group in sorted(set(groups.values())):
        for name, bitrate in systems:
            members = [r for r in rows[name] if groups.get(r["utt_id"]) == group]
            if not members:
                continue
            errs = [errors[name][r["utt_id"]] for r in members if r["utt_id"] in errors[name]]
            out.append((group, name, bitrate, len(members), summarize(members, errs, metrics)))
    return out


def write_group_tables(out_dir: str | Path, table: Sequence[tuple[str, str, str, int, dict]], columns: Sequence[str],
                       label: str, title: str) -> tuple[Path, Path]:
    """``summary_groups.csv`` and ``summary_groups.md`` (one row per group and system)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([label, "system", "bitrate_kbps", "n", *columns])
    for group, name, bitrate, n, values in table:
        w.writerow([group, name, bitrate, n,
                    *["" if not math.isfinite(values.get(m, math.nan)) else f"{values[m]:.6g}" for m in columns]])
    csv_path = out_dir / f"{GROUPS_STEM}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    head = [label.capitalize(), "System", "kbps", "n", *[HEADERS.get(m, m) for m in columns]]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, name, bitrate, n, values in table:
        cells = [group, name, bitrate, str(n)]
        for m in columns:
            v = values.get(m, math.nan)
            cells.append(FORMATS.get(m, "{:.3f}").format(v) if math.isfinite(v) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Each {label}'s rows use the main table's definitions over that {label}'s utterances "
                  "(WER/WIL pooled over its words)."]
    md_path = out_dir / f"{GROUPS_STEM}.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path
