"""Corpus preparation: local corpora -> lhotse manifests and 16 kHz cut sets.

Outputs (``OUT`` is ``--output-dir``)::

    OUT/manifests/<corpus>_recordings_<part>.jsonl.gz
    OUT/manifests/<corpus>_supervisions_<part>.jsonl.gz
    OUT/cuts/<corpus>_cuts_<part>.jsonl.gz          (16 kHz, resampled lazily by lhotse)

LibriSpeech, LibriTTS and VCTK go through lhotse's recipes; Libri-Heavy is read from its
official cut manifests with audio paths re-rooted to a local LibriLight copy; the demo corpus
is read like LibriSpeech and split by utterance. Audio files that soundfile cannot open are
reported and left out (lhotse's recipes would abort the whole corpus on the first one): the
recipe then runs on a symlinked view of the corpus without them. Parts whose cuts already exist
are skipped, and every file is written atomically.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import soundfile as sf
from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest_lazy
from lhotse.utils import fastcopy

from dmtts.audio import SAMPLE_RATE
from dmtts.data.transcript_norm import normalize_transcript
from dmtts.errors import DmttsError
from dmtts.utils import atomic_path, require_dir

logger = logging.getLogger(__name__)

CORPORA = ("librispeech", "libritts", "vctk", "libriheavy", "demo")
LIBRISPEECH_PARTS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
                     "train-clean-360", "train-other-500", "dev-clean-2", "train-clean-5")
LIBRITTS_PARTS = LIBRISPEECH_PARTS[:7]
LIBRIHEAVY_PARTS = ("small", "medium", "large", "dev", "test_clean", "test_other",
                    "test_clean_large", "test_other_large")
DEMO_PARTS = ("train", "dev", "test")


@dataclass
class PrepareOptions:
    """Options shared by all preparers."""

    num_jobs: int = 1
    min_duration: float | None = None  # cuts shorter than this (s) are dropped
    max_duration: float | None = None  # cuts longer than this (s) are dropped
    text_norm: str = "clean"  # see dmtts.data.transcript_norm
    overwrite: bool = False  # redo parts whose cuts already exist
    seed: int = 42  # demo train/dev/test split
    held_out_speakers: int = 1  # demo: speakers kept out of train (zero-shot tests)
    trim_silence: bool = False  # cut leading/trailing silence (dmtts.data.trim)
    trim_threshold_db: float = 40.0  # silence: frames this far below the cut's loudest frame


@dataclass
class PrepareReport:
    """What a preparation did, per part."""

    cuts: dict[str, Path] = field(default_factory=dict)
    num_cuts: dict[str, int] = field(default_factory=dict)
    skipped_parts: list[str] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{part}: {self.num_cuts[part]} cuts -> {path}" for part, path in self.cuts.items()]
        lines += [f"{part}: already prepared, skipped" for part in self.skipped_parts]
        lines += [f"{part}: {n} cuts outside the duration limits dropped" for part, n in self.filtered.items() if n]
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable audio file(s) skipped:")
            lines += [f"  {p}" for p in self.unreadable[:20]]
            if len(self.unreadable) > 20:
                lines.append(f"  ... and {len(self.unreadable) - 20} more")
        return "\n".join(lines)


def manifest_path(output_dir: Path, corpus: str, kind: str, part: str) -> Path:
    return Path(output_dir) / "manifests" / f"{corpus}_{kind}_{part}.jsonl.gz"


def cuts_path(output_dir: Path, corpus: str, part: str) -> Path:
    return Path(output_dir) / "cuts" / f"{corpus}_cuts_{part}.jsonl.gz"


def write_manifest(manifest, path: Path) -> None:
    """Write any lhotse manifest atomically."""
    with atomic_path(path) as tmp:
        manifest.to_file(tmp)


# ---------------------------------------------------------------------------------------------
# Unreadable audio: find it, and hide it from lhotse's recipes.

def find_unreadable(paths: Iterable[Path], num_jobs: int = 1) -> list[Path]:
    """The audio files soundfile cannot open (corrupt, truncated header, wrong format)."""

    def bad(path: Path) -> bool:
        try:
            info = sf.info(str(path))
            return info.frames <= 0
        except Exception:
            return True

    paths = sorted(paths)
    with ThreadPoolExecutor(max(1, num_jobs)) as ex:
        flags = list(ex.map(bad, paths))
    return [p for p, is_bad in zip(paths, flags) if is_bad]


def _symlink_view(src_root: Path, exclude: set[Path], view_root: Path) -> None:
    """Mirror ``src_root`` under ``view_root`` with symlinks, leaving out ``exclude``."""
    for dirpath, _, filenames in os.walk(src_root, followlinks=True):
        rel = Path(dirpath).relative_to(src_root)
        (view_root / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            src = Path(dirpath) / name
            if src not in exclude:
                os.symlink(src.resolve(), view_root / rel / name)


def _reroot_recordings(recordings: RecordingSet, view_root: Path, real_root: Path) -> RecordingSet:
    view, real = str(view_root), str(real_root)

    def fix(rec):
        sources = [fastcopy(s, source=real + s.source[len(view):]) if s.source.startswith(view) else s
                   for s in rec.sources]
        return fastcopy(rec, sources=sources)

    return RecordingSet.from_recordings(fix(r) for r in recordings)


def _run_on_readable(corpus_dir: Path, exclude: set[Path], recipe: Callable[[Path], dict]) -> dict:
    """Run a lhotse recipe on ``corpus_dir``, or on a view without ``exclude`` when it is non-empty.

    ``recipe(root)`` returns ``{part: {"recordings": ..., "supervisions": ...}}``.
    """
    if not exclude:
        return recipe(corpus_dir)
    with tempfile.TemporaryDirectory(prefix="dmtts-view-") as tmp:
        view_root = Path(tmp) / corpus_dir.name
        _symlink_view(corpus_dir, exclude, view_root)
        manifests = recipe(view_root)
        for part in manifests.values():
            part["recordings"] = _reroot_recordings(part["recordings"], view_root, corpus_dir.resolve())
        return manifests


# ---------------------------------------------------------------------------------------------
# Shared finishing: text normalisation, manifests, 16 kHz cuts, duration filters.

def _normalise_supervisions(supervisions: SupervisionSet, text_norm: str) -> SupervisionSet:
    def fix(sup):
        custom = dict(sup.custom or {})
        custom.setdefault("orig_text", sup.text)
        return fastcopy(sup, text=normalize_transcript(sup.text or "", text_norm), custom=custom)

    return SupervisionSet.from_segments(fix(s) for s in supervisions)


def _cuts_from_manifests(recordings: RecordingSet, supervisions: SupervisionSet) -> CutSet:
    """One cut per recording, named after its (single) utterance so ids are stable across runs."""
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    return CutSet.from_cuts(fastcopy(c, id=c.supervisions[0].id) if len(c.supervisions) == 1 else c
                            for c in cuts)


def _to_cuts(cuts: CutSet, options: PrepareOptions, report: PrepareReport, part: str) -> CutSet:
    cuts = cuts.resample(SAMPLE_RATE).to_eager()
    if options.trim_silence:
        from dmtts.data.trim import TrimOptions, trim_silence

        cuts = trim_silence(cuts, TrimOptions(threshold_db=options.trim_threshold_db), options.num_jobs)
    before = len(cuts)
    if options.min_duration is not None:
        cuts = cuts.filter(lambda c: c.duration >= options.min_duration).to_eager()
    if options.max_duration is not None:
        cuts = cuts.filter(lambda c: c.duration <= options.max_duration).to_eager()
    report.filtered[part] = before - len(cuts)
    return cuts


def _finish_part(corpus: str, part: str, recordings: RecordingSet, supervisions: SupervisionSet,
                 output_dir: Path, options: PrepareOptions, report: PrepareReport) -> None:
    supervisions = _normalise_supervisions(supervisions, options.text_norm)
    write_manifest(recordings, manifest_path(output_dir, corpus, "recordings", part))
    write_manifest(supervisions, manifest_path(output_dir, corpus, "supervisions", part))
    cuts = _to_cuts(_cuts_from_manifests(recordings, supervisions),
                    options, report, part)
    _write_cuts(cuts, output_dir, corpus, part, report)


def _write_cuts(cuts: CutSet, output_dir: Path, corpus: str, part: str, report: PrepareReport) -> None:
    path = cuts_path(output_dir, corpus, part)
    write_manifest(cuts, path)
    report.cuts[part] = path
    report.num_cuts[part] = len(cuts)


def _todo(parts: Iterable[str], output_dir: Path, corpus: str, options: PrepareOptions,
          report: PrepareReport) -> list[str]:
    todo = []
    for part in parts:
        if not options.overwrite and cuts_path(output_dir, corpus, part).is_file():
            report.skipped_parts.append(part)
        else:
            todo.append(part)
    return todo


# ---------------------------------------------------------------------------------------------
# Corpora.

def _find_parts(corpus_dir: Path, known: Iterable[str], parts: list[str] | None, corpus: str,
                marker: str) -> list[str]:
    if parts:
        for part in parts:
            part_dir = corpus_dir / part
            if not part_dir.is_dir():
                raise DmttsError(f"{corpus} part '{part}' not found: expected directory '{part_dir}'")
            if next(part_dir.rglob(marker), None) is None:
                raise DmttsError(f"'{part_dir}' does not look like a {corpus} part: no {marker} files in it")
        return list(parts)
    found = [p for p in known if (corpus_dir / p).is_dir()]
    if not found:
        raise DmttsError(
            f"no {corpus} parts found in '{corpus_dir}': expected sub-directories such as "
            f"{', '.join(list(known)[:3])} (pass the directory that contains them as --corpus-dir)"
        )
    return found


def _prepare_libri_parts(corpus: str, lhotse_prepare: Callable, known: Iterable[str], marker: str,
                         audio_glob: str, corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                         options: PrepareOptions, report: PrepareReport) -> None:
    """LibriSpeech and LibriTTS: one lhotse recipe call per part, unreadable audio hidden."""
    parts = _find_parts(corpus_dir, known, parts, {"librispeech": "LibriSpeech", "libritts": "LibriTTS"}[corpus],
                        marker)
    for part in _todo(parts, output_dir, corpus, options, report):
        bad = find_unreadable((corpus_dir / part).rglob(audio_glob), options.num_jobs)
        report.unreadable += bad
        manifests = _run_on_readable(
            corpus_dir, set(bad),
            lambda root: lhotse_prepare(root, dataset_parts=[part], num_jobs=options.num_jobs))
        _finish_part(corpus, part, manifests[part]["recordings"], manifests[part]["supervisions"],
                     output_dir, options, report)


def prepare_librispeech(corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                        options: PrepareOptions, report: PrepareReport) -> None:
    from lhotse.recipes import prepare_librispeech as lhotse_prepare

    _prepare_libri_parts("librispeech", lhotse_prepare, LIBRISPEECH_PARTS, "*.trans.txt", "*.flac",
                         corpus_dir, output_dir, parts, options, report)


def prepare_libritts(corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                     options: PrepareOptions, report: PrepareReport) -> None:
    from lhotse.recipes import prepare_libritts as lhotse_prepare

    _prepare_libri_parts("libritts", lhotse_prepare, LIBRITTS_PARTS, "*.trans.tsv", "*.wav",
                         corpus_dir, output_dir, parts, options, report)


def prepare_vctk(corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                 options: PrepareOptions, report: PrepareReport) -> None:
    from lhotse.recipes import prepare_vctk as lhotse_prepare

    if parts and list(parts) != ["all"]:
        raise DmttsError("VCTK has a single part: pass --parts all or leave --parts out")
    if not (corpus_dir / "speaker-info.txt").is_file() or not (corpus_dir / "txt").is_dir():
        raise DmttsError(
            f"'{corpus_dir}' does not look like VCTK: expected speaker-info.txt, txt/ and "
            "wav48/ (or wav48_silence_trimmed/ for the Edinburgh release)"
        )
    edinburgh = (corpus_dir / "wav48_silence_trimmed").is_dir()
    audio_dir = corpus_dir / ("wav48_silence_trimmed" if edinburgh else "wav48")
    if not audio_dir.is_dir():
        raise DmttsError(f"VCTK audio directory '{audio_dir}' is missing")
    if not _todo(["all"], output_dir, "vctk", options, report):
        return
    audio_files = list(audio_dir.rglob("*.flac" if edinburgh else "*.wav"))
    bad = find_unreadable(audio_files, options.num_jobs)
    report.unreadable += bad
    readable_ids = {p.stem for p in audio_files} - {p.stem for p in bad}
    mic_suffix = "_mic2" if edinburgh else ""
    # lhotse's recipe looks up the audio of every transcript and fails on a missing one, so
    # transcripts without (readable) audio are hidden from it too.
    orphan_txt = {p for p in (corpus_dir / "txt").rglob("*.txt") if p.stem + mic_suffix not in readable_ids}
    if orphan_txt:
        logger.warning("%d VCTK transcript(s) have no readable audio and are skipped", len(orphan_txt))
    manifests = _run_on_readable(
        corpus_dir, set(bad) | orphan_txt,
        lambda root: {"all": lhotse_prepare(root, use_edinburgh_vctk_url=edinburgh)})
    _finish_part("vctk", "all", manifests["all"]["recordings"], manifests["all"]["supervisions"],
                 output_dir, options, report)


def _reroot_source(source: str, audio_dir: Path, strip: int | None) -> tuple[str | None, int | None]:
    """Map an official Libri-Heavy audio path into ``audio_dir``.

    Official paths look like ``download/librilight/small/100/<book>/<file>.flac``; the local copy
    is ``<audio_dir>/small/100/<book>/<file>.flac``. The number of leading components to strip is
    found on the first file and reused.
    """
    parts = Path(source).parts
    candidates = [strip] if strip is not None else range(len(parts))
    for n in candidates:
        local = audio_dir.joinpath(*parts[n:])
        if local.is_file():
            return str(local), n
    return None, strip


def prepare_libriheavy(corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                       options: PrepareOptions, report: PrepareReport, audio_dir: Path | None) -> None:
    if audio_dir is None:
        raise DmttsError("libriheavy needs --audio-dir pointing at the local LibriLight audio "
                         "(the directory holding small/, medium/, large/)")
    audio_dir = require_dir(audio_dir, "--audio-dir", "pass the LibriLight audio directory")
    available = [p for p in LIBRIHEAVY_PARTS if (corpus_dir / f"libriheavy_cuts_{p}.jsonl.gz").is_file()]
    if parts:
        missing = [p for p in parts if p not in available]
        if missing:
            raise DmttsError(f"Libri-Heavy manifest(s) not found in '{corpus_dir}': "
                             + ", ".join(f"libriheavy_cuts_{p}.jsonl.gz" for p in missing))
    elif not available:
        raise DmttsError(f"no libriheavy_cuts_<part>.jsonl.gz manifests in '{corpus_dir}': pass the "
                         "directory with the official Libri-Heavy manifests as --corpus-dir")
    strip: int | None = None
    for part in _todo(parts or available, output_dir, "libriheavy", options, report):
        manifest = corpus_dir / f"libriheavy_cuts_{part}.jsonl.gz"
        try:
            official = list(load_manifest_lazy(manifest))
        except Exception as e:
            raise DmttsError(f"cannot read Libri-Heavy manifest '{manifest}': {e}") from None
        local_source: dict[str, str | None] = {}
        cuts, recordings, supervisions = [], {}, []
        for cut in official:
            rec = cut.recording
            if rec.id not in local_source:
                new_source, strip = _reroot_source(rec.sources[0].source, audio_dir, strip)
                if new_source is not None and find_unreadable([Path(new_source)]):
                    report.unreadable.append(Path(new_source))
                    new_source = None
                elif new_source is None:
                    report.unreadable.append(audio_dir / Path(rec.sources[0].source).name)
                local_source[rec.id] = new_source
            if local_source[rec.id] is None:
                continue
            rec = fastcopy(rec, sources=[fastcopy(rec.sources[0], source=local_source[rec.id])])
            recordings[rec.id] = rec
            sups = []
            for sup in cut.supervisions:
                custom = dict(sup.custom or {})
                texts = custom.get("texts") or [sup.text or ""]
                sups.append(fastcopy(sup, text=texts[0], custom=custom))
            supervisions.extend(sups)
            cuts.append(fastcopy(cut, recording=rec, supervisions=sups))
        supervision_set = _normalise_supervisions(SupervisionSet.from_segments(supervisions), options.text_norm)
        by_id = {s.id: s for s in supervision_set}
        cuts = [fastcopy(c, supervisions=[by_id[s.id] for s in c.supervisions]) for c in cuts]
        write_manifest(RecordingSet.from_recordings(recordings.values()),
                       manifest_path(output_dir, "libriheavy", "recordings", part))
        write_manifest(supervision_set, manifest_path(output_dir, "libriheavy", "supervisions", part))
        _write_cuts(_to_cuts(CutSet.from_cuts(cuts), options, report, part), output_dir, "libriheavy",
                    part, report)


def split_demo_cuts(cuts: CutSet, seed: int, held_out_speakers: int,
                    dev_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, CutSet]:
    """Split by utterance into train/dev/test; the last ``held_out_speakers`` speakers (sorted by
    id) go entirely to test, so zero-shot synthesis can be tested on voices never trained on."""
    speakers = sorted({c.supervisions[0].speaker for c in cuts})
    if held_out_speakers > len(speakers):
        raise DmttsError(f"cannot hold out {held_out_speakers} of {len(speakers)} speakers: "
                         f"--held-out-speakers must be at most {len(speakers)}")
    # all held out: an evaluation-only corpus (train and dev stay empty)
    held_out = set(speakers[len(speakers) - held_out_speakers:])
    rng = random.Random(seed)
    split: dict[str, list] = {"train": [], "dev": [], "test": []}
    for speaker in speakers:
        spk_cuts = sorted((c for c in cuts if c.supervisions[0].speaker == speaker), key=lambda c: c.id)
        if speaker in held_out:
            split["test"] += spk_cuts
            continue
        rng.shuffle(spk_cuts)
        n_dev = max(1, round(dev_fraction * len(spk_cuts)))
        n_test = max(1, round(test_fraction * len(spk_cuts)))
        split["dev"] += spk_cuts[:n_dev]
        split["test"] += spk_cuts[n_dev:n_dev + n_test]
        split["train"] += spk_cuts[n_dev + n_test:]
    return {part: CutSet.from_cuts(sorted(items, key=lambda c: c.id)) for part, items in split.items()}


def prepare_demo(corpus_dir: Path, output_dir: Path, parts: list[str] | None,
                 options: PrepareOptions, report: PrepareReport) -> None:
    from lhotse.recipes import prepare_librispeech as lhotse_prepare

    if parts and set(parts) - set(DEMO_PARTS):
        raise DmttsError(f"demo parts are {', '.join(DEMO_PARTS)}")
    if next(corpus_dir.rglob("*.trans.txt"), None) is None:
        raise DmttsError(f"'{corpus_dir}' holds no demo corpus (no SPEAKER/CHAPTER/*.trans.txt): "
                         "create it with 'dmtts make-demo-corpus --output-dir DIR'")
    if not _todo(DEMO_PARTS, output_dir, "demo", options, report):
        return
    report.skipped_parts.clear()
    bad = find_unreadable(corpus_dir.rglob("*.flac"), options.num_jobs)
    report.unreadable += bad
    # The demo corpus is one LibriSpeech "part": its own directory.
    corpus_dir = corpus_dir.resolve()
    manifests = _run_on_readable(
        corpus_dir, set(bad),
        lambda root: {"all": lhotse_prepare(root.parent, dataset_parts=[root.name],
                                            num_jobs=options.num_jobs)[root.name]})
    supervisions = _normalise_supervisions(manifests["all"]["supervisions"], options.text_norm)
    recordings = manifests["all"]["recordings"]
    write_manifest(recordings, manifest_path(output_dir, "demo", "recordings", "all"))
    write_manifest(supervisions, manifest_path(output_dir, "demo", "supervisions", "all"))
    all_cuts = _to_cuts(_cuts_from_manifests(recordings, supervisions),
                        options, report, "all")
    for part, cuts in split_demo_cuts(all_cuts, options.seed, options.held_out_speakers).items():
        _write_cuts(cuts, output_dir, "demo", part, report)


def prepare(corpus: str, corpus_dir: str | Path, output_dir: str | Path, parts: list[str] | None = None,
            options: PrepareOptions | None = None, audio_dir: str | Path | None = None) -> PrepareReport:
    """Prepare ``corpus`` found in ``corpus_dir``; see the module docstring for the outputs."""
    if corpus not in CORPORA:
        raise DmttsError(f"unknown corpus '{corpus}'; choose from {', '.join(CORPORA)}")
    options = options or PrepareOptions()
    corpus_dir = require_dir(corpus_dir, f"--corpus-dir for {corpus}",
                             "pass the directory where the corpus was unpacked")
    output_dir = Path(output_dir)
    report = PrepareReport()
    if corpus == "libriheavy":
        prepare_libriheavy(corpus_dir, output_dir, parts, options, report,
                           Path(audio_dir) if audio_dir else None)
    else:
        preparer = {"librispeech": prepare_librispeech, "libritts": prepare_libritts,
                    "vctk": prepare_vctk, "demo": prepare_demo}[corpus]
        preparer(corpus_dir, output_dir, parts, options, report)
    for path in report.unreadable:
        logger.warning("unreadable audio skipped: %s", path)
    return report
