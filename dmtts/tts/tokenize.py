"""``dmtts tokenize``: encode cuts into codec codes (int16 ``(T, n_q)``, ``cut.codes``).

Runs as one process or sharded over torchrun ranks (``dmtts.data.sharding``), streaming the
manifest: the cuts are cut into chunks of ``chunk_size`` consecutive input positions, and rank
``r`` of ``W`` takes chunks ``k`` with ``k % W == r``. A chunk is sorted by duration and encoded
in batches of about ``batch_duration`` seconds, without padding (``DMCodec.encode_batch``: a
cut's codes equal encoding it alone); as chunks do not depend on the world size, neither do the
batches, so every number of processes writes the same codes. A chunk is one commit unit.

Outputs, for ``--cuts IN/<name>.jsonl.gz`` and ``--output-dir OUT``::

    OUT/<name>.jsonl.gz            the tokenized cuts, in input order (rank 0 merges, atomically)
    OUT/<name>_codes/codes.<unit>.h5        codes of one unit (lhotse NumpyHdf5Writer, lossless)
    OUT/<name>_codes/progress/              commit markers + meta.json (input sha256, codec digest)
    OUT/<name>_failed.txt          cuts that failed in the last run (unreadable audio, ...), retried
                                   on the next run

Re-running (with any world size) skips every cut of a committed unit; Ctrl-C / SIGTERM commits
the cuts finished so far, so a hard kill loses at most one unit per rank. Codes from another
codec or another version of the input are refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _batches(items, batch_duration: float):
    """``(index, cut)`` items in duration-sorted batches of at most ``batch_duration`` seconds (at
    least one cut each)."""
    batch, total = [], 0.0
    for item in sorted(items, key=lambda item: item[1].duration):
        if batch and total + item[1].duration > batch_duration:
            yield batch
            batch, total = [], 0.0
        batch.append(item)
        total += item[1].duration
    if batch:
        yield batch


def codec_digest(codec) -> str:
    """sha256 over the codec's parameters and buffers: codes from another codec are never mixed."""
    sha = hashlib.sha256()
    for name, tensor in sorted(codec.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def output_paths(cuts_path: str | Path, output_dir: str | Path) -> dict[str, Path]:
    """Where ``tokenize_cuts`` writes its outputs for ``cuts_path``."""
    cuts_path, output_dir = Path(cuts_path), Path(output_dir)
    stem = _stem(cuts_path)
    codes = output_dir / f"{stem}_codes"
    return {"cuts": output_dir / cuts_path.name, "codes_dir": codes, "progress_dir": codes / "progress",
            "failed": output_dir / f"{stem}_failed.txt"}


class _Encoder:
    """Encodes batches of cuts and stores the codes in the HDF5 file of the current unit."""

    def __init__(self, codec, device):
        self.codec = codec
        self.device = device

    def encode(self, batch, writer_for, unit, failed):
        from dmtts.data.codes import attach_codes, check_frames

        sr = self.codec.sample_rate
        wavs, good = [], []
        for index, c in batch:
            try:
                audio = c.resample(sr).load_audio()
                if audio.ndim == 2:
                    audio = audio.mean(axis=0)
                if audio.size == 0 or not np.isfinite(audio).all():
                    raise ValueError("audio is empty or has NaN/inf samples")
                wavs.append(audio.astype(np.float32))
                good.append((index, c))
            except Exception as e:  # noqa: BLE001 - report any unreadable cut and move on
                failed.append((index, c.id, f"{type(e).__name__}: {e}"))
        if not good:
            return
        lens = [len(w) for w in wavs]
        try:
            with torch.inference_mode():
                # unpadded: each cut's codes equal encoding it alone (as a synthesis prompt is)
                codes = self.codec.encode_batch([torch.from_numpy(w).to(self.device) for w in wavs],
                                                n_q=self.codec.n_q)
        except Exception as e:  # noqa: BLE001
            failed.extend((i, c.id, f"encode failed: {type(e).__name__}: {e}") for i, c in good)
            return
        for k, (index, c) in enumerate(good):
            frames = self.codec.num_frames(lens[k])
            try:
                check_frames(frames, c.duration)
            except DmttsError as e:
                failed.append((index, c.id, str(e)))
                continue
            tokenized = attach_codes(c, writer_for(), codes[k].cpu().numpy()[:, :frames].T)
            unit.add(index, c.id, tokenized.to_dict())


def tokenize_cuts(codec, cuts_path, output_dir, batch_duration: float = 60.0, device="cpu", progress=True,
                  chunk_size: int = 1000, ctx=None, overwrite: bool = False) -> Path:
    """Tokenize ``cuts_path`` into ``output_dir`` (see the module doc); returns the output manifest.

    ``ctx`` is this process's ``ShardContext`` (default: one process). Every rank calls this; the
    merged manifest exists once rank 0 returns.
    """
    from lhotse.features.io import NumpyHdf5Writer, close_cached_file_handles
    from tqdm import tqdm

    from dmtts.data.sharding import ShardContext, ShardedJob, sigterm_as_interrupt
    from dmtts.utils import atomic_write_text, require_file

    ctx = ctx or ShardContext()
    if batch_duration <= 0 or chunk_size < 1:
        raise DmttsError("--batch-duration must be positive and --chunk-size at least 1")
    cuts_path = require_file(cuts_path, "--cuts", "prepare cuts with 'dmtts prepare ...'")
    paths = output_paths(cuts_path, output_dir)
    if paths["cuts"].resolve() == cuts_path.resolve():
        raise DmttsError(f"--output-dir '{output_dir}' would overwrite the input cuts: choose another directory")
    settings = {"n_q": codec.n_q, "sample_rate": codec.sample_rate, "codec_sha256": codec_digest(codec)}
    close_cached_file_handles()  # lhotse keeps HDF5 files open for reading; ours are about to change
    job = ShardedJob(cuts_path, paths["progress_dir"], ctx, settings=settings, overwrite=overwrite,
                     data_dir=paths["codes_dir"], block_size=chunk_size)
    if job.num_done:
        logger.info("resuming: %d cuts already tokenized in %s", job.num_done, paths["codes_dir"])

    encoder = _Encoder(codec, device)
    failed: list[tuple[int, str, str]] = []
    state = {"unit": job.new_unit(), "writer": None}

    def writer_for():
        if state["writer"] is None:
            state["writer"] = NumpyHdf5Writer(state["unit"].data_path("codes", ".h5"), mode="w")
        return state["writer"]

    def commit():
        files = []
        if state["writer"] is not None:
            state["writer"].close()
            files.append(state["unit"].data_path("codes", ".h5"))
        n = job.commit(state["unit"], files)
        state["unit"], state["writer"] = job.new_unit(), None
        return n

    def encode_chunk(chunk, bar):
        for batch in _batches(chunk, batch_duration):
            encoder.encode(batch, writer_for, state["unit"], failed)
            bar.update(len(batch))

    desc = f"tokenize {paths['cuts'].name}" + (f" (rank 0 of {ctx.world_size})" if ctx.is_distributed else "")
    with tqdm(desc=desc, total=job.num_todo, unit="cut", disable=not progress or not ctx.is_main) as bar:
        finished = False
        try:
            with sigterm_as_interrupt():
                for chunk in job.todo_blocks():
                    ids = [cut.id for _, cut in chunk]
                    if len(set(ids)) != len(ids):
                        dup = next(i for i in ids if ids.count(i) > 1)
                        raise DmttsError(f"--cuts '{cuts_path}' has duplicate cut id '{dup}': codes are stored by cut id")
                    encode_chunk(chunk, bar)
                    commit()
                finished = True
        finally:
            n = commit()  # Ctrl-C, SIGTERM or an error: keep the cuts already encoded
            if n and not finished:
                logger.warning("interrupted: committed %d finished cuts; re-run the same command to resume", n)

    job.finish()
    all_failed = ctx.gather(failed)
    if not ctx.is_main:
        return paths["cuts"]
    failed = sorted(f for rank_failed in all_failed for f in rank_failed)
    n_out = job.write_merged(paths["cuts"])
    if not n_out:
        paths["cuts"].unlink()
    for _, cid, why in failed:
        logger.warning("skipped cut %s: %s", cid, why)
    if failed:
        atomic_write_text(paths["failed"], "".join(f"{cid}\t{why}\n" for _, cid, why in failed))
        logger.warning("%d of %d cuts failed (listed in %s)", len(failed), job.num_items, paths["failed"])
    elif paths["failed"].exists():
        paths["failed"].unlink()
    if not n_out:
        raise DmttsError(f"no cut of '{cuts_path}' could be tokenized: see the warnings above")
    logger.info("tokenized %d of %d cuts -> %s (codes in %s)", n_out, job.num_items, paths["cuts"], paths["codes_dir"])
    return paths["cuts"]
