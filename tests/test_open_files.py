"""The open-file ceiling: more HDF5 feature files than `ulimit -n` are read in one epoch, and a
run that would need more descriptors than allowed fails at start-up naming `ulimit -n`."""

import resource

import numpy as np
import pytest
import soundfile as sf

N_FILES = 200  # one HDF5 file per cut, like one teacher-feature unit per few cuts at corpus scale


@pytest.fixture
def many_files(tmp_path):
    from lhotse import CutSet, MonoCut, NumpyHdf5Writer, Recording

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    rec = Recording.from_file(wav)
    cuts = []
    for i in range(N_FILES):
        cut = MonoCut(id=f"c{i:03d}", start=0, duration=rec.duration, channel=0, recording=rec)
        with NumpyHdf5Writer(tmp_path / f"feats_{i:03d}") as w:
            cut.lm_feats = w.store_array(cut.id, np.full((2, 3), i, dtype=np.float16))
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


@pytest.fixture
def low_limit():
    """Lower the soft `ulimit -n` for the test (restored after); yields a setter."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower(n):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))

    yield lower
    from lhotse.features.io import close_cached_file_handles

    close_cached_file_handles()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _epoch(cuts, num_workers):
    from lhotse.dataset import SimpleCutSampler
    from torch.utils.data import DataLoader

    from dmtts.data.codec_dataset import CodecCropDataset

    ds = CodecCropDataset(crop_seconds=0.1, load_lm=True, random_crop=False)
    loader = DataLoader(ds, sampler=SimpleCutSampler(cuts, max_cuts=4), batch_size=None, num_workers=num_workers)
    return {i: int(b["lm_feats"][k, 0, 0]) for b in loader for k, i in enumerate(b["ids"])}


def test_one_epoch_reads_more_hdf5_files_than_the_limit(many_files, low_limit):
    from dmtts.data.open_files import MAX_OPEN_HDF5, check_open_file_limit, open_descriptors

    limit = open_descriptors() + 120
    assert limit < open_descriptors() + N_FILES  # all files open at once would not fit
    low_limit(limit)
    check_open_file_limit(num_workers=1)  # the start-up check passes: the need is bounded
    seen = _epoch(many_files, num_workers=1)
    assert seen == {f"c{i:03d}": i for i in range(N_FILES)}  # every cut, its own file's values
    # in this process too, and the handles left open stay within the bound
    from dmtts.data.open_files import open_hdf5_files

    assert _epoch(many_files, num_workers=0) == seen
    assert open_hdf5_files() <= MAX_OPEN_HDF5 + 4


def test_without_the_bound_the_epoch_dies_of_too_many_open_files(many_files, low_limit, monkeypatch):
    import dmtts.data.open_files as of

    monkeypatch.setattr(of, "MAX_OPEN_HDF5", 10**6)  # lhotse's own behaviour: every file stays open
    low_limit(of.open_descriptors() + 120)
    with pytest.raises(Exception, match="Too many open files|errno = 24"):
        _epoch(many_files, num_workers=0)


def test_start_up_names_ulimit_when_the_run_needs_more(low_limit):
    from dmtts.data.open_files import check_open_file_limit, descriptors_needed, open_descriptors
    from dmtts.errors import DmttsError

    need = descriptors_needed(num_workers=4, shar_fields=2)
    assert need == open_descriptors() + 64 + 3 + 4 * 16 + 32
    low_limit(open_descriptors() + 40)
    with pytest.raises(DmttsError, match=r"needs up to \d+ open files per process.*`ulimit -n` is \d+: run `ulimit -n"):
        check_open_file_limit(num_workers=4, shar_fields=2, what="codec training")
