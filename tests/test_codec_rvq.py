"""RVQ: k-means init, EMA updates, dead-code replacement, straight-through, DDP sync."""

import copy
import os
import socket

import pytest
import torch

from dmtts.codec.rvq import EuclideanCodebook, ResidualVectorQuantizer


def test_kmeans_init_on_first_batch():
    torch.manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    x = centers.repeat(50, 1) + 0.01 * torch.randn(200, 2)
    rvq = ResidualVectorQuantizer(dim=2, n_q=1, codebook_size=4, kmeans_iters=10, threshold_ema_dead_code=0)
    rvq.train()
    assert rvq.layers[0].inited.item() == 0
    rvq(x.t()[None])
    assert rvq.layers[0].inited.item() == 1
    emb = rvq.layers[0].embed
    dists = torch.cdist(centers, emb).min(dim=1).values
    assert (dists < 0.1).all()


def test_ema_update_matches_hand_computation():
    cb = EuclideanCodebook(dim=2, codebook_size=3, decay=0.9, epsilon=1e-5, kmeans_init=False,
                           threshold_ema_dead_code=0)
    cb.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    cb.embed_avg.copy_(cb.embed)
    cb.cluster_size.fill_(1.0)
    x = torch.tensor([[1.0, 0.0], [9.0, 1.0], [11.0, -1.0]])
    codes = cb.quantize(x)
    assert codes.tolist() == [0, 1, 1]
    cb.ema_update_(x, codes)
    size = torch.tensor([0.9 + 0.1 * 1, 0.9 + 0.1 * 2, 0.9])
    avg = torch.tensor([[0.1, 0.0], [9.0 + 2.0, 0.0], [0.0, 9.0]])
    assert torch.allclose(cb.cluster_size, size)
    assert torch.allclose(cb.embed_avg, avg)
    n = size.sum()
    smoothed = (size + 1e-5) / (n + 3e-5) * n
    assert torch.allclose(cb.embed, avg / smoothed[:, None])


def test_dead_codes_are_replaced_from_the_batch():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=2, n_q=1, codebook_size=4, decay=0.5, kmeans_init=False,
                                  threshold_ema_dead_code=0.1)
    cb = rvq.layers[0]
    cb.embed.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 0.0], [0.0, 200.0]]))
    cb.embed_avg.copy_(cb.embed * 16.0)
    cb.cluster_size.fill_(16.0)
    rvq.train()
    x = torch.randn(1, 2, 64) * 0.1  # all near entry 0: entries 1..3 are never used
    # step 1: usage [0.5*16 + 0.5*64, 8, 8, 8] = [40, 8, 8, 8]; mean 16, threshold 1.6: none dead
    out = rvq(x)
    assert out.dead_codes == 0 and out.replaced == [0]
    assert torch.allclose(cb.cluster_size, torch.tensor([40.0, 8, 8, 8]))
    # steps 2-3: [52, 4, 4, 4] (threshold 1.6) then [58, 2, 2, 2] (threshold 1.6): still alive;
    # step 4: [61, 1, 1, 1], mean 16, threshold 1.6 -> the three unused entries are replaced
    assert rvq(x).dead_codes == 0 and rvq(x).dead_codes == 0
    out = rvq(x)
    assert out.dead_codes == 3 and out.replaced == [3]
    batch = x[0].t()
    for k in (1, 2, 3):
        e = cb.embed[k]
        # exact row equality: cdist's matrix-multiplication path (> 25 rows) rounds differently
        # on different CPUs, so a distance tolerance is not a portable check
        assert (batch == e).all(dim=1).any(), f"code {k} is not a row of the batch"
        assert torch.allclose(cb.embed_avg[k] / cb.cluster_size[k], e)  # consistent EMA state
        assert torch.isclose(cb.cluster_size[k], torch.tensor(64.0 / 4))  # restarts at the mean usage


def _rvq_at_centers(K: int, D: int, N: int, **kwargs):
    """A one-level RVQ (training mode) whose K entries are random centers, each with the EMA
    usage of a uniform assignment of N frames per step."""
    torch.manual_seed(0)
    centers = torch.randn(K, D) * 3
    rvq = ResidualVectorQuantizer(dim=D, n_q=1, codebook_size=K, kmeans_init=False, **kwargs)
    cb = rvq.layers[0]
    cb.embed.copy_(centers)
    cb.embed_avg.copy_(centers * N / K)
    cb.cluster_size.fill_(N / K)
    return rvq.train(), centers


def test_used_codes_are_not_churned_with_fewer_frames_than_two_per_code():
    """Regression: with an absolute threshold of 2 (EnCodec's), a step of N < 2K frames left most
    codes under the threshold, so they were re-drawn every step. The default threshold is relative
    to the mean usage N/K: a codebook whose codes are all in use keeps every entry."""
    K, D, N = 128, 8, 200  # the demo's frames per step and codes per level: N/K = 1.56
    rvq, centers = _rvq_at_centers(K, D, N)  # default threshold
    cb = rvq.layers[0]
    g = torch.Generator().manual_seed(1)
    replaced = 0
    for _ in range(60):
        idx = torch.randint(0, K, (N,), generator=g)
        x = centers[idx] + 0.01 * torch.randn(N, D, generator=g)
        replaced += rvq(x.t()[None]).dead_codes
    assert replaced == 0
    assert torch.allclose(cb.embed, centers, atol=0.05)  # stable meanings


def test_unused_code_is_replaced_after_usage_decays_over_many_steps():
    K, D, N = 16, 4, 64
    rvq, centers = _rvq_at_centers(K, D, N, decay=0.9)
    g = torch.Generator().manual_seed(1)
    first_replacement = None
    for step in range(1, 40):
        idx = torch.randint(1, K, (N,), generator=g)  # entry 0 is never the nearest
        out = rvq((centers[idx] + 0.01 * torch.randn(N, D, generator=g)).t()[None])
        if out.dead_codes and first_replacement is None:
            first_replacement = step
            assert out.dead_codes == 1
    # usage 4 * 0.9^s falls under 0.1 * mean (0.4) after s = 22 steps: replaced then, not before
    assert first_replacement == 22


def test_code_statistics_hand_computed():
    from dmtts.codec.rvq import code_statistics

    used, ppl = code_statistics(torch.tensor([0, 0, 1, 1]), 8)
    assert used == 2 and ppl == pytest.approx(2.0)
    used, ppl = code_statistics(torch.tensor([3, 3, 3]), 8)
    assert used == 1 and ppl == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    used, ppl = code_statistics(torch.tensor([0, 0, 1, 2]), 4)
    assert used == 3 and ppl == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_straight_through_and_commitment():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, n_q=3, codebook_size=8, kmeans_iters=2)
    rvq.train()
    rvq(torch.randn(2, 4, 20))
    rvq.eval()
    x = torch.randn(2, 4, 10, requires_grad=True)
    out = rvq(x)
    out.quantized.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # single straight-through on the sum
    x.grad = None
    out = rvq(x)
    # commitment: sum over levels of mean squared distance to the chosen entry, residual detached
    res, expected = x.detach().transpose(1, 2).reshape(-1, 4), 0.0
    for layer in rvq.layers:
        q = layer.dequantize(layer.quantize(res))
        expected += ((res - q) ** 2).mean()
        res = res - q
    assert torch.allclose(out.commit_loss, torch.as_tensor(expected), atol=1e-6)
    assert torch.allclose(out.quantized.detach(), rvq.decode(out.codes), atol=1e-5)
    out.levels[1].sum().backward()  # a per-level output reaches the input (for distillation)
    assert x.grad is not None and x.grad.abs().sum() > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from codec_helpers import micro_config
    from dmtts.codec.train import CodecTrainer
    from dmtts.train.distributed import cleanup_distributed

    cfg = micro_config(model={"dead_code_threshold": 0.9})
    trainer = CodecTrainer(cfg, out_dir)
    g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    for _ in range(2):
        batch = {"audio": torch.randn(2, 1, 5120, generator=g) * 0.1, "lm_feats": None, "sm_feats": None}
        trainer.train_step(batch)
    torch.save({"buffers": {k: v for k, v in trainer.codec.quantizer.state_dict().items()},
                "params": {k: v for k, v in trainer.codec.state_dict().items() if "quantizer" not in k}},
               os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup_distributed()


def test_ddp_two_processes_keep_codebooks_identical(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for k, v in r0["buffers"].items():
        assert torch.equal(v, r1["buffers"][k]), k
    assert r0["buffers"]["layers.0.inited"].item() == 1
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k


def test_quantizer_runs_in_fp32_under_bf16_autocast():
    """bf16 autocast must not change the codes: the distance matmul would otherwise run in bf16
    and pick another nearest entry for a few percent of the frames."""
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=64, n_q=4, codebook_size=64, kmeans_iters=3)
    rvq.train()
    rvq(torch.randn(4, 64, 50))  # k-means init + one EMA update
    rvq.eval()
    latents = torch.randn(4, 64, 100) * 3.0 + 1.0
    reference = rvq.encode(latents)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        codes = rvq.encode(latents)
        out = rvq(latents)
        bf16_latents_out = rvq(latents.to(torch.bfloat16))
    assert torch.equal(codes, reference)
    assert torch.equal(out.codes, reference)
    assert out.quantized.dtype == torch.float32 and out.commit_loss.dtype == torch.float32
    # bf16 latents are quantized like their fp32 upcast
    assert torch.equal(bf16_latents_out.codes, rvq.encode(latents.to(torch.bfloat16).float()))
    # training forward (codebook updates) chooses the same codes under autocast as without
    a, b = copy.deepcopy(rvq).train(), copy.deepcopy(rvq).train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        codes_autocast = a(latents).codes
    assert torch.equal(codes_autocast, b(latents).codes)
    assert torch.equal(a.layers[0].embed, b.layers[0].embed)
