"""``dmtts segment``: fixed windows of cuts with their own transcripts (windowed LM targets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from dmtts.data.segment import (
    estimate_word_midpoints, segment_cuts, speech_span, window_spans, words_by_midpoint,
)
from dmtts.errors import DmttsError

SR = 16000


def _cut(tmp_path, cut_id: str, audio: np.ndarray, text: str, words=None, sm_feats=None):
    """A MonoCut over a wav file; ``words`` = [(word, start, duration)] becomes a word alignment;
    ``sm_feats`` a (T, D) array stored as a 20 ms TemporalArray custom field; lm_feats a dummy."""
    from lhotse import MonoCut, NumpyHdf5Writer, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    path = tmp_path / f"{cut_id}.wav"
    sf.write(str(path), audio, SR)
    rec = Recording.from_file(str(path), recording_id=cut_id)
    alignment = {"word": [AlignmentItem(symbol=w, start=s, duration=d) for w, s, d in words]} if words else None
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=rec.duration, text=text,
                             speaker="spk", alignment=alignment)
    cut = MonoCut(id=cut_id, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])
    if sm_feats is not None:
        with NumpyHdf5Writer(tmp_path / f"{cut_id}_feats.h5") as w:
            cut = cut.with_custom("sm_feats", w.store_array(cut_id, sm_feats, frame_shift=0.02, temporal_dim=0, start=0))
            cut = cut.with_custom("lm_feats", w.store_array(cut_id + "_lm", np.ones((5, 4), np.float32)))
    return cut


def _save(tmp_path, cuts):
    from lhotse import CutSet

    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def _load(path):
    from lhotse import load_manifest

    return list(load_manifest(path))


def _speech(seconds: float, lead: float = 0.0, tail: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speech = 0.3 * rng.standard_normal(int(seconds * SR))
    return np.concatenate([np.zeros(int(lead * SR)), speech, np.zeros(int(tail * SR))]).astype(np.float32)


def test_window_spans_hand_computed():
    assert window_spans(7.5, 3.0, 1.0) == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.5)]
    assert window_spans(6.8, 3.0, 1.0) == [(0.0, 3.0), (3.0, 6.0)]          # 0.8 s tail < 1.0: dropped
    assert window_spans(6.0, 3.0, 1.0) == [(0.0, 3.0), (3.0, 6.0)]          # exact multiple: no empty tail
    assert window_spans(0.5, 3.0, 1.0) == []
    assert window_spans(2.0, 3.0, 1.0) == [(0.0, 2.0)]
    with pytest.raises(DmttsError, match="--min-window"):
        window_spans(5.0, 3.0, 4.0)
    with pytest.raises(DmttsError, match="--window"):
        window_spans(5.0, 0.0, 1.0)


def test_words_by_midpoint_assigns_each_word_once(tmp_path):
    words = [("the", 0.1, 0.3), ("cat", 2.5, 0.6), ("sat", 3.2, 0.3), ("down", 5.9, 0.4)]
    cut = _cut(tmp_path, "a", _speech(7.0), "the cat sat down", words=words)
    sup = cut.supervisions[0]
    # "cat" spans the 3 s boundary (2.5-3.1) with its midpoint 2.8 in the first window;
    # "down" (5.9-6.3) has its midpoint 6.1 in the third
    assert words_by_midpoint(sup, 0.0, 3.0) == "the cat"
    assert words_by_midpoint(sup, 3.0, 6.0) == "sat"
    assert words_by_midpoint(sup, 6.0, 7.0) == "down"


def test_speech_span_and_estimate_hand_computed():
    audio = _speech(2.0, lead=0.5, tail=0.3)
    start, end = speech_span(audio)
    assert start == pytest.approx(0.5, abs=0.021) and end == pytest.approx(2.5, abs=0.021)
    # words weighted by len+1 over [1, 3): "ab"=3, "c"=2, "defg"=5 -> edges 1, 1.6, 2.0, 3.0
    mids = estimate_word_midpoints("ab c defg", 1.0, 3.0)
    assert [w for w, _ in mids] == ["ab", "c", "defg"]
    assert [m for _, m in mids] == pytest.approx([1.3, 1.8, 2.5])


def test_segment_with_alignments_slices_sm_and_drops_lm(tmp_path):
    sm = np.arange(350 * 3, dtype=np.float32).reshape(350, 3)   # 7 s at 20 ms
    words = [("one", 0.5, 0.4), ("two", 2.0, 0.4), ("three", 4.0, 0.5), ("four", 6.2, 0.4)]
    cuts = [_cut(tmp_path, "a", _speech(7.0), "one two three four", words=words, sm_feats=sm)]
    out = tmp_path / "win.jsonl.gz"
    result = segment_cuts(_save(tmp_path, cuts), out, window=3.0, min_window=1.0, progress=False)
    windows = _load(out)
    assert [w.id for w in windows] == ["a_w000", "a_w001", "a_w002"]
    assert [w.supervisions[0].text for w in windows] == ["one two", "three", "four"]
    assert [w.duration for w in windows] == pytest.approx([3.0, 3.0, 1.0])
    assert result.num_windows == 3 and result.text_sources == {"alignment": 3}
    w1 = windows[1]
    assert w1.custom["window"] == {"source": "a", "index": 1, "offset": 3.0, "text_source": "alignment"}
    assert "lm_feats" not in w1.custom                       # the whole utterance's LM states are gone
    np.testing.assert_array_equal(w1.load_custom("sm_feats"), sm[150:300])   # time-aligned frames kept
    np.testing.assert_array_equal(w1.load_audio()[0], cuts[0].load_audio()[0][3 * SR: 6 * SR])
    assert w1.supervisions[0].start == 0.0 and w1.supervisions[0].duration == pytest.approx(3.0)


def test_segment_without_alignment_needs_asr_or_estimate(tmp_path):
    cuts = [_cut(tmp_path, "a", _speech(4.0), "no alignment here")]
    path = _save(tmp_path, cuts)
    with pytest.raises(DmttsError, match="has no word alignment.*--asr faster-whisper"):
        segment_cuts(path, tmp_path / "w.jsonl.gz", progress=False)
    with pytest.raises(DmttsError, match="only one"):
        segment_cuts(path, tmp_path / "w.jsonl.gz", asr=object(), estimate_words=True, progress=False)


def test_segment_with_estimated_words(tmp_path):
    # 0.5 s silence, 5 s of "speech", 0.5 s silence; 5 equal words -> midpoints 1, 2, 3, 4, 5 s
    cuts = [_cut(tmp_path, "a", _speech(5.0, lead=0.5, tail=0.5), "aaa bbb ccc ddd eee")]
    out = tmp_path / "w.jsonl.gz"
    segment_cuts(_save(tmp_path, cuts), out, estimate_words=True, progress=False)
    windows = _load(out)
    assert [w.supervisions[0].text for w in windows] == ["aaa bbb", "ccc ddd eee"]
    assert windows[0].custom["window"]["text_source"] == "estimated"


class _CountingASR:
    name = "fake-asr"

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = [], fail_after

    def transcribe(self, wavs):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # a crash in the middle of the run
        self.calls.append(len(wavs))
        return [f"words of {len(w) / SR:.2f} seconds" for w in wavs]


def test_segment_with_asr_batches_and_resumes_after_a_crash(tmp_path):
    cuts = [_cut(tmp_path, f"c{i}", _speech(4.0 + i, seed=i), "reference text") for i in range(4)]
    path = _save(tmp_path, cuts)
    expected_out = tmp_path / "all.jsonl.gz"
    asr = _CountingASR()
    segment_cuts(path, expected_out, asr=asr, batch_size=3, progress=False)
    expected = _load(expected_out)
    assert [w.supervisions[0].text for w in expected][:2] == ["words of 3.00 seconds", "words of 1.00 seconds"]
    assert sum(asr.calls) == len(expected) == 2 + 2 + 2 + 3   # 4, 5, 6, 7 s -> 2, 2, 2, 3 windows

    out = tmp_path / "resumed.jsonl.gz"
    with pytest.raises(KeyboardInterrupt):
        segment_cuts(path, out, asr=_CountingASR(fail_after=1), batch_size=3, progress=False)
    assert not out.exists()
    partial = out.with_name(out.name + ".partial.jsonl")
    done = [json.loads(line)["source"] for line in partial.read_text().splitlines()
            if json.loads(line).get("type") == "source_done"]
    assert done == ["c0", "c1"]                              # the first batch (4 windows) was committed
    with open(partial, "a") as f:
        f.write('{"id": "torn')                              # a line torn by a hard kill
    asr2 = _CountingASR()
    result = segment_cuts(path, out, asr=asr2, batch_size=3, progress=False)
    assert result.num_resumed == 2 and sum(asr2.calls) == 5  # only c2 and c3 were transcribed
    assert [w.to_dict() for w in _load(out)] == [w.to_dict() for w in expected]
    assert not partial.exists()
    # a finished output is left alone
    assert "already exists" in segment_cuts(path, out, asr=asr2, progress=False).summary()


def test_segment_cli_error_names_the_fix(tmp_path, capsys):
    from dmtts.cli import main

    assert main(["segment", "--cuts", str(tmp_path / "missing.jsonl.gz"), "--out", str(tmp_path / "o.jsonl.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_codec_dataset_uses_windows_whole(tmp_path):
    from dmtts.data.codec_dataset import CodecCropDataset

    sm = np.zeros((350, 3), np.float32)
    cuts = [_cut(tmp_path, "a", _speech(7.0), "one two", words=[("one", 0.5, 0.4), ("two", 4.0, 0.4)],
                 sm_feats=sm)]
    out = tmp_path / "win.jsonl.gz"
    segment_cuts(_save(tmp_path, cuts), out, window=3.0, min_window=1.0, progress=False)
    windows = _load(out)
    batch = CodecCropDataset(crop_seconds=3.0, load_sm=True)[windows]
    assert batch["lengths"].tolist() == [3 * SR, 3 * SR, 1 * SR]
    np.testing.assert_array_equal(batch["audio"][1, 0].numpy(), windows[1].load_audio()[0])
    assert batch["sm_feats"].shape == (3, 150, 3)
    with pytest.raises(DmttsError, match="set data.crop_seconds to the window length"):
        CodecCropDataset(crop_seconds=1.0)[windows]
