"""A bounded number of open files in the data loaders, and a start-up check against ``ulimit -n``.

lhotse keeps every HDF5 file it has read from open for the life of the process (the unbounded
``lru_cache`` ``lhotse.features.io.lookup_cache_or_open``). Codes and teacher features are
written one HDF5 file per commit unit, so a corpus-sized epoch would open thousands of them in
every DataLoader worker and die mid-epoch with "Too many open files" above ``ulimit -n``.
:func:`release_hdf5_handles` (called by the training datasets after each batch) closes them all
once more than :data:`MAX_OPEN_HDF5` are open, so a process never holds more than that many
plus one batch's worth, whatever the corpus size. Units are written in input order, so a batch
touches few files and closing is rare; a reopen costs about a millisecond.

:func:`check_open_file_limit` runs at the start of training: it fails with a message naming
``ulimit -n`` when the run would need more descriptors than the soft limit allows.
"""

from __future__ import annotations

import os

from dmtts.errors import DmttsError

MAX_OPEN_HDF5 = 64
# Python, torch, tensorboard, logging and the checkpoint writer: descriptors beyond those open now
RESERVE = 32
# per DataLoader worker in the main process: the worker's pipes plus the shared-memory
# descriptors of the batches in flight (prefetch_factor 2 x a few tensors)
PER_WORKER = 16


def open_hdf5_files() -> int:
    """HDF5 files lhotse holds open in this process."""
    from lhotse.features.io import lookup_cache_or_open

    return lookup_cache_or_open.cache_info().currsize


def release_hdf5_handles(max_open: int | None = None) -> bool:
    """Close lhotse's cached HDF5 handles when more than ``max_open`` (default
    :data:`MAX_OPEN_HDF5`) are open; True if it did."""
    if open_hdf5_files() <= (MAX_OPEN_HDF5 if max_open is None else max_open):
        return False
    from lhotse.features.io import close_cached_file_handles

    # dropping the cache's references closes the files (h5py closes a file with its last reference)
    close_cached_file_handles()
    return True


def open_descriptors() -> int:
    """File descriptors this process has open now (Linux ``/proc``; 0 where unknown)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def soft_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE`` (``ulimit -n``), or None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def descriptors_needed(num_workers: int, shar_fields: int = 0, open_now: int | None = None) -> int:
    """Descriptors one training process needs at most: those open now, the bounded HDF5 handles,
    one open shard file per Shar field plus its cuts file, the workers' pipes and a reserve.

    DataLoader workers are separate processes with their own descriptor tables (and the same
    limit); the main process is the one that holds the most, so it is the one counted.
    """
    open_now = open_descriptors() if open_now is None else open_now
    shar = shar_fields + 1 if shar_fields else 0
    return open_now + MAX_OPEN_HDF5 + shar + PER_WORKER * max(num_workers, 0) + RESERVE


def check_open_file_limit(num_workers: int, shar_fields: int = 0, what: str = "training") -> int:
    """Raise a ``DmttsError`` naming ``ulimit -n`` if ``what`` would need more descriptors than
    the soft limit allows; return the number needed."""
    need = descriptors_needed(num_workers, shar_fields)
    limit = soft_limit()
    if limit is not None and need > limit:
        raise DmttsError(
            f"{what} needs up to {need} open files per process ({MAX_OPEN_HDF5} HDF5 files, "
            f"{num_workers} data.num_workers, {open_descriptors()} open now) but `ulimit -n` is {limit}: "
            f"run `ulimit -n {max(need, 1024)}` in the shell that starts it, or lower data.num_workers")
    return need
