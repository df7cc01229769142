"""benchmarks/_memory.py: the peak-memory estimates of train_speed.py against hand computations,
and the check that stops a run which would not fit, saying what it needs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _memory  # noqa: E402


def test_codec_estimate_holds_every_system_state_and_the_largest_activations():
    # built - child base, summed: (1.50 - 0.23) + (1.08 - 0.23) + (0.56 - 0.23) = 2.45 GiB
    # Adam state: (174.9 + 174.5 + 36.6) M params x 12 B = 4.3139 GiB
    # activations: SpeechTokenizer's 1.09 GiB per audio second
    state = 386.0e6 * 12 / 2 ** 30
    assert _memory.codec_need_gib(1, 3.0) == pytest.approx(_memory.BASE_GIB + 2.45 + state + 3 * 1.09)
    assert _memory.codec_need_gib(6, 3.0) - _memory.codec_need_gib(1, 3.0) == pytest.approx(15 * 1.09)


def test_tts_estimate_counts_weights_optimizer_state_and_both_models_activations():
    params = {"ar": 100e6, "nar": 50e6}
    tokens = 2 * 4.0 * 62  # batch 2 x 4 s, 50 frames + 12 text tokens per second
    expected = 150e6 * 24 / 2 ** 30 + 2 * 134 * 6 * 512 * tokens / 2 ** 30
    got = _memory.tts_need_gib(6, 512, params, batch=2, seconds=4.0)
    assert got == pytest.approx(_memory.BASE_GIB + expected)
    assert _memory.tts_need_gib(6, 512, params, 2, 4.0, copies=2) == pytest.approx(_memory.BASE_GIB + 2 * expected)


def test_a_run_that_does_not_fit_stops_with_what_it_needs(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 8 * 2 ** 30)
    with pytest.raises(SystemExit) as e:
        _memory.check_fits({"codec": 10.0, "tts": 2.0}, "use --codec-batch 1")
    message = str(e.value)
    assert "needs about 10.0 GiB" in message and "8.0 GiB is available" in message
    assert "use --codec-batch 1" in message and "--no-memory-check" in message
    assert "8.0 GiB available" in _memory.check_fits({"tts": 2.0}, "")  # 2.0 x 1.15 fits in 8
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)
    assert "unknown" in _memory.check_fits({"tts": 2.0}, "")


def test_available_memory_is_read_from_this_machine():
    available = _memory.available_bytes()
    assert available is None or available > 0
    assert _memory.max_rss_bytes() > 0
