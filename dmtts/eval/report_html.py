"""``report.html``: the evaluation report as a page to listen to.

Next to ``report.md``, ``dmtts eval report`` writes ``report.html`` and one folder,
``report_files/``, holding every image and wav the page uses (relative links: move or zip the
two together). The page has the same tables (Markdown rendered to HTML), the figures, and
``<audio>`` players for the first few utterances of every evaluation:

* codec: the original, then every reconstruction (``recon/<system>/<utt>.wav``; one per
  bitrate), with the reference text;
* TTS: the prompt crop and the synthesized outputs, with the prompt transcript and the target
  text, read from the synthesis directory's ``manifest.jsonl`` (``dmtts synthesize --pairs``).

Audio is found from what the evaluation directories hold: reconstructions under ``recon/``;
originals from the evaluated cut manifest (``inputs.json`` ``{"cuts": ...}`` when present, else
the manifest named in ``summary.md`` searched in ``data/cuts/`` of the directories above);
syntheses from a sibling directory whose ``manifest.jsonl`` names the evaluated utterances
(``exp/tts/synth`` next to ``exp/tts/eval``), or ``inputs.json`` ``{"synth_dir": ...}``.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Sequence

from dmtts.eval.report_sections import capped_warnings, eval_section
from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)

FILES_SUFFIX = "_files"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; }
audio { width: 190px; height: 32px; }
img { max-width: 100%; border: 1px solid #ddd; }
.text { max-width: 320px; font-size: 0.9em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.2em; }
"""


# -- Markdown (the subset our summaries use) -> HTML ---------------------------------------------
def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str) -> str:
    """Headings, pipe tables, bullet lists and paragraphs (what summary.md and the significance
    tables use); everything is escaped."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            header = _row(line)
            i += 2
            body = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                body.append(_row(lines[i]))
                i += 1
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>")
            for r in body:
                cells = "".join(f"<td class=\"num\">{_inline(c)}</td>" if re.fullmatch(r"[-+]?[\d.]+%?", c)
                                else f"<td>{_inline(c)}</td>" for c in r)
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
            continue
        m = re.match(r"^(#{1,4})\s+(.*)", line)
        if m:
            level = min(len(m.group(1)) + 1, 5)  # the page's own title is the only <h1>
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


# -- finding the audio -------------------------------------------------------------------------
def _inputs(eval_dir: Path) -> dict:
    p = eval_dir / "inputs.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}


def _find_cuts(eval_dir: Path) -> Path | None:
    """The cut manifest an evaluation ran on (see the module docstring)."""
    given = _inputs(eval_dir).get("cuts")
    if given and Path(given).is_file():
        return Path(given)
    summary = eval_dir / "summary.md"
    m = re.search(r"\(\d+ utterances, ([^)]+\.jsonl(?:\.gz)?)\)", summary.read_text()) if summary.is_file() else None
    if not m:
        return None
    for parent in eval_dir.resolve().parents:
        candidate = parent / "data" / "cuts" / m.group(1)
        if candidate.is_file():
            return candidate
    return None


def _utt_ids(eval_dir: Path, limit: int) -> list[str]:
    for p in sorted(eval_dir.glob("scores_*.csv")):
        with open(p, newline="") as f:
            ids = sorted(r["utt_id"] for r in csv.DictReader(f) if r.get("utt_id"))
        if ids:
            return ids[:limit]
    return []


def _references(eval_dir: Path) -> dict[str, str]:
    for p in sorted(eval_dir.glob("transcripts_*.tsv")):
        with open(p, newline="") as f:
            return {r["utt_id"]: r["reference"] for r in csv.DictReader(f, delimiter="\t")}
    return {}


def _bitrates(eval_dir: Path) -> dict[str, str]:
    p = eval_dir / "summary.csv"
    if not p.is_file():
        return {}
    with open(p, newline="") as f:
        return {r["system"]: r.get("bitrate_kbps", "") for r in csv.DictReader(f)}


def _synth_manifest(eval_dir: Path, utt_ids: Sequence[str]) -> list[dict]:
    """Records of the synthesis manifest whose cut ids are the evaluated utterances."""
    candidates = []
    given = _inputs(eval_dir).get("synth_dir")
    if given:
        candidates.append(Path(given) / "manifest.jsonl")
    candidates += sorted(eval_dir.resolve().parent.glob("*/manifest.jsonl"))
    wanted = set(utt_ids)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except ValueError:
            continue
        if wanted and wanted <= {r.get("cut_id") for r in records}:
            return [r for r in records if r.get("cut_id") in wanted]
    return []


# -- the page ----------------------------------------------------------------------------------
class _Assets:
    """Copies files into ``report_files/`` and returns their relative links."""

    def __init__(self, html_path: Path):
        self.dir = html_path.with_name(html_path.stem + FILES_SUFFIX)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.count = 0

    def _name(self, name: str) -> Path:
        self.count += 1
        return self.dir / f"{self.count:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"

    def copy(self, src: Path) -> str:
        dst = self._name(src.name)
        shutil.copyfile(src, dst)
        return f"{self.dir.name}/{dst.name}"

    def wav(self, wav, sample_rate: int, name: str) -> str:
        from dmtts.audio import save_audio

        dst = self._name(name)
        save_audio(dst, wav, sample_rate)
        return f"{self.dir.name}/{dst.name}"


def _player(link: str | None) -> str:
    if not link:
        return "<td>–</td>"
    return f'<td><audio controls preload="auto" src="{html.escape(link)}"></audio></td>'


def _codec_players(eval_dir: Path, assets: _Assets, n: int) -> str:
    utts = _utt_ids(eval_dir, n)
    recon = eval_dir / "recon"
    systems = sorted(p.name for p in recon.iterdir() if p.is_dir()) if recon.is_dir() else []
    if not utts or not systems:
        return ""
    originals = {}
    cuts_path = _find_cuts(eval_dir)
    if cuts_path is not None:
        from dmtts.data.subsets import load_cuts

        wanted = set(utts)
        for cut in load_cuts(cuts_path):
            if cut.id in wanted:
                try:
                    originals[cut.id] = assets.wav(cut.load_audio()[0], cut.sampling_rate, f"{cut.id}_original.wav")
                except Exception as e:  # noqa: BLE001 - a missing original leaves an empty cell
                    logger.warning("report.html: cannot load the original audio of '%s': %s", cut.id, e)
    else:
        logger.warning("report.html: the cut manifest of '%s' was not found; no original audio", eval_dir)
    rates = _bitrates(eval_dir)
    refs = _references(eval_dir)
    head = "<tr><th>utterance</th><th>text</th><th>original</th>" + "".join(
        f"<th>{html.escape(s)}" + (f"<br>{html.escape(rates[s])} kbps" if rates.get(s) else "") + "</th>"
        for s in systems) + "</tr>"
    rows = []
    for u in utts:
        cells = [_player(assets.copy(recon / s / f"{u}.wav") if (recon / s / f"{u}.wav").is_file() else None)
                 for s in systems]
        rows.append(f"<tr><td>{html.escape(u)}</td><td class=\"text\">{html.escape(refs.get(u, ''))}</td>"
                    f"{_player(originals.get(u))}{''.join(cells)}</tr>")
    return "<h3>Listen</h3><table>" + head + "".join(rows) + "</table>"


def _tts_players(eval_dir: Path, assets: _Assets, n: int) -> str:
    utts = _utt_ids(eval_dir, n)
    records = _synth_manifest(eval_dir, utts)
    if not records:
        logger.warning("report.html: no synthesis manifest found for '%s'; no TTS players", eval_dir)
        return ""
    rows = []
    for r in sorted(records, key=lambda r: (r["cut_id"], r.get("repeat", 0))):
        wav = Path(r["path"])
        prompt = Path(r["prompt_path"]) if r.get("prompt_path") else None
        rows.append(
            f"<tr><td>{html.escape(r['id'])}</td>"
            f"<td class=\"text\">{html.escape(r.get('prompt_text') or '')}</td>"
            f"{_player(assets.copy(prompt) if prompt and prompt.is_file() else None)}"
            f"<td class=\"text\">{html.escape(r.get('target_text') or '')}</td>"
            f"{_player(assets.copy(wav) if wav.is_file() else None)}"
            f"<td class=\"num\">{r.get('duration', '')}</td></tr>")
    return ("<h3>Listen</h3><table><tr><th>output</th><th>prompt transcript</th><th>prompt (3 s)</th>"
            "<th>target text</th><th>synthesis</th><th>seconds</th></tr>" + "".join(rows) + "</table>")


def write_html_report(out: str | Path, sections: Sequence[tuple[str, str, Path | None]], figures: Sequence[Path] = (),
                      stamp: str = "", n_utts: int = 3) -> Path:
    """Write ``out`` (report.html) and its ``report_files/`` folder.

    ``sections``: ``(kind, markdown, eval_dir)`` with kind ``codec`` or ``tts``; the markdown is
    the section of report.md (tables), the eval dir is where its figure and audio are found.
    """
    out = Path(out)
    assets = _Assets(out)
    body = ["<h1>dmtts evaluation report</h1>" + (f"<p>{html.escape(stamp)}</p>" if stamp else "")]
    for kind, md, eval_dir in sections:
        body.append(markdown_to_html(md))
        if eval_dir is None:
            continue
        fig = eval_dir / "mel_spectrograms.png"
        if fig.is_file():
            body.append(f'<h3>Mel spectrograms</h3><img alt="mel spectrograms" src="{html.escape(assets.copy(fig))}">')
        body.append(_codec_players(eval_dir, assets, n_utts) if kind == "codec" else _tts_players(eval_dir, assets, n_utts))
    if figures:
        body.append("<h2>Training curves</h2>")
        for f in figures:
            body.append(f'<p>{html.escape(str(f))}</p><img alt="{html.escape(Path(f).name)}" '
                        f'src="{html.escape(assets.copy(Path(f)))}">')
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dmtts evaluation report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
    atomic_write_text(out, page)
    return out


def html_report_for(out: str | Path, codec_eval: Sequence[Path] = (), tts_eval: Sequence[Path] = (),
                    figures: Sequence[Path] = (), stamp: str = "", n_utts: int = 3) -> Path:
    """``report.html`` for the same evaluation directories as ``report.md`` (see build_report)."""
    several = len(codec_eval) + len(tts_eval) > 2
    warnings = "".join(f"{w}\n\n" for w in capped_warnings([*codec_eval, *tts_eval]))
    sections = [("warnings", warnings, None)] if warnings else []
    for kind, dirs, command in (("codec", codec_eval, "dmtts eval codec"), ("tts", tts_eval, "dmtts eval tts")):
        for d in dirs:
            text, _ = eval_section(d, kind if kind == "codec" else "TTS", command)
            title = f"## {'Codec' if kind == 'codec' else 'TTS'}: {d}\n\n" if several else ""
            sections.append((kind, title + text, Path(d)))
    return write_html_report(out, sections, [Path(f) for f in figures], stamp, n_utts)


__all__ = ["write_html_report", "html_report_for", "markdown_to_html", "FILES_SUFFIX"]
