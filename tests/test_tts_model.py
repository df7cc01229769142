"""DM-Codec-TTS models: attention masks, KV-cache decoding, NAR prompt handling, sampling."""

import pytest
import torch

from dmtts.tts.config import TTSModelConfig
from dmtts.tts.model import IGNORE, ARModel, NARModel, ar_attention_mask, sample_token
from dmtts.tts.transformer import lengths_to_mask

CFG = TTSModelConfig(n_layers=2, n_heads=2, d_model=32, ffn_dim=64, codebook_size=16, text_vocab_size=20, dropout=0.0)


def _batch(B=3, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(4, 20, (B, L), generator=g)
    text_lens = torch.tensor([7, 5, 3])[:B]
    text = text.masked_fill(~lengths_to_mask(text_lens, L), 0)
    return text, text_lens


def test_ar_mask_text_bidirectional_audio_causal():
    text_lens = torch.tensor([3, 2])
    audio_valid = lengths_to_mask(torch.tensor([4, 2]), 4)
    m = ar_attention_mask(text_lens, 3, audio_valid)[:, 0]  # [B, 7, 7]
    assert m.shape == (2, 7, 7)
    # sample 0: text block fully connected, text never sees audio
    assert m[0, :3, :3].all() and not m[0, :3, 3:].any()
    # audio sees all text and exactly the audio at or before it
    assert m[0, 3:, :3].all()
    assert torch.equal(m[0, 3:, 3:], torch.ones(4, 4, dtype=torch.bool).tril())
    # sample 1: padded text key (index 2) and padded audio keys (5, 6) are never attended
    assert not m[1, :, 2].any() and not m[1, :, 5:].any()
    assert torch.equal(m[1, 3:5, 3:5], torch.ones(2, 2, dtype=torch.bool).tril())


def test_ar_mask_behaviour_future_audio_does_not_change_past_logits():
    torch.manual_seed(0)
    model = ARModel(CFG).eval()
    text, text_lens = _batch(1)
    codes = torch.randint(0, 16, (1, 6))
    audio_in = torch.cat([torch.tensor([[model.bos_id]]), codes], 1)
    valid = torch.ones(1, 7, dtype=torch.bool)
    pos = torch.arange(7)[None]
    a = model.logits_full(text, text_lens, audio_in, valid, pos)
    audio_in2 = audio_in.clone()
    audio_in2[0, 4:] = (audio_in2[0, 4:] + 1) % 16
    b = model.logits_full(text, text_lens, audio_in2, valid, pos)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # causal: slots < 4 unaffected
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # the text is bidirectional: changing the last text token changes the first audio slot
    text2 = text.clone()
    text2[0, 6] = 4 if text[0, 6] != 4 else 5
    c = model.logits_full(text2, text_lens, audio_in, valid, pos)
    assert not torch.allclose(a[:, 0], c[:, 0])


def test_kv_cache_greedy_equals_full_recomputation():
    torch.manual_seed(1)
    model = ARModel(CFG).double().eval()
    text, text_lens = _batch(3)
    prompt = torch.randint(0, 16, (3, 5))
    prompt_lens = torch.tensor([5, 2, 0])
    fast = model.generate(text, text_lens, prompt, prompt_lens, 40, temperature=0)
    slow = model.generate(text, text_lens, prompt, prompt_lens, 40, temperature=0, use_cache=False)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    assert sum(len(a) for a in fast) > 10
    # batching (with padded text and prompts) gives the same tokens as one sample at a time
    for i in range(3):
        L, P = int(text_lens[i]), int(prompt_lens[i])
        single = model.generate(text[i : i + 1, :L], text_lens[i : i + 1], prompt[i : i + 1, :P], prompt_lens[i : i + 1],
                                40, temperature=0)[0]
        assert torch.equal(single, fast[i])


def test_ar_generate_stops_at_eos_and_max_len():
    torch.manual_seed(2)
    model = ARModel(CFG).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[model.eos_id] = 0  # all logits equal: argmax picks code 0, never EOS
    text, text_lens = _batch(2)
    out = model.generate(text, text_lens, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                         torch.tensor([5, 9]), temperature=0)
    assert [len(x) for x in out] == [5, 9]
    with torch.no_grad():
        model.head.bias = None
        model.head.weight.zero_()
        model.transformer.norm.bias.fill_(1.0)
        model.transformer.norm.weight.zero_()
        model.head.weight[model.eos_id] = 1.0  # EOS always wins
    out = model.generate(text, text_lens, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long), 9,
                         min_new_tokens=torch.tensor([0, 3]), temperature=0)
    assert [len(x) for x in out] == [0, 3]


def test_ar_loss_targets_include_eos():
    torch.manual_seed(3)
    model = ARModel(CFG)
    text, text_lens = _batch(2)
    codes = torch.randint(0, 16, (2, 6))
    loss, stats = model(text, text_lens, codes, torch.tensor([6, 4]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert int(stats["frames"]) == (6 + 1) + (4 + 1)  # every frame + EOS


def test_nar_loss_excludes_prompt_and_padding():
    torch.manual_seed(4)
    model = NARModel(CFG).eval()
    text, text_lens = _batch(2)
    codes = torch.randint(0, 16, (2, 10, 8))
    code_lens = torch.tensor([10, 7])
    prompt = torch.tensor([4, 2])
    level = torch.tensor([3, 8])
    loss, stats = model(text, text_lens, codes, code_lens, prompt, level)
    assert int(stats["frames"]) == (10 - 4) + (7 - 2)
    logits = model._logits(text, text_lens, codes, code_lens, prompt, level)
    ce = []
    for b in range(2):
        for t in range(int(prompt[b]), int(code_lens[b])):
            ce.append(torch.nn.functional.cross_entropy(logits[b, t], codes[b, t, level[b] - 1]))
    assert torch.allclose(loss, torch.stack(ce).mean(), atol=1e-5)


def test_nar_inputs_use_only_lower_levels_outside_prompt():
    torch.manual_seed(5)
    model = NARModel(CFG).eval()
    text, text_lens = _batch(1)
    codes = torch.randint(0, 16, (1, 8, 8))
    lens, prompt, level = torch.tensor([8]), torch.tensor([3]), torch.tensor([4])
    a = model._logits(text, text_lens, codes, lens, prompt, level)
    changed = codes.clone()
    changed[0, 3:, 3:] = (changed[0, 3:, 3:] + 1) % 16  # levels >= 4 outside the prompt: unseen
    assert torch.allclose(a, model._logits(text, text_lens, changed, lens, prompt, level), atol=1e-6)
    changed = codes.clone()
    changed[0, :3, 7] = (changed[0, :3, 7] + 1) % 16  # level 8 inside the prompt: seen
    assert not torch.allclose(a, model._logits(text, text_lens, changed, lens, prompt, level))
    out = model.generate(text, text_lens, codes[:, :3], prompt, codes[:, 3:, 0], torch.tensor([5]))
    assert out[0].shape == (5, 8) and torch.equal(out[0][:, 0], codes[0, 3:, 0])


def test_sample_token_top_k_top_p():
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.9, -3.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_token(logits, temperature=0), torch.full((200,), 2))
    k2 = sample_token(logits, top_k=2, generator=g)
    assert set(k2.tolist()) == {2, 3}
    p = sample_token(logits, top_p=0.3, generator=g)  # the top token alone holds > 0.3
    assert set(p.tolist()) == {2}


@pytest.mark.parametrize("adaptive", [False, True])
def test_model_shapes_default_config_builds(adaptive):
    cfg = TTSModelConfig(text_vocab_size=100)
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.ffn_dim, cfg.dropout) == (12, 16, 1024, 4096, 0.1)
    small = TTSModelConfig(n_layers=1, n_heads=4, d_model=16, ffn_dim=32, codebook_size=16, text_vocab_size=10)
    model = (NARModel if adaptive else ARModel)(small)
    assert IGNORE == -100 and sum(p.numel() for p in model.parameters()) > 0


def test_nar_stage_embedding_learns_from_the_first_step():
    """Regression: the adaptive LayerNorm's projection started at exactly zero, so the stage
    embedding got no gradient and ScaledAdam (step proportional to the parameter RMS) barely
    moved the projection. Both must get a gradient, and the stage must change the output."""
    from dmtts.optim.scaled_adam import ScaledAdam

    torch.manual_seed(5)
    model = NARModel(CFG)
    model.train()
    text, text_lens = _batch(2)
    codes = torch.randint(0, 16, (2, 10, 8))
    args = (text, text_lens, codes, torch.tensor([10, 9]), torch.tensor([3, 2]))
    loss, _ = model(*args, torch.tensor([2, 5]))
    loss.backward()
    assert model.stage_emb.weight.grad is not None and model.stage_emb.weight.grad.abs().sum() > 0
    proj = [m.proj.weight for m in model.modules() if m.__class__.__name__ == "AdaptiveLayerNorm"]
    assert proj and all(w.grad.abs().sum() > 0 and w.detach().pow(2).mean().sqrt() > 1e-3 for w in proj)
    before = [w.detach().clone() for w in proj]
    ScaledAdam(model.parameters(), lr=0.05).step()
    # first step: lr * (1 - beta1) * RMS = 0.05 * 0.1 * 0.02 = 1e-4 (a zero weight: 5e-8)
    assert all((w.detach() - b).abs().max() > 5e-5 for w, b in zip(proj, before))
    model.eval()  # the stage alone changes the prediction
    a = model._logits(*args, torch.tensor([2, 2]))
    b = model._logits(*args, torch.tensor([3, 3]))
    assert not torch.allclose(a[:, :, :], b[:, :, :])
