"""Batched, resumable teacher-feature extraction over a lhotse ``CutSet``, one process or sharded
over torchrun ranks (``dmtts.data.sharding``; the manifest is streamed, never loaded whole).
A batch is a block of ``batch_size`` consecutive input positions and rank ``r`` of ``W`` takes
blocks ``k`` with ``k % W == r``: the teachers see the same batches (the same padding) for any
number of processes, so the features are bit-identical whatever the world size.

For an input manifest ``IN = .../<name>.jsonl.gz`` and ``--output-dir OUT`` it writes::

    OUT/<name>_with_feats.jsonl.gz      the cuts that got features, in input order, with custom fields
                                        lm_feats (Array, (n_tokens, D_lm) or (1, D_lm) for cls)
                                        sm_feats (TemporalArray, (T_sm, D_sm), frame_shift 0.02)
                                        lm_text  (only with an ASR: the transcript the LM saw)
    OUT/<name>_skipped.jsonl            one JSON line {"cut_id", "reason"} per cut skipped by the last run
    OUT/<name>_feats/teachers.json      teacher names, dims, targets, layers, ASR, dtype
    OUT/<name>_feats/lm_feats.<unit>.h5 float16 arrays (lhotse NumpyHdf5Writer), one file per commit unit
    OUT/<name>_feats/sm_feats.<unit>.h5
    OUT/<name>_feats/progress/          commit markers of the units + meta.json (input sha256, settings)

Work is committed in units of whole batches, about ``shard_size`` cuts: a unit's HDF5 files are closed and
synced, then its marker is written atomically; only committed units count as done. A re-run,
with any number of ranks, skips every cut of a committed unit and discards HDF5 files of units
that never committed. Ctrl-C / SIGTERM (and any error) commits the cuts finished so far before
exiting, so only a hard kill (SIGKILL, power loss) loses work, at most one unit per rank.
After a barrier rank 0 merges the units into the output manifest in input order.
Unreadable, empty, NaN or too-short audio, and cuts without a transcript, are reported and
skipped (retried on the next run).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dmtts.errors import DmttsError
from dmtts.utils import atomic_write_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FEATS_DTYPE = np.float16
_F16_MAX = float(np.finfo(np.float16).max)


def manifest_stem(path: str | Path) -> str:
    """``data/cuts/demo_cuts_train.jsonl.gz`` -> ``demo_cuts_train``."""
    name = Path(path).name
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_paths(cuts_path: str | Path, output_dir: str | Path) -> dict[str, Path]:
    """Where ``extract_teacher_features`` writes its outputs for ``cuts_path``."""
    out = Path(output_dir)
    stem = manifest_stem(cuts_path)
    feats = out / f"{stem}_feats"
    return {
        "cuts": out / f"{stem}_with_feats.jsonl.gz",
        "skipped": out / f"{stem}_skipped.jsonl",
        "feats_dir": feats,
        "progress_dir": feats / "progress",
        "teachers": feats / "teachers.json",
    }


@dataclass
class ExtractResult:
    output_cuts: Path
    num_input: int
    num_with_feats: int
    num_computed: int
    num_resumed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cuts_per_second(self) -> float:
        return self.num_computed / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- audio loading


def _identity(x):
    return x


def _load_cut_audio(cut) -> tuple[Any, np.ndarray | None, str | None]:
    try:
        c = cut if cut.sampling_rate == SAMPLE_RATE else cut.resample(SAMPLE_RATE)
        audio = np.asarray(c.load_audio(), dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)
        audio = audio.reshape(-1)
        if audio.size == 0:
            return cut, None, "empty audio (0 samples)"
        if not np.isfinite(audio).all():
            return cut, None, "audio contains NaN or infinite samples"
        return cut, audio, None
    except Exception as e:  # corrupt / missing / undecodable audio: report, never crash the run
        msg = " ".join(str(e).split())
        return cut, None, f"cannot load audio: {type(e).__name__}: {msg}"[:400]


class _AudioBatches:
    """Iterable of batches ``({cut_id: input position}, [(cut, wav|None, error|None), ...])``, one per
    block of this rank's remaining cuts; shards the batches across DataLoader workers."""

    def __init__(self, todo_blocks: Callable[[], Iterator[list[tuple[int, Any]]]]):
        self.todo_blocks = todo_blocks

    def __iter__(self) -> Iterator[tuple[dict[str, int], list]]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for number, block in enumerate(self.todo_blocks()):
            if number % nw != wid:
                continue
            index_of = {cut.id: index for index, cut in block}
            if len(index_of) != len(block):
                dup = next(c.id for _, c in block if sum(d.id == c.id for _, d in block) > 1)
                raise DmttsError(f"the input manifest has the cut id '{dup}' twice; cut ids must be unique")
            yield index_of, [_load_cut_audio(cut) for _, cut in block]


def _batch_iterator(todo_blocks, num_workers: int):
    import torch.utils.data

    ds = _AudioBatches(todo_blocks)
    if num_workers <= 0:
        return iter(ds)

    class _DS(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(ds)

    return iter(torch.utils.data.DataLoader(_DS(), batch_size=None, num_workers=num_workers, collate_fn=_identity,
                                            prefetch_factor=2, persistent_workers=False))


# ----------------------------------------------------------------------------- shards


class _Shard:
    """One commit unit of this rank: its cuts and the HDF5 files holding their features."""

    def __init__(self, job, has_lm: bool, has_sm: bool):
        from lhotse import NumpyHdf5Writer

        self.job = job
        self.unit = job.new_unit()
        self.files = []
        self.lm_w = self.sm_w = None
        if has_lm:
            self.files.append(self.unit.data_path("lm_feats", ".h5"))
            self.lm_w = NumpyHdf5Writer(self.files[-1], mode="w")
        if has_sm:
            self.files.append(self.unit.data_path("sm_feats", ".h5"))
            self.sm_w = NumpyHdf5Writer(self.files[-1], mode="w")

    def add(self, index: int, cut, lm: np.ndarray | None, sm: np.ndarray | None, sm_frame_shift: float,
            lm_text: str | None):
        if lm is not None:
            cut = cut.with_custom("lm_feats", self.lm_w.store_array(cut.id, _to_f16(lm)))
        if sm is not None:
            arr = self.sm_w.store_array(cut.id, _to_f16(sm), frame_shift=sm_frame_shift, temporal_dim=0, start=cut.start)
            cut = cut.with_custom("sm_feats", arr)
        if lm_text is not None:
            cut = cut.with_custom("lm_text", lm_text)
        self.unit.add(index, cut.id, cut.to_dict())

    def __len__(self) -> int:
        return len(self.unit)

    def commit(self) -> int:
        """Close the HDF5 files, then commit the unit (fsync, index, marker); returns the cuts committed."""
        for w in (self.lm_w, self.sm_w):
            if w is not None:
                w.close()
        return self.job.commit(self.unit, self.files)


def _to_f16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.clip(x, -_F16_MAX, _F16_MAX).astype(FEATS_DTYPE)


# ----------------------------------------------------------------------------- main entry


def _settings(lm, sm, asr) -> dict:
    """What the features depend on besides the input (whose sha256 the sharding meta keeps)."""
    return {
        "format_version": 2,
        "dtype": "float16",
        "storage": "lhotse NumpyHdf5Writer",
        "lm": lm.info() if lm is not None else None,
        "sm": sm.info() if sm is not None else None,
        "asr": asr.name if asr is not None else "reference",
    }


def _cut_text(cut) -> str:
    return " ".join(s.text.strip() for s in cut.supervisions if s.text and s.text.strip()).strip()


def _run_teachers(items, lm, sm, asr) -> tuple[list, list[tuple[str, str]]]:
    """Run the teachers on loaded items; returns ([(cut, lm, sm, lm_text)], [(cut_id, reason)])."""
    skipped: list[tuple[str, str]] = []
    ok = []
    for cut, wav, err in items:
        if err is not None:
            skipped.append((cut.id, err))
        elif sm is not None and wav.size < getattr(sm, "min_samples", 400):
            skipped.append((cut.id, f"audio too short for the SM teacher ({wav.size} samples)"))
        else:
            ok.append((cut, wav))
    if not ok:
        return [], skipped
    texts: list[str | None] = [None] * len(ok)
    if lm is not None:
        if asr is not None:
            texts = asr.transcribe([w for _, w in ok])
        else:
            texts = [_cut_text(c) for c, _ in ok]
        keep = []
        for (c, w), t in zip(ok, texts):
            if t.strip():
                keep.append(((c, w), t))
            else:
                why = "the ASR returned an empty transcript" if asr is not None else (
                    "the cut has no supervision text (pass --asr to transcribe it)")
                skipped.append((c.id, why))
        ok = [k for k, _ in keep]
        texts = [t for _, t in keep]
        if not ok:
            return [], skipped
    lm_feats = lm.extract(texts) if lm is not None else [None] * len(ok)
    sm_feats = sm.extract([w for _, w in ok]) if sm is not None else [None] * len(ok)
    results = []
    for (c, _), t, lf, sf in zip(ok, texts, lm_feats, sm_feats):
        results.append((c, lf, sf, t if (lm is not None and asr is not None) else None))
    return results, skipped


def _process_batch(items, lm, sm, asr):
    """Like ``_run_teachers`` but isolates a failing cut: a batch error is retried cut by cut."""
    try:
        return _run_teachers(items, lm, sm, asr)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        if len(items) == 1:
            return [], [(items[0][0].id, f"teacher failed: {type(e).__name__}: {e}"[:500])]
        results, skipped = [], []
        for item in items:
            r, s = _process_batch([item], lm, sm, asr)
            results += r
            skipped += s
        return results, skipped


def extract_teacher_features(
    cuts_path: str | Path,
    output_dir: str | Path,
    lm=None,
    sm=None,
    asr=None,
    batch_size: int = 8,
    num_workers: int = 0,
    shard_size: int = 200,
    overwrite: bool = False,
    progress: bool = True,
    ctx=None,
) -> ExtractResult | None:
    """Extract teacher features for every cut of ``cuts_path`` into ``output_dir`` (see module doc).

    ``lm`` is an ``LMTeacher`` (or None), ``sm`` an SM teacher from ``load_sm_teacher`` (or None),
    ``asr`` an ASR object from ``dmtts.teachers.asr`` or None for the cuts' reference text.
    ``ctx`` is this process's ``ShardContext`` (default: one process); every rank calls this
    function, rank 0 returns the result of the whole job, the other ranks None.
    """
    from tqdm import tqdm

    from dmtts.data.sharding import ShardContext, ShardedJob, sigterm_as_interrupt

    ctx = ctx or ShardContext()
    if lm is None and sm is None:
        raise DmttsError("no teacher given: pass --lm-dir and/or --sm-dir / --sm-ct2-dir")
    if batch_size < 1 or shard_size < 1:
        raise DmttsError("--batch-size and --shard-size must be at least 1")
    cuts_path = Path(cuts_path)
    if not cuts_path.is_file():
        raise DmttsError(f"--cuts '{cuts_path}' does not exist: pass a lhotse cut manifest (e.g. data/cuts/demo_cuts_train.jsonl.gz)")
    if asr is not None and lm is None:
        log.warning("--asr is only used for LM transcripts and no LM teacher was given; ignoring it")
        asr = None
    paths = output_paths(cuts_path, output_dir)
    settings = _settings(lm, sm, asr)

    # --- resume bookkeeping: rank 0 checks the settings and cleans up, the others wait
    job = ShardedJob(cuts_path, paths["progress_dir"], ctx, settings=settings, overwrite=overwrite,
                     data_dir=paths["feats_dir"], block_size=batch_size)
    if ctx.is_main:
        if overwrite:
            for key in ("cuts", "skipped"):
                paths[key].unlink(missing_ok=True)
        atomic_write_text(paths["teachers"], json.dumps(settings, indent=2) + "\n")
    resumed = job.num_done
    if resumed and ctx.is_main:
        log.info("resuming: %d of %d cuts already have features, %d to go", resumed, job.num_items,
                 job.num_items - resumed)

    # --- main loop: this rank's shard
    shard: _Shard | None = None
    skipped: list[tuple[int, str, str]] = []
    computed = 0
    sm_frame_shift = getattr(sm, "frame_shift", 0.02)
    t0 = time.time()
    finished = False
    desc = "teachers" + (f" (rank 0 of {ctx.world_size})" if ctx.is_distributed else "")
    bar = tqdm(total=job.num_todo, unit="cut", desc=desc, disable=not progress or not ctx.is_main or job.num_todo == 0,
               mininterval=1.0, dynamic_ncols=True)
    try:
        with sigterm_as_interrupt():
            if job.num_todo:
                for index_of, items in _batch_iterator(job.todo_blocks, num_workers):
                    results, bad = _process_batch(items, lm, sm, asr)
                    for cut_id, reason in bad:
                        log.warning("skipping cut %s: %s", cut_id, reason)
                    skipped += [(index_of[cut_id], cut_id, reason) for cut_id, reason in bad]
                    for cut, lf, sf, text in results:
                        if shard is None:
                            shard = _Shard(job, lm is not None, sm is not None)
                        shard.add(index_of[cut.id], cut, lf, sf, sm_frame_shift, text)
                    # commit whole batches only: a resumed run never splits a batch differently
                    if shard is not None and len(shard) >= shard_size:
                        computed += shard.commit()
                        shard = None
                    bar.update(len(items))
                    if skipped:
                        bar.set_postfix(skipped=len(skipped), refresh=False)
        finished = True
    finally:
        bar.close()
        if shard is not None:  # Ctrl-C, SIGTERM or an error: keep what is finished
            n = shard.commit()
            computed += n
            if n and not finished:
                log.warning("interrupted: committed the %d finished cuts of the current unit; "
                            "re-run the same command to resume", n)
    seconds = time.time() - t0

    # --- outputs: rank 0 merges every rank's units in input order
    job.finish()
    gathered = ctx.gather((skipped, computed, seconds))
    if not ctx.is_main:
        return None
    skipped = sorted(s for rank_skipped, _, _ in gathered for s in rank_skipped)
    computed = sum(c for _, c, _ in gathered)
    seconds = max(t for _, _, t in gathered)
    total = job.write_merged(paths["cuts"])
    atomic_write_text(paths["skipped"], "".join(json.dumps({"cut_id": c, "reason": r}) + "\n" for _, c, r in skipped))
    if total == 0:
        paths["cuts"].unlink()
        raise DmttsError(
            f"no cut of '{cuts_path}' got features ({len(skipped)} skipped; reasons in {paths['skipped']})"
        )
    return ExtractResult(paths["cuts"], job.num_items, total, computed, resumed,
                         [(c, r) for _, c, r in skipped], seconds)
