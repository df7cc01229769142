"""Streaming synthesis (dmtts.tts.streaming) on tiny random models: the chunk schedule, chunks
emitted while the AR is still generating, the streamed audio against whole-utterance synthesis,
bad settings, the CLI's --stream, the int8 speed option; the chunked codec on the shipped codec."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from dmtts.cli import main
from dmtts.errors import DmttsError
from synthesis_fixtures import PRETRAINED, make_tiny_tts_models

PROMPT_TEXT = "The quick brown fox."
TEXT = "Hello world, this is a test."


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    # at least 3 frames per target symbol: the random AR runs long enough to stream several chunks
    return make_tiny_tts_models(tmp_path_factory.mktemp("stream_models"), max_len_ratio=6.0, min_len_ratio=3.0)


@pytest.fixture(scope="module")
def synth(models):
    from dmtts.tts.synthesize import Synthesizer

    return Synthesizer(models["ar"], models["nar"], models["codec"], max_retries=0)


@pytest.fixture(scope="module")
def item(models):
    from dmtts.tts.synthesize import SynthesisItem

    return SynthesisItem(TEXT, sf.read(models["prompt"], dtype="float32")[0], PROMPT_TEXT)


def _stream(synth, item, settings, seed=3):
    from dmtts.tts.streaming import StreamRecord, stream_sentence

    record = StreamRecord()
    chunks = list(stream_sentence(synth, item, settings, torch.Generator().manual_seed(seed), record))
    return chunks, record


def test_chunk_sizes_double_up_to_the_largest():
    from dmtts.tts.streaming import StreamSettings

    s = StreamSettings(first_chunk_frames=10, chunk_frames=50)
    assert [s.chunk_size(i) for i in range(6)] == [10, 20, 40, 50, 50, 50]
    assert StreamSettings(7, 7).chunk_size(100) == 7


@pytest.mark.parametrize("kwargs, message", [
    (dict(lookahead_frames=-1), "--stream-lookahead-frames -1: must be an integer >= 0"),
    (dict(chunk_frames=0, first_chunk_frames=0), "--stream-first-chunk-frames 0: must be an integer >= 1"),
    (dict(chunk_frames=0), "--stream-chunk-frames 0: must be an integer >= 1"),
    (dict(context_frames=-3), "--stream-context-frames -3: must be an integer >= 0"),
    (dict(first_chunk_frames=60, chunk_frames=50), "--stream-first-chunk-frames 60 is larger than --stream-chunk-frames 50"),
])
def test_bad_settings_are_clear_errors(synth, item, kwargs, message):
    from dmtts.tts.streaming import StreamSettings, stream_sentence

    with pytest.raises(DmttsError, match=message):
        next(stream_sentence(synth, item, StreamSettings(**kwargs)))


def test_chunks_arrive_while_the_ar_is_generating(synth, item):
    """Count the AR's steps at each chunk: a chunk of frames [s, e) comes out as soon as the AR has
    made e + lookahead + codec lookahead frames, long before it ends."""
    from dmtts.tts.streaming import StreamRecord, StreamSettings, codec_lookahead_frames, stream_sentence

    settings = StreamSettings(first_chunk_frames=8, chunk_frames=16, lookahead_frames=2, context_frames=10)
    steps_made = []
    original = synth.ar.generate_steps

    def counting(*args, **kwargs):
        for step in original(*args, **kwargs):
            steps_made.append(step[0])
            yield step

    record = StreamRecord()
    synth.ar.generate_steps = counting
    try:
        steps_at_chunk = [len(steps_made) for _ in stream_sentence(synth, item, settings, torch.Generator().manual_seed(3),
                                                                   record)]
    finally:
        synth.ar.generate_steps = original
    total = len(record.level1)
    assert total >= 60  # min_len_ratio 3 x the target symbols
    ends = np.cumsum([c["frames"] for c in record.chunks])
    assert [c["frames"] for c in record.chunks[:-1]] == [8] + [16] * (len(record.chunks) - 2)
    assert ends[-1] == total
    delay = settings.lookahead_frames + codec_lookahead_frames(synth.codec)
    for k, (end, steps) in enumerate(zip(ends[:-1], steps_at_chunk[:-1])):
        assert steps == end + delay, (k, end, steps)  # emitted at the first step that allows it
        assert not record.chunks[k]["ar_finished"]
    assert steps_at_chunk[0] < total / 4  # the first chunk while most of the AR is still to come
    assert record.chunks[-1]["ar_finished"] and len(record.chunks) >= 4
    assert sum(len(c) for c in (_stream(synth, item, settings)[0])) == total * synth.hop
    # where the time to the first chunk went: every part measured before it, within its total
    split = record.first_chunk_split
    assert set(split) == {"prepare", "ar_prefill", "ar", "nar", "codec"}
    assert 0 < split["ar_prefill"] <= split["ar"] and split["nar"] > 0 and split["codec"] > 0
    assert split["prepare"] + split["ar"] + split["nar"] + split["codec"] <= record.first_chunk_seconds
    assert split["nar"] < record.seconds["nar"]  # later windows add to the totals, not to the split


def test_streamed_audio_equals_whole_utterance_synthesis(synth, item):
    """Level-1 codes: identical to whole-utterance synthesis with the same seed. One window over
    the whole utterance: identical audio. Small windows: the audio equals the whole-utterance
    decoding of the streamed codes within 1e-4 of the signal's peak (the chunked codec; float
    rounding only), and no chunk boundary steps further than the signal does around it."""
    from dmtts.tts.streaming import StreamSettings, boundary_jumps

    whole = synth.synthesize_results([item], torch.Generator().manual_seed(3))[0]
    one_chunk, rec1 = _stream(synth, item, StreamSettings(10_000, 10_000, 0, 0))
    assert len(one_chunk) == 1
    np.testing.assert_allclose(one_chunk[0], whole.wav, atol=1e-6)

    chunks, rec = _stream(synth, item, StreamSettings(first_chunk_frames=4, chunk_frames=12, lookahead_frames=2,
                                                      context_frames=8))
    assert len(chunks) >= 5
    assert torch.equal(rec.level1, rec1.level1)  # the AR is the same sampler, same generator
    streamed = np.concatenate(chunks)
    reference = synth.codec.decode(rec.codes.T[None])[0, 0].numpy()
    assert streamed.shape == reference.shape == whole.wav.shape
    assert np.abs(streamed - reference).max() <= 1e-4 * np.abs(reference).max()
    boundaries = list(np.cumsum([len(c) for c in chunks])[:-1])
    assert max(boundary_jumps(streamed, boundaries)) <= 1.0
    assert rec.check["failure"] == whole.failure  # the same level-1 codes pass the same checks


def test_boundary_jumps_and_crossfade_by_hand():
    from dmtts.tts.streaming import boundary_jumps, crossfade

    ramp = np.arange(10, dtype=np.float32) * 0.1  # steps of 0.1
    assert boundary_jumps(ramp, [5], radius=3) == pytest.approx([1.0])
    clicked = ramp.copy()
    clicked[5:] += 0.3  # a step of 0.4 at sample 5 among steps of 0.1
    assert boundary_jumps(clicked, [5], radius=3) == pytest.approx([4.0])
    faded = crossfade(np.ones(4, np.float32), np.zeros(6, np.float32))
    # raised cosine over 4 samples: weight of the new signal 0, 0.146, 0.5, 0.854
    np.testing.assert_allclose(faded, [1, 1 - 0.14644661, 0.5, 0.14644661, 0, 0], atol=1e-6)


def test_playback_stalls_by_hand():
    """Chunks of 1 s at 50 frames/s: ready at 0, 0.5 and 3.0 s -> playing 0-1, 1-2, then a wait
    from 2.0 to 3.0; one ready late by 0.25 s after a short chunk adds 0.25."""
    from dmtts.tts.streaming import playback_stalls

    assert playback_stalls([{"at": 0.0, "frames": 50}, {"at": 0.5, "frames": 50}, {"at": 3.0, "frames": 50}], 50) == 1.0
    assert playback_stalls([{"at": 1.0, "frames": 10}, {"at": 1.45, "frames": 50}], 50) == pytest.approx(0.25)
    assert playback_stalls([{"at": 2.0, "frames": 100}], 50) == 0.0


def test_stdout_wav_is_a_streamed_wav_of_the_same_samples(tmp_path):
    from dmtts.tts.streaming import StdoutWav

    x = np.random.default_rng(0).uniform(-1.2, 1.2, 3000).astype(np.float32)
    buf = io.BytesIO()
    out = StdoutWav(16000, buf)
    out.write(x[:1000])
    out.write(x[1000:])
    out.close()
    data = buf.getvalue()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and len(data) == 44 + 2 * len(x)
    sf.write(tmp_path / "ref.wav", np.clip(x, -1, 1), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(np.frombuffer(data[44:], "<i2"), sf.read(tmp_path / "ref.wav", dtype="int16")[0])


def _args(m, *extra):
    return ["synthesize", "--ar", str(m["ar"]), "--nar", str(m["nar"]), "--codec", str(m["codec"]),
            "--prompt-audio", str(m["prompt"]), "--prompt-text", PROMPT_TEXT, "--seed", "3", *extra]


def test_cli_stream_writes_the_streamed_audio(models, synth, tmp_path):
    from dmtts.tts.streaming import StreamSettings, stream_text

    out = tmp_path / "streamed.wav"
    text = "Hello there, my friend. The fox jumps over it."  # two sentences, joined by a pause
    assert main(_args(models, "--text", text, "--out", str(out), "--stream", "--stream-first-chunk-frames", "5",
                      "--stream-chunk-frames", "20", "--no-progress")) == 0
    records = []
    prompt = sf.read(models["prompt"], dtype="float32")[0][:48000]
    api = np.concatenate(list(stream_text(synth, text, prompt, PROMPT_TEXT, StreamSettings(5, 20),
                                          torch.Generator().manual_seed(3), records=records)))
    assert len(records) == 2 and all(len(r.chunks) >= 2 for _, r in records)
    sf.write(tmp_path / "api.wav", np.clip(api, -1, 1), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], sf.read(tmp_path / "api.wav", dtype="int16")[0])
    assert not list(tmp_path.glob(".*tmp*"))  # renamed into place


@pytest.mark.parametrize("extra, message", [
    (["--text", TEXT, "--out", "x.wav", "--stream", "--stream-chunk-frames", "0"], "--stream-chunk-frames 0"),
    (["--text", TEXT, "--out", "x.wav", "--stream", "--stream-lookahead-frames", "-1"], "--stream-lookahead-frames -1"),
    (["--text-file", "t.txt", "--output-dir", "o", "--stream"], "--stream streams one text"),
    (["--text", TEXT, "--out", "x.wav", "--quantize", "int8", "--dtype", "float16"], "--quantize int8 replaces"),
])
def test_cli_bad_stream_and_speed_options(models, capsys, extra, message):
    assert main(_args(models, *extra)) != 0
    assert message in capsys.readouterr().err


def test_int8_quantizes_the_linear_layers(models, item):
    from dmtts.tts.synthesize import Synthesizer

    q = Synthesizer(models["ar"], models["nar"], models["codec"], max_retries=0, quantize="int8")
    kinds = {type(m).__module__ for m in q.ar.modules()} | {type(m).__module__ for m in q.nar.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    assert not any(type(m).__name__ == "Linear" and type(m).__module__.startswith("dmtts") for m in q.ar.modules())
    wav = q.synthesize([item], torch.Generator().manual_seed(3))[0]
    assert len(wav) >= 320 and np.isfinite(wav).all()


def _snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((estimate.astype(np.float64) - ref) ** 2)))


def _whole_and_streamed(codec, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``wav`` encoded, then decoded whole and chunk by chunk as streaming does (chunks of 5
    frames doubling to 20); returns both and the chunk boundaries (samples)."""
    from dmtts.tts.streaming import StreamSettings, decode_in_chunks

    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(wav)[None, None])[0].T  # [T, n_q]
        whole = codec.decode(codes.T[None])[0, 0].numpy()
        streamed, boundaries = decode_in_chunks(codec, codes, StreamSettings(first_chunk_frames=5, chunk_frames=20))
    assert len(boundaries) + 1 >= 5
    return whole, streamed, boundaries


@pytest.mark.skipif(not (PRETRAINED / "codec" / "config.json").is_file(), reason="the shipped demo models are missing")
def test_chunked_decoding_of_the_shipped_codec_is_click_free_and_matches_the_whole_decoding():
    """Real codes (the shipped prompt, encoded by the shipped codec) decoded chunk by chunk as
    streaming does: no chunk boundary steps further than the signal does around it, and the
    audio equals the whole decoding up to float rounding (SNR > 80 dB; with the default chunks
    `local/codec_stream_snr.py` measures 103.5 dB for the shipped codec, 90.4 for the one before). The
    shipped harmonic codec's decoder LSTM remembers for seconds: without the carried LSTM state
    (LSTMCarry) this was -3 dB, without the phase hand-over the joins mix two phases."""
    from dmtts.codec.model import load_codec
    from dmtts.tts.streaming import boundary_jumps

    codec = load_codec(PRETRAINED / "codec")
    whole, streamed, boundaries = _whole_and_streamed(codec, sf.read(PRETRAINED / "prompt.wav", dtype="float32")[0])
    assert streamed.shape == whole.shape
    assert max(boundary_jumps(streamed, boundaries)) <= 1.0
    assert _snr(whole, streamed) > 80, _snr(whole, streamed)


def _loud_harmonic_codec():
    """A tiny random codec with the harmonic head, its harmonics (amplitude 1 each) louder than
    its iSTFT part, so a phase error at a join shows. No LSTM, so that only the phase hand-over
    is tested (the LSTM's carried state has its own test below)."""
    from dmtts.codec.config import training_config
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    codec = DMCodec(training_config("tiny", {"model": {"decoder_head": "harmonic", "lstm_layers": 0}}).model).eval()
    with torch.no_grad():
        codec.decoder.model[-1].envelope.bias.fill_(0.0)
    return codec


def _glide(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 60 * np.sin(2 * np.pi * 0.5 * t)) / 16000
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, 12))).astype(np.float32)


def _streamed_and_long_equal_whole(codec, wav: np.ndarray) -> np.ndarray:
    """Asserts that streaming's chunks and decode_long's chunks (40 frames, context 20) of
    ``wav``'s codes equal one whole decode (SNR > 60 dB); returns the whole decode."""
    whole, streamed, _ = _whole_and_streamed(codec, wav)
    assert _snr(whole, streamed) > 60, _snr(whole, streamed)
    with torch.inference_mode():
        long = codec.decode_long(codec.encode(torch.from_numpy(wav)[None, None]), chunk_frames=40,
                                 context_frames=20)[0, 0].numpy()
    assert long.shape == whole.shape and _snr(whole, long) > 60, _snr(whole, long)
    return whole


def test_chunked_and_long_decoding_of_a_harmonic_codec_continue_its_phase(monkeypatch):
    """The harmonic head's oscillators run on across windows (HarmonicPhase): streamed chunks and
    decode_long's chunks equal one whole decode (SNR > 60 dB). Without the phase hand-over each
    window restarts its phase and the joins mix two phases (SNR < 20 dB): what this guards."""
    from dmtts.codec.periodic import HarmonicPhase

    codec = _loud_harmonic_codec()
    wav = _glide()
    whole = _streamed_and_long_equal_whole(codec, wav)

    monkeypatch.setattr(HarmonicPhase, "anchored", classmethod(lambda cls, sample, cycles, first_frame=0: cls()))
    whole, restarted, _ = _whole_and_streamed(codec, wav)
    assert _snr(whole, restarted) < 20, _snr(whole, restarted)


def test_chunked_and_long_decoding_continue_the_noise_rotation_by_frame_index(monkeypatch):
    """With the aperiodic part's phase rotation (``harmonic_noise_rotation``), each window reads
    the rotation table from its first frame's index in the signal: streamed chunks and
    decode_long's chunks equal one whole decode (SNR > 60 dB). Windows that start the table
    at their own first frame disagree with it (SNR < 20 dB): what this guards."""
    from dmtts.codec.config import training_config
    from dmtts.codec.model import DMCodec
    from dmtts.codec.periodic import HarmonicPhase

    torch.manual_seed(0)
    config = training_config("tiny", {"model": {"decoder_head": "harmonic", "lstm_layers": 0,
                                                "harmonic_noise_rotation": True}}).model
    codec = DMCodec(config).eval()
    with torch.no_grad():  # harmonics silenced: only the rotated iSTFT part is heard
        codec.decoder.model[-1].envelope.bias.fill_(-30.0)
    wav = _glide()
    whole = _streamed_and_long_equal_whole(codec, wav)

    anchored = HarmonicPhase.anchored.__func__
    monkeypatch.setattr(HarmonicPhase, "anchored",
                        classmethod(lambda cls, sample, cycles, first_frame=0: anchored(cls, sample, cycles)))
    _, misplaced, _ = _whole_and_streamed(codec, wav)
    assert _snr(whole, misplaced) < 20, _snr(whole, misplaced)


def _long_memory_codec(head: str):
    """A tiny random codec whose decoder LSTM remembers for hundreds of frames (forget gates
    biased to ~1), as a trained one can: its state must be carried between windows."""
    from dmtts.codec.config import training_config
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    codec = DMCodec(training_config("tiny", {"model": {"decoder_head": head}}).model).eval()
    lstm = codec.decoder.model[codec.decoder._lstm_index()].lstm
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[lstm.hidden_size: 2 * lstm.hidden_size] = 8.0  # gate order: input, forget, cell, output
        if head == "harmonic":
            codec.decoder.model[-1].envelope.bias.fill_(0.0)
    return codec


@pytest.mark.parametrize("head", ["waveform", "harmonic"])
def test_chunked_and_long_decoding_carry_the_decoder_lstm_state(head, monkeypatch):
    """Each window's LSTM starts from the state a whole decode has there (LSTMCarry): streamed
    chunks and decode_long's chunks equal one whole decode (SNR > 60 dB; 141 and 81 dB measured)
    although the LSTM remembers far longer than the 25-frame context. Restarting the LSTM per
    window, as before, gives about 0 dB (3 and -2 dB measured): what this guards."""
    from dmtts.codec.seanet import SLSTM

    codec = _long_memory_codec(head)
    assert codec.decoder.carry_lead_frames() == 3  # the input convolution's kernel of 7
    wav = _glide()
    whole = _streamed_and_long_equal_whole(codec, wav)
    with pytest.raises(DmttsError, match="decode_long needs context_frames >= 2"):
        codec.decode_long(codec.encode(torch.from_numpy(wav)[None, None]), chunk_frames=40, context_frames=1)

    carried = SLSTM.forward_carried

    def restarted(self, x, carry):
        carry.state = None
        return carried(self, x, carry)

    monkeypatch.setattr(SLSTM, "forward_carried", restarted)
    _, forgetful, _ = _whole_and_streamed(codec, wav)
    assert _snr(whole, forgetful) < 20, _snr(whole, forgetful)


def test_serve_streams_chunks_then_the_whole_wav(models, tmp_path):
    """The web app's streaming (the page: tests/test_browser.py): chunks as they come, each sent to
    the browser as WAV bytes, then the whole audio as a wav holding exactly those chunks."""
    from dmtts.serve.app import SynthesisService, wav_bytes

    service = SynthesisService(models["ar"], models["nar"], models["codec"], asr="none", out_dir=tmp_path)
    prompt = sf.read(models["prompt"], dtype="float32")[0][:48000]
    with pytest.raises(DmttsError, match="the text to synthesize is empty"):
        next(service.stream(prompt, PROMPT_TEXT, "  "))
    events = list(service.stream(prompt, PROMPT_TEXT, "Hello there, my friend. The fox jumps over it.", seed=3))
    chunks = [e[1] for e in events if e[0] == "chunk"]
    kind, path, note = events[-1]
    assert kind == "done" and len(chunks) >= 4 and all(e[0] == "chunk" for e in events[:-1])
    assert ", 2 sentences, streamed: first audio after" in note
    whole = sf.read(path, dtype="int16")[0]
    sf.write(tmp_path / "joined.wav", np.clip(np.concatenate(chunks), -1, 1), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(whole, sf.read(tmp_path / "joined.wav", dtype="int16")[0])
    sent, sr = sf.read(io.BytesIO(wav_bytes(chunks[0], 16000)), dtype="float32")
    assert sr == 16000 and np.abs(sent - chunks[0]).max() <= 1 / 32768 + 1e-7
