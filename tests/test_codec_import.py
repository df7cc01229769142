"""``dmtts codec import``: a public SpeechTokenizer model (the ``speechtokenizer`` package, random
weights, small config) saved as its release format (config.json + .pt state dict), imported,
gives the same codes and the same waveforms as the public model."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dmtts.cli import main
from dmtts.codec.model import DMCodec, load_semantic_projection
from dmtts.errors import DmttsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from codec_speed import load_speechtokenizer_class  # noqa: E402  (imports it without its trainer)

PUBLIC_CONFIG = {  # the release's keys; small sizes so the test is fast
    "n_filters": 4, "strides": [8, 5, 4, 2], "dimension": 32, "semantic_dimension": 24, "bidirectional": True,
    "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1, "lstm_layers": 2,
    "activation": "ELU", "codebook_size": 16, "n_q": 3, "sample_rate": 16000,
    "num_mels": 80, "mel_loss_lambdas": [45, 1, 1, 1], "commitment_loss_lambda": 10,  # training keys
}


def _speech_like(seconds: float = 0.7, sr: int = 16000) -> torch.Tensor:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 2 * t)) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2 + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return torch.tensor(wav, dtype=torch.float32)[None, None]


@pytest.fixture(scope="module")
def public_release(tmp_path_factory):
    """A random-weight public model and its release files."""
    cls = load_speechtokenizer_class()
    assert cls is not None, "the speechtokenizer package is missing: `make venv` installs it (--no-deps)"
    torch.manual_seed(0)
    model = cls(PUBLIC_CONFIG).eval()
    x = _speech_like()
    with torch.no_grad():
        # PyTorch's default init gives latents that hardly vary over time (a one-code model);
        # a variance-preserving init with zero biases lets the audio through to the RVQ
        for mod in model.modules():
            if hasattr(mod, "weight_v"):
                v, fan_in = mod.weight_v, mod.weight_v[0].numel()
                v.normal_(0.0, fan_in ** -0.5)
                mod.weight_g.copy_(v.reshape(v.shape[0], -1).norm(dim=1).reshape(mod.weight_g.shape))
                mod.bias.zero_()
        # trained-looking codebooks: each level's entries are frames of that level's residual
        residual = model.encoder(x)  # [1, D, T]
        for layer in model.quantizer.vq.layers:
            frames = residual[0].t()
            pick = torch.randperm(frames.shape[0])[:PUBLIC_CONFIG["codebook_size"]]
            layer._codebook.embed.copy_(frames[pick] + 0.01 * frames.std() * torch.randn_like(frames[pick]))
            layer._codebook.inited.fill_(1.0)
            residual = residual - layer.decode(layer.encode(residual))
    d = tmp_path_factory.mktemp("release")
    (d / "config.json").write_text(json.dumps(PUBLIC_CONFIG))
    torch.save(model.state_dict(), d / "SpeechTokenizer.pt")
    return model, d, x


def test_import_gives_the_public_codes_and_waveforms(public_release, tmp_path, capsys):
    public, release, x = public_release
    assert any(k.endswith("weight_g") for k in public.state_dict())  # weight norm unfolded in the release
    out = tmp_path / "imported"
    assert main(["codec", "import", "--from", "speechtokenizer", "--config", str(release / "config.json"),
                 "--checkpoint", str(release / "SpeechTokenizer.pt"), "--out", str(out)]) == 0
    assert "semantic_projection.safetensors" in capsys.readouterr().out
    ours = DMCodec.from_pretrained(out)
    assert ours.weight_norm_folded and ours.hop_length == 320 and ours.n_q == 3
    with torch.inference_mode():
        theirs_codes = public.encode(x)  # [n_q, B, T]
        our_codes = ours.encode(x)  # [B, n_q, T]
        assert torch.equal(our_codes, theirs_codes.transpose(0, 1))
        assert len(set(our_codes[0, 0].tolist())) > 3  # a real test: several codes in use
        theirs_wav = public.decode(theirs_codes)
        our_wav = ours.decode(our_codes)
        latents_theirs, latents_ours = public.encoder(x), ours.encoder(x)
    torch.testing.assert_close(latents_ours, latents_theirs, rtol=1e-4, atol=1e-5)
    assert our_wav.shape == theirs_wav.shape
    torch.testing.assert_close(our_wav, theirs_wav, rtol=1e-4, atol=1e-5)

    # the distillation projection is kept aside and named in config.json
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["semantic_projection"]["in_dim"] == 32 and cfg["semantic_projection"]["out_dim"] == 24
    assert cfg["imported_from"]["source"] == "speechtokenizer"
    proj = load_semantic_projection(out)
    torch.testing.assert_close(proj.weight, public.transform.weight.detach())
    torch.testing.assert_close(proj.bias, public.transform.bias.detach())
    assert not any(k.startswith("transform") for k in ours.state_dict())


def test_import_errors_name_the_file(public_release, tmp_path):
    from dmtts.codec.import_public import import_public_checkpoint

    _, release, _ = public_release
    bad_cfg = tmp_path / "config.json"
    bad_cfg.write_text(json.dumps({**PUBLIC_CONFIG, "n_filters": 8}))  # does not match the weights
    with pytest.raises(DmttsError, match="does not match"):
        import_public_checkpoint(bad_cfg, release / "SpeechTokenizer.pt", tmp_path / "o")
    bad_cfg.write_text(json.dumps({k: v for k, v in PUBLIC_CONFIG.items() if k != "strides"}))
    with pytest.raises(DmttsError, match="lacks strides"):
        import_public_checkpoint(bad_cfg, release / "SpeechTokenizer.pt", tmp_path / "o")
    with pytest.raises(DmttsError, match="--checkpoint .* does not exist"):
        import_public_checkpoint(release / "config.json", tmp_path / "missing.pt", tmp_path / "o")
