"""Lhotse Shar as training input: each rank and DataLoader worker reads its own shards.

A Shar directory (written by ``dmtts shar export``, see :mod:`dmtts.data.shar_cli`) holds
``shar_index.json`` and ``shards/``: per shard one ``cuts.<tag>.jsonl.gz`` plus one tar per field
(``recording``, ``codes``, ``lm_feats``, ``sm_feats``) with the data of the same cuts in the same
order. Training configs accept such a directory wherever they accept a cuts file
(``data.train_cuts``); nothing else changes in the config.

How an epoch is read (the recipe lhotse documents for Shar, with the rank given explicitly):

* Shards are shuffled per epoch with ``Random(seed + epoch)`` (``stateful_shuffle``; the epoch is
  set by the training loop, since each DataLoader worker iterates its own copy).
* The shuffled list is split by rank (``shards[rank::world_size]``), then by DataLoader worker
  (``[worker::num_workers]``). Every shard is read by exactly one (rank, worker) per epoch.
* Each worker runs its own copy of the batch sampler (``DynamicBucketingSampler``, world size 1,
  duration bins estimated once from the cuts files only) over its shards and loads the batches
  it samples: an ``IterableDataset``; batches come out round-robin over workers.
* Nothing parses the whole manifest: a rank reads ``1/world_size`` of the cuts; the main process
  reads the first 10,000 cut lines once (duration bins). Open files: one cuts file and one tar
  per field per worker.

What differs from a cuts file: the order (shard order, then a per-worker shuffle buffer, instead
of a global one); the set of cuts per epoch is the same, except what lhotse drops at the ends:
``drop_last`` drops each worker's last partial batch, and DDP ranks stop an epoch together when the
first rank runs out (ranks get whole shards, so the counts differ by up to a shard). Since every
worker runs its own sampler, ``drop_last`` drops up to ``num_buckets`` partial batches per worker
per epoch (a warning says so): use ``data.drop_last: false`` with Shar.

Mid-epoch resume: rank r's batch sequence depends only on (seed, epoch, world size, number of
workers), so it is reproduced by skipping the ``skip`` batches already consumed: worker ``w``
skips ``skip // W + (w < skip % W)`` of its own batches without loading their data, and each
round of ``W`` batches of the resumed loader is rotated to start at worker ``skip % W`` (the
DataLoader always starts a round at worker 0). This is exact as long as
no worker of that rank had run out of shards before the checkpoint (i.e. except in an epoch's
last stretch, where a resume may repeat or skip a few batches); the sampler's state_dict is not
used for Shar input (it lives in the workers).
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import torch

from dmtts.errors import DmttsError

INDEX_NAME = "shar_index.json"
SHARDS_DIR = "shards"
FORMAT_VERSION = 1
BINS_ESTIMATE_CUTS = 10000
log = logging.getLogger(__name__)

try:
    from lhotse.shar.readers.lazy import LazySharIterator
except ImportError:  # pragma: no cover - lhotse is pinned in requirements.txt
    LazySharIterator = object


def is_shar_dir(path) -> bool:
    """Whether a ``data.*_cuts`` value names a Shar directory (a cuts file otherwise)."""
    return bool(path) and Path(path).is_dir()


def read_index(path) -> dict:
    """The ``shar_index.json`` of a Shar directory (a clear error if it is not a finished export)."""
    root = Path(path)
    index_path = root / INDEX_NAME
    if not index_path.is_file():
        raise DmttsError(f"'{root}' is a directory but not a finished Shar export (no {INDEX_NAME}): write it with "
                         f"`dmtts shar export --cuts CUTS --output-dir {root}` or give a cuts file (.jsonl.gz)")
    index = json.loads(index_path.read_text())
    if index.get("format") != FORMAT_VERSION:
        raise DmttsError(f"'{index_path}' has format {index.get('format')}, this dmtts reads {FORMAT_VERSION}: "
                         "export it again with `dmtts shar export --overwrite`")
    return index


def write_index(out_dir, shards: list[dict], fields: dict[str, str], source: str = "") -> dict:
    """Write ``shar_index.json``: ``shards`` are ``{"cuts": path, FIELD: path, ..., "num_cuts": n}``
    with paths relative to ``out_dir``; the file marks the export as finished."""
    from dmtts.utils import atomic_write_text

    index = {"format": FORMAT_VERSION, "num_cuts": int(sum(s["num_cuts"] for s in shards)),
             "num_shards": len(shards), "fields": dict(fields), "source": str(source), "shards": shards}
    atomic_write_text(Path(out_dir) / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return index


class SharShards(LazySharIterator):
    """lhotse's ``LazySharIterator`` over some fields of an exported directory, split by an explicit
    rank (and by DataLoader worker) instead of one read from the environment, with an epoch the
    training loop sets and an optional filter (``keep(cut) -> bool``, picklable)."""

    def __init__(self, root, index: dict, fields=(), rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0, keep=None, split_workers: bool = False):
        root = Path(root)
        missing = [f for f in fields if f not in index["fields"]]
        if missing:
            raise DmttsError(f"Shar directory '{root}' has no {', '.join(missing)} (it has: "
                             f"{', '.join(index['fields']) or 'cuts only'}): export it again with "
                             f"`dmtts shar export --fields ...` including {', '.join(missing)}")
        streams = {name: [str(root / s[name]) for s in index["shards"]] for name in ("cuts", *fields)}
        super().__init__(fields=streams, split_for_dataloading=False, shuffle_shards=shuffle,
                         stateful_shuffle=True, seed=seed)
        self.root, self.index = root, index
        self.rank, self.world_size = rank, world_size
        self.keep, self.split_workers = keep, split_workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _maybe_split_for_dataloading(self, shards: list) -> list:
        shards = shards[self.rank::self.world_size]
        if self.split_workers:
            info = torch.utils.data.get_worker_info()
            if info is not None:
                shards = shards[info.id::info.num_workers]
        return shards

    def __iter__(self):
        for cut in super().__iter__():
            if self.keep is None or self.keep(cut):
                yield cut


def open_shar(path, keep=None):
    """A lazy ``CutSet`` over every cut of a Shar directory (all fields, no split, no shuffle):
    what ``data.*_cuts`` gives when it names a Shar directory."""
    from lhotse import CutSet

    index = read_index(path)
    return CutSet(SharShards(path, index, tuple(index["fields"]), keep=keep))


def is_shar_cuts(cuts) -> bool:
    return isinstance(getattr(cuts, "data", None), SharShards)


def training_view(cuts, fields, rank: int, world_size: int, shuffle: bool, seed: int):
    """This rank's view of Shar ``cuts`` for a training epoch: only ``fields``, shards shuffled per
    epoch and split by rank and DataLoader worker."""
    from lhotse import CutSet

    src = cuts.data
    return CutSet(SharShards(src.root, src.index, tuple(fields), rank=rank, world_size=world_size, shuffle=shuffle,
                             seed=seed, keep=src.keep, split_workers=True))


def duration_bins(cuts, num_buckets: int) -> list[float]:
    """Bucket bins from the first cut lines (no field data read), the same on every rank."""
    from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets

    src = cuts.data
    cache = src.__dict__.setdefault("_duration_bins", {})  # a trainer that rebuilds its sampler per epoch
    if num_buckets not in cache:
        cuts_only = SharShards(src.root, src.index, (), keep=src.keep)
        cache[num_buckets] = estimate_duration_buckets(islice(cuts_only, BINS_ESTIMATE_CUTS), num_buckets=num_buckets)
    return cache[num_buckets]


def shar_sampler(cuts, fields, rank: int, world_size: int, seed: int, shuffle: bool, drop_last: bool,
                 bucketing: bool = True, num_buckets: int = 10, max_duration=None, max_cuts=None,
                 buffer_size: int = 20000):
    """A batch sampler for this rank's Shar view, run inside each DataLoader worker by
    :func:`shar_loader`: ``DynamicBucketingSampler`` (``bucketing``) or ``DynamicCutSampler``."""
    from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

    view = training_view(cuts, fields, rank, world_size, shuffle, seed)
    if drop_last:
        log.warning("data.drop_last with Shar input: each DataLoader worker runs its own sampler and drops up to %d "
                    "partial batches (one per bucket) per epoch; set data.drop_last: false to keep them",
                    num_buckets if bucketing else 1)
    if bucketing:
        sampler = DynamicBucketingSampler(view, max_duration=max_duration, max_cuts=max_cuts, shuffle=shuffle,
                                          drop_last=drop_last, duration_bins=duration_bins(cuts, num_buckets),
                                          buffer_size=buffer_size, seed=seed, world_size=1, rank=0)
    else:
        sampler = DynamicCutSampler(view, max_duration=max_duration, max_cuts=max_cuts, shuffle=shuffle,
                                    drop_last=drop_last, shuffle_buffer_size=buffer_size, seed=seed,
                                    world_size=1, rank=0)
    sampler.shar_shards = view.data  # marks a Shar sampler; set_epoch reaches the shard order
    return sampler


def is_shar_sampler(sampler) -> bool:
    return getattr(sampler, "shar_shards", None) is not None


class SharBatches(torch.utils.data.IterableDataset):
    """Each DataLoader worker: its sampler over its shards, ``dataset[batch]`` for each batch,
    after skipping its share of the ``skip`` batches consumed before a resume (without loading)."""

    def __init__(self, dataset, sampler, epoch: int, skip: int = 0):
        self.dataset, self.sampler, self.epoch, self.skip = dataset, sampler, epoch, skip

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        own_skip = self.skip // workers + (1 if worker < self.skip % workers else 0)
        self.sampler.shar_shards.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        for i, cuts in enumerate(self.sampler):
            if i >= own_skip:
                yield self.dataset[cuts]


def _rotated(loader, first: int, workers: int):
    """The loader's batches with every round of ``workers`` batches rotated to start at worker
    ``first``: the resumed loader starts at worker 0, the interrupted run continued at ``first``."""
    it = iter(loader)
    if first == 0:
        yield from it
        return
    while True:
        group = list(islice(it, workers))
        if not group:
            return
        yield from group[first:] + group[:first]


def check_shard_count(shards: SharShards, num_workers: int) -> None:
    """Every (rank, worker) needs a shard; a few each keep the ranks' epochs of similar length
    (DDP ranks stop an epoch together, when the first one runs out)."""
    readers = shards.world_size * max(num_workers, 1)
    n = shards.num_shards
    hint = (f"export with `dmtts shar export --shard-size {max(1, shards.index['num_cuts'] // (4 * readers))}` "
            f"(4 shards per reader) or use fewer data.num_workers")
    if n < readers:
        raise DmttsError(f"Shar directory '{shards.root}' has {n} shards but {shards.world_size} ranks x "
                         f"{max(num_workers, 1)} workers = {readers} readers each need one: {hint}")
    if n < 4 * readers:
        log.warning("Shar directory '%s': %d shards for %d readers (ranks x workers); the ranks' epochs differ by "
                    "up to a shard and end with the shortest: %s", shards.root, n, readers, hint)


def shar_loader(dataset, sampler, num_workers: int, seed: int, skip: int = 0):
    """An iterable of this rank's batches for the sampler's epoch (see the module docstring)."""
    from torch.utils.data import DataLoader

    check_shard_count(sampler.shar_shards, num_workers)
    loader = DataLoader(SharBatches(dataset, sampler, sampler.epoch, skip), batch_size=None,
                        num_workers=num_workers, persistent_workers=False,
                        # its own generator: creating an iterator must not draw from the global RNG
                        generator=torch.Generator().manual_seed(seed))
    workers = max(num_workers, 1)
    return _rotated(loader, skip % workers, workers)


def synced_batches(batches, device):
    """Batches until any DDP rank runs out (Shar ranks may get a different number of batches)."""
    import torch.distributed as dist

    it = iter(batches)
    while True:
        batch = next(it, None)
        flag = torch.tensor([0 if batch is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag) == 0:
            return
        yield batch
