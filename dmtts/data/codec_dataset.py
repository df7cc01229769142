"""Codec training data: random fixed-length crops of lhotse cuts, with teacher features.

* The crop of a cut is drawn from an RNG seeded by ``(seed, epoch, cut.id)``, so crops do not
  depend on worker processes or on how many batches came before: together with the sampler
  position (epoch, batches consumed) this makes resumption exact.
* Cuts shorter than the crop are zero-padded (``lengths`` holds the real sample counts).
* Windows written by ``dmtts segment`` (``cut.custom["window"]``) carry the LM states of their
  own transcript, so they are used whole: a window longer than the crop is an error, since
  cropping it would distil text that is not in the crop again.
* Teacher features (optional): ``cut.lm_feats`` (``(n_tokens, D_lm)``, whole utterance; text
  cannot be cropped) and ``cut.sm_feats`` (``(T_sm, D_sm)`` TemporalArray), whose frames are
  cropped to the same time span as the audio.
* The batch sampler is a lhotse ``SimpleCutSampler`` (``batch_size`` cuts) or
  ``DynamicBucketingSampler`` (cuts of similar duration grouped; crops make durations equal), both with
  ``max_cuts = batch_size``; :class:`SkipBatches` skips the batches consumed before a resume.
* Lhotse Shar input (``data.train_cuts`` naming a ``dmtts shar export`` directory) is read by
  ``dmtts.data.shar`` instead: same dataset, the sampler runs in each DataLoader worker.
* HDF5 feature files are closed once more than ``MAX_OPEN_HDF5`` are open
  (``dmtts.data.open_files``): lhotse would otherwise keep every one open.
"""

from __future__ import annotations

import random
import zlib
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dmtts.audio import SAMPLE_RATE
from dmtts.data.open_files import release_hdf5_handles
from dmtts.errors import DmttsError


def _crop_rng(seed: int, epoch: int, cut_id: str) -> random.Random:
    return random.Random(zlib.crc32(f"{seed}:{epoch}:{cut_id}".encode()))


class CodecCropDataset(Dataset):
    """Maps a ``CutSet`` batch to ``{"audio": [B,1,N], "lengths", "lm_feats", "sm_feats", "ids"}``."""

    def __init__(self, crop_seconds: float = 3.0, sample_rate: int = SAMPLE_RATE, load_lm: bool = False,
                 load_sm: bool = False, random_crop: bool = True, seed: int = 0):
        self.crop_seconds = crop_seconds
        self.sample_rate = sample_rate
        self.crop_samples = int(round(crop_seconds * sample_rate))
        self.load_lm, self.load_sm = load_lm, load_sm
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _one(self, cut) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if cut.sampling_rate != self.sample_rate:
            cut = cut.resample(self.sample_rate)
        duration = cut.duration
        crop = self.crop_seconds
        if (cut.custom or {}).get("window") is not None and duration > crop + 1e-3:
            raise DmttsError(f"cut '{cut.id}' is a {duration:g} s window from `dmtts segment` but data.crop_seconds "
                             f"is {crop:g}: set data.crop_seconds to the window length so windows are used whole")
        start = 0.0
        if duration > crop and self.random_crop:
            n_total = int(duration * self.sample_rate) - self.crop_samples
            start = _crop_rng(self.seed, self.epoch, cut.id).randint(0, max(0, n_total)) / self.sample_rate
        try:
            piece = cut.truncate(offset=start, duration=min(crop, duration - start), preserve_id=True) \
                if duration > crop else cut
            audio = piece.load_audio()
        except Exception as e:
            raise DmttsError(f"cannot load audio of cut '{cut.id}': {e}") from None
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)[: self.crop_samples]
        if not np.isfinite(audio).all():
            raise DmttsError(f"cut '{cut.id}' has NaN or infinite samples; remove it from the training cuts")
        lm = sm = None
        if self.load_lm:
            if not cut.has_custom("lm_feats"):
                raise DmttsError(f"cut '{cut.id}' has no lm_feats: run `dmtts teachers extract` on these cuts "
                                 "or set distill.mode to none/sm")
            lm = np.asarray(cut.load_custom("lm_feats"), dtype=np.float32)
        if self.load_sm:
            if not cut.has_custom("sm_feats"):
                raise DmttsError(f"cut '{cut.id}' has no sm_feats: run `dmtts teachers extract` with an SM "
                                 "teacher or set distill.mode to none/lm")
            arr = cut.sm_feats
            feats = np.asarray(cut.load_custom("sm_feats"), dtype=np.float32)
            shift = getattr(arr, "frame_shift", None) or 0.02
            first = int(round(start / shift))
            n = int(np.ceil(min(crop, duration - start) / shift - 1e-6))
            sm = feats[first: first + n]
        return audio, lm, sm

    def __getitem__(self, cuts) -> dict:
        items = [self._one(c) for c in cuts]
        release_hdf5_handles()  # at most MAX_OPEN_HDF5 feature files open, whatever the corpus size
        n = self.crop_samples if self.random_crop else max(len(a) for a, _, _ in items)
        audio = torch.zeros(len(items), 1, n)
        lengths = torch.zeros(len(items), dtype=torch.long)
        for i, (a, _, _) in enumerate(items):
            audio[i, 0, : len(a)] = torch.from_numpy(a)
            lengths[i] = len(a)
        batch = {"audio": audio, "lengths": lengths, "ids": [c.id for c in cuts]}
        for key, pos in (("lm_feats", 1), ("sm_feats", 2)):
            feats = [it[pos] for it in items]
            if feats[0] is None:
                batch[key] = None
                continue
            t = max(max(f.shape[0] for f in feats), 1)
            out = torch.zeros(len(feats), t, feats[0].shape[1])
            for i, f in enumerate(feats):
                out[i, : f.shape[0]] = torch.from_numpy(f)
            batch[key] = out
        return batch


class SkipBatches(Sampler):
    """Yields the batches of ``sampler`` after skipping the first ``skip`` (for exact resumption)."""

    def __init__(self, sampler, skip: int = 0):
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator:
        # lhotse samplers return ``self`` from ``__iter__`` and reset there, so the iterator is
        # advanced with next() only (``yield from`` would call ``__iter__`` again and restart)
        it = iter(self.sampler)
        n = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            n += 1
            if n > self.skip:
                yield batch

    def __len__(self) -> int:  # pragma: no cover - lhotse samplers have no cheap len
        raise TypeError("length unknown")


def make_sampler(cuts, batch_size: int, crop_seconds: float, kind: str = "simple", shuffle: bool = True,
                 drop_last: bool = True, num_buckets: int = 10, seed: int = 0, world_size: int = 1, rank: int = 0):
    from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

    if kind == "dynamic_bucketing":
        return DynamicBucketingSampler(cuts, max_duration=None,
                                       max_cuts=batch_size, num_buckets=num_buckets, shuffle=shuffle,
                                       drop_last=drop_last, seed=seed, world_size=world_size, rank=rank)
    return SimpleCutSampler(cuts, max_cuts=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                            world_size=world_size, rank=rank)


def load_training_cuts(path: str, what: str):
    """The cuts of config key ``data.<what>``: a lhotse cuts file, or a Shar directory (read
    lazily; each rank and worker reads its own shards, ``dmtts.data.shar``)."""
    from pathlib import Path

    from lhotse import CutSet

    from dmtts.data.shar import is_shar_dir, open_shar
    from dmtts.errors import DmttsError

    if not path:
        raise DmttsError(f"data.{what} is not set in the config: give a lhotse cuts file (.jsonl.gz) "
                         "or a Shar directory (dmtts shar export)")
    if is_shar_dir(path):
        return open_shar(path)
    if not Path(path).is_file():
        raise DmttsError(f"data.{what} '{path}' does not exist: run data preparation "
                         "(dmtts prepare ...) or fix the path in the config")
    return CutSet.from_file(path)
