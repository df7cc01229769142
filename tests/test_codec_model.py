"""DMCodec shapes, n_q truncation, export round trip, chunked encoding and bad inputs."""

import json

import numpy as np
import pytest
import torch

from codec_helpers import micro_config
from dmtts.codec.model import DMCodec
from dmtts.errors import DmttsError


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    m = DMCodec(micro_config().model)
    m.train()
    m(torch.randn(2, 1, 16000) * 0.1)  # k-means initialises the codebooks
    return m.eval()


def test_one_second_gives_50_frames(codec):
    with torch.inference_mode():
        codes = codec.encode(torch.randn(2, 1, 16000) * 0.1)
        assert codes.shape == (2, 8, 50)
        assert codes.dtype == torch.int64
        assert codec.encode(torch.randn(1, 1, 16001) * 0.1).shape[-1] == 51
        wav = codec.decode(codes)
    assert wav.shape == (2, 1, 16000)
    out = codec(torch.randn(1, 1, 16000) * 0.1)
    assert out.wav.shape == (1, 1, 16000) and out.codes.shape == (1, 8, 50)
    assert len(out.levels) == 8 and out.levels[0].shape == (1, 16, 50)
    assert codec.frame_rate == 50 and DMCodec.from_preset("paper").bitrate() == 4000


def test_nq_truncation(codec):
    x = torch.randn(1, 1, 8000) * 0.1
    with torch.inference_mode():
        full = codec.encode(x)
        three = codec.encode(x, n_q=3)
        assert torch.equal(three, full[:, :3])
        assert codec.decode(three).shape == (1, 1, 8000)
        lat3 = codec.quantizer.decode(three)
        lat8 = codec.quantizer.decode(full)
    assert not torch.allclose(lat3, lat8)
    for bad in (0, 9):
        with pytest.raises(DmttsError, match="n_q"):
            codec.encode(x, n_q=bad)


def test_fold_weight_norm_keeps_outputs(codec):
    x = torch.randn(1, 1, 4000) * 0.1
    folded = codec.clone().prepare_for_inference()
    assert folded.weight_norm_folded and not codec.weight_norm_folded
    with torch.no_grad():
        assert torch.allclose(folded.encoder(x), codec.encoder(x), atol=1e-5)


def test_export_then_from_pretrained_gives_identical_codes(codec, tmp_path):
    codec.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dimension"] == 16
    loaded = DMCodec.from_pretrained(tmp_path / "m")
    assert loaded.weight_norm_folded and not loaded.training
    x = torch.randn(2, 1, 12000) * 0.1
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), codec.encode(x))
        c = loaded.encode(x)
        assert torch.allclose(loaded.decode(c), codec.decode(c), atol=1e-5)


def test_chunked_encoding_matches_whole_file(codec):
    torch.manual_seed(1)
    x = torch.randn(1, 1, 16000 * 3) * 0.1
    with torch.inference_mode():
        whole = codec.encode(x)
        chunked = codec.encode_long(x, chunk_seconds=1.0, context_seconds=0.5)
        wav = codec.decode_long(whole, chunk_frames=50, context_frames=10)
    assert chunked.shape == whole.shape
    assert (chunked[:, 0] == whole[:, 0]).float().mean() > 0.9
    assert wav.shape == (1, 1, 16000 * 3)


def test_bad_inputs(codec, tmp_path):
    with pytest.raises(DmttsError, match="empty"):
        codec.encode(torch.zeros(1, 1, 0))
    with pytest.raises(DmttsError, match="NaN"):
        codec.encode(torch.full((1, 1, 320), float("nan")))
    with pytest.raises(DmttsError, match="expects 16000 Hz"):
        codec.encode(torch.zeros(1, 1, 320), sample_rate=8000)
    with pytest.raises(DmttsError, match="mono"):
        codec.encode(torch.zeros(1, 2, 320))
    with pytest.raises(DmttsError, match="does not exist"):
        DMCodec.from_pretrained(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(DmttsError, match="config.json"):
        DMCodec.from_pretrained(tmp_path / "half")
    with pytest.raises(DmttsError, match="code values"):
        codec.decode(torch.full((1, 2, 5), 999))


def test_cli_bad_inputs_exit_2(codec, tmp_path, capsys):
    import soundfile as sf

    from dmtts.cli import main

    codec.save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    assert main(["codec", "encode", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "empty.wav"),
                 "--out", str(tmp_path / "c.npy")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["codec", "encode", "--model", str(tmp_path / "nope"), "--in", str(tmp_path / "empty.wav"),
                 "--out", str(tmp_path / "c.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # another sample rate is resampled by the CLI: 0.5 s at 8 kHz -> 25 frames
    sf.write(tmp_path / "8k.wav", (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32), 8000)
    assert main(["codec", "reconstruct", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "8k.wav"),
                 "--out", str(tmp_path / "r.wav")]) == 0
    assert sf.info(str(tmp_path / "r.wav")).frames == 8000
    assert main(["codec", "encode", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "8k.wav"),
                 "--out", str(tmp_path / "c.npy"), "--n-q", "4"]) == 0
    assert np.load(tmp_path / "c.npy").shape == (4, 25)
    assert main(["codec", "decode", "--model", str(tmp_path / "m"), "--in", str(tmp_path / "c.npy"),
                 "--out", str(tmp_path / "d.wav")]) == 0
    assert sf.info(str(tmp_path / "d.wav")).frames == 8000
    assert main(["codec", "info", "--model", str(tmp_path / "m")]) == 0
    assert "frame rate 50 Hz" in capsys.readouterr().out


def test_cache_friendly_chunked_inference_equals_plain_forward(codec):
    x = torch.randn(2, 1, 16000 * 2 + 77) * 0.1
    with torch.inference_mode():
        plain = codec.encoder(x)
        chunked = codec.encoder.forward_chunked(x, chunk_frames=10, halo_frames=4)
        assert torch.allclose(plain, chunked, atol=1e-5)
        z = codec.quantizer.decode(codec.quantizer.encode(plain))
        assert torch.allclose(codec.decoder(z), codec.decoder.forward_chunked(z, 10, 4), atol=1e-5)


def test_scaled_conv_init_keeps_the_signal_time_varying():
    """Regression: with PyTorch's default conv init the encoder latent is ~constant over time
    (biases dominate), and short trainings collapse onto a few codes."""
    import torch

    from dmtts.codec.config import model_config
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    wav = (0.1 * torch.sin(2 * torch.pi * 3 * t) * torch.randn(16000)).reshape(1, 1, -1)
    ratios = {}
    for init in ("scaled", "torch"):
        cfg = model_config("tiny")
        cfg.conv_init = init
        codec = DMCodec(cfg).eval()
        with torch.no_grad():
            z = codec.encoder(wav)
        ratios[init] = (z.std(-1).mean() / z.std()).item()
    assert ratios["scaled"] > 0.5
    assert ratios["torch"] < 0.2
    # Weight norm's g follows the new weights: the parametrised weight equals v exactly.
    conv = DMCodec(model_config("tiny")).encoder.model[0].conv
    v = conv.parametrizations.weight.original1
    assert torch.allclose(conv.weight, v, atol=1e-6)
    assert torch.all(conv.bias == 0)


def test_unpadded_batch_encoder_matches_items_alone():
    """The GPU path of encode_batch: per-item convolutions + a packed BiLSTM give each item's
    latents as if encoded alone (float rounding only); zero-padding does not."""
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    m = DMCodec.from_preset("tiny").eval()
    wavs = [torch.randn(n) * 0.1 for n in (6880, 37920, 16000, 12960)]
    with torch.inference_mode():
        batched = m.encoder.forward_unpadded([w[None] for w in wavs])
        x = torch.zeros(len(wavs), 1, max(len(w) for w in wavs))
        for i, w in enumerate(wavs):
            x[i, 0, : len(w)] = w
        padded = m.encoder(x)
        for i, w in enumerate(wavs):
            alone = m.encoder(w[None, None])[0]
            assert batched[i].shape == alone.shape
            assert torch.allclose(batched[i], alone, atol=1e-5)
        short = wavs[0]
        alone = m.encoder(short[None, None])[0]
        assert not torch.allclose(padded[0, :, : alone.shape[-1]], alone, atol=1e-3)


def test_float16_export_halves_the_file_and_loads_as_float32(tmp_path):
    from safetensors.torch import load_file

    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    m = DMCodec.from_preset("tiny")
    m.train()
    with torch.no_grad():
        m(torch.randn(1, 1, 16000) * 0.1)  # k-means codebooks
    m.eval()
    m.save_pretrained(tmp_path / "fp32")
    m.save_pretrained(tmp_path / "fp16", dtype="float16")
    size32 = (tmp_path / "fp32/model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16/model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    stored = load_file(str(tmp_path / "fp16/model.safetensors"))
    assert any(v.dtype == torch.float16 for v in stored.values())
    a, b = DMCodec.from_pretrained(tmp_path / "fp32"), DMCodec.from_pretrained(tmp_path / "fp16")
    assert all(p.dtype == torch.float32 for p in b.parameters())
    x = torch.randn(1, 1, 8000) * 0.1
    with torch.inference_mode():
        ca, cb = a.encode(x), b.encode(x)
        assert (ca == cb).float().mean() > 0.9
        ya, yb = a.decode(ca), b.decode(ca)
    assert torch.allclose(ya, yb, atol=1e-2 * float(ya.abs().max()) + 1e-4)
