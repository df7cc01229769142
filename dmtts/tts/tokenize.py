"""``dmtts tokenize``: encode cuts into codec codes (int16 ``(T, n_q)``, ``cut.codes``).

The manifest is streamed in chunks of ``chunk_size`` cuts; inside a chunk cuts are sorted by
duration and encoded in batches of about ``batch_duration`` seconds, without padding
(``DMCodec.encode_batch``: a cut's codes equal encoding it alone).
Codes go into ``<output-dir>/<name>_codes.h5`` (lhotse ``NumpyHdf5Writer``, lossless); the
tokenized cuts, in input order, into ``<output-dir>/<input file name>`` (written to a temporary
file and renamed at the end). Re-running skips cuts whose codes are already stored (resume after a crash). A cut
that fails (unreadable audio, wrong frame count, ...) is reported and skipped; the list goes to
``<output-dir>/<name>_failed.txt``.
"""

from __future__ import annotations

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


def _batches(cuts, batch_duration: float):
    """Duration-sorted batches of at most ``batch_duration`` seconds (at least one cut each)."""
    batch, total = [], 0.0
    for c in sorted(cuts, key=lambda c: c.duration):
        if batch and total + c.duration > batch_duration:
            yield batch
            batch, total = [], 0.0
        batch.append(c)
        total += c.duration
    if batch:
        yield batch


def _chunks(cuts, size: int):
    chunk = []
    for c in cuts:
        chunk.append(c)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize_cuts(codec, cuts_path, output_dir, batch_duration: float = 60.0, device="cpu", progress=True,
                  chunk_size: int = 5000) -> Path:
    import h5py
    from lhotse import CutSet
    from lhotse.features.io import NumpyHdf5Writer
    from tqdm import tqdm

    from dmtts.data.codes import attach_codes, check_frames, codes_array_for
    from dmtts.utils import atomic_path, atomic_write_text, require_file

    cuts_path = require_file(cuts_path, "--cuts", "prepare cuts with 'dmtts prepare ...'")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(cuts_path)
    out_cuts = output_dir / cuts_path.name
    if out_cuts.resolve() == cuts_path.resolve():
        raise DmttsError(f"--output-dir '{output_dir}' would overwrite the input cuts: choose another directory")
    storage = output_dir / f"{stem}_codes.h5"
    n_q = codec.n_q
    sr = codec.sample_rate

    done: dict[str, int] = {}
    from lhotse.features.io import close_cached_file_handles

    close_cached_file_handles()  # lhotse keeps HDF5 files open for reading; we append to ours
    if storage.exists():
        try:
            with h5py.File(storage, "r") as f:
                done = {k: f[k].shape[0] for k in f.keys() if f[k].ndim == 2 and f[k].shape[1] == n_q}
        except OSError as e:
            raise DmttsError(f"'{storage}' is unreadable ({e}): delete it to tokenize from scratch") from None
        logger.info("resuming: %d cuts already tokenized in %s", len(done), storage)

    def encode_batch(batch, writer, results, failed):
        wavs, good = [], []
        for c in batch:
            try:
                audio = c.resample(sr).load_audio()
                if audio.ndim == 2:
                    audio = audio.mean(axis=0)
                if audio.size == 0 or not np.isfinite(audio).all():
                    raise ValueError("audio is empty or has NaN/inf samples")
                wavs.append(audio.astype(np.float32))
                good.append(c)
            except Exception as e:  # noqa: BLE001 - report any unreadable cut and move on
                failed.append((c.id, f"{type(e).__name__}: {e}"))
        if not good:
            return
        lens = [len(w) for w in wavs]
        try:
            with torch.inference_mode():
                # unpadded: each cut's codes equal encoding it alone (as a synthesis prompt is)
                codes = codec.encode_batch([torch.from_numpy(w).to(device) for w in wavs], n_q=n_q)
        except Exception as e:  # noqa: BLE001
            failed.extend((c.id, f"encode failed: {type(e).__name__}: {e}") for c in good)
            return
        for i, c in enumerate(good):
            frames = codec.num_frames(lens[i])
            try:
                check_frames(frames, c.duration)
            except DmttsError as e:
                failed.append((c.id, str(e)))
                continue
            results[c.id] = attach_codes(c, writer, codes[i].cpu().numpy()[:, :frames].T)

    # Stream the manifest in chunks (Libri-Heavy does not fit in memory as one list): each chunk
    # is sorted by duration into batches, and its cuts are written out in input order.
    seen: set[str] = set()
    failed: list[tuple[str, str]] = []
    n_in = n_out = 0
    with atomic_path(out_cuts) as tmp, CutSet.open_writer(tmp) as out_writer, \
            NumpyHdf5Writer(storage, mode="a") as writer, \
            tqdm(desc=f"tokenize {stem}", unit="cut", disable=not progress) as bar:
        for chunk in _chunks(CutSet.from_file(cuts_path), chunk_size):
            results: dict[str, object] = {}
            todo = []
            for c in chunk:
                if c.id in seen:
                    raise DmttsError(f"--cuts '{cuts_path}' has duplicate cut id '{c.id}': codes are stored by cut id")
                seen.add(c.id)
                if c.id in done:
                    results[c.id] = c.with_custom("codes", codes_array_for(c, str(storage), c.id, done[c.id], n_q))
                else:
                    todo.append(c)
            bar.update(len(chunk) - len(todo))
            for batch in _batches(todo, batch_duration):
                encode_batch(batch, writer, results, failed)
                writer.hdf.flush()
                bar.update(len(batch))
            for c in chunk:
                if c.id in results:
                    out_writer.write(results[c.id])
                    n_out += 1
            n_in += len(chunk)
        if not n_out:
            for cid, why in failed:
                logger.warning("skipped cut %s: %s", cid, why)
            raise DmttsError(f"no cut of '{cuts_path}' could be tokenized: see the warnings above")

    for cid, why in failed:
        logger.warning("skipped cut %s: %s", cid, why)
    failed_path = output_dir / f"{stem}_failed.txt"
    if failed:
        atomic_write_text(failed_path, "".join(f"{cid}\t{why}\n" for cid, why in failed))
        logger.warning("%d of %d cuts failed (listed in %s)", len(failed), n_in, failed_path)
    elif failed_path.exists():
        failed_path.unlink()
    logger.info("tokenized %d of %d cuts -> %s (codes in %s)", n_out, n_in, out_cuts, storage)
    return out_cuts
