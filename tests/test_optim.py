"""ScaledAdam and Eden: their defining behaviour, exact resume, and a toy regression."""

import copy
import pytest
import torch

from dmtts.optim import Eden, ScaledAdam, eden_lr_factor


def test_update_proportional_to_param_rms():
    torch.manual_seed(0)
    direction = torch.randn(200)
    small = torch.nn.Parameter(direction * 0.01)
    large = torch.nn.Parameter(direction * 2.0)
    grad = torch.randn(200)
    opt = ScaledAdam([small, large], lr=0.05, clipping_scale=None)
    start = [small.detach().clone(), large.detach().clone()]
    for _ in range(6):  # includes a parameter-scale update (size_update_period=4)
        small.grad, large.grad = grad.clone(), grad.clone()
        opt.step()
    rel = [((p.detach() - s).norm() / s.norm()).item() for p, s in zip((small, large), start)]
    assert rel[0] > 1e-3
    assert rel[0] == pytest.approx(rel[1], rel=1e-3)
    # plain Adam, by contrast, moves the small parameter ~200x more in relative terms
    small2, large2 = torch.nn.Parameter(start[0].clone()), torch.nn.Parameter(start[1].clone())
    adam = torch.optim.Adam([small2, large2], lr=0.001)
    small2.grad, large2.grad = grad.clone(), grad.clone()
    adam.step()
    rel_adam = [((p.detach() - s).norm() / s.norm()).item() for p, s in zip((small2, large2), start)]
    assert rel_adam[0] / rel_adam[1] > 100


def _norm_ratio_after(target_scale, scalar_lr_scale, steps=40):
    """Toy problem: pull p towards target_scale * p under heavy per-element gradient noise.
    Per element the noise dominates (the Adam direction hardly sees the signal), but the
    scale gradient sum(g * p) averages the noise out over the elements."""
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(256))
    start = p.detach().norm().item()
    target = target_scale * p.detach().clone()
    opt = ScaledAdam([p], lr=0.02, scalar_lr_scale=scalar_lr_scale, clipping_scale=None)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        p.grad = 2 * (p.detach() - target) / p.numel() + 0.1 * torch.randn(256, generator=gen)
        opt.step()
    return p.detach().norm().item() / start


@pytest.mark.parametrize("target_scale", [4.0, 0.25])
def test_learned_parameter_scale(target_scale):
    """The scale-gradient term changes the parameter norm in the right direction
    (scalar_lr_scale=0 disables the scale learning: then the norm barely moves)."""
    with_scale = _norm_ratio_after(target_scale, scalar_lr_scale=0.5)
    without = _norm_ratio_after(target_scale, scalar_lr_scale=0.0)
    if target_scale > 1:
        assert with_scale > 1.3 and without < 1.2
    else:
        assert with_scale < 0.85 and without > 0.95


def test_one_step_hand_computed():
    """First step of a non-scalar and a scalar parameter, by hand (icefall's algorithm):
    v = (1 - b2) g^2, bias-corrected by 1 - b2 -> g^2, so the direction is g / (|g| + eps);
    the update is lr * rms(p) * direction for a tensor (rms clamped from below only: 5 > the
    param_max_rms of 3 is used as it is), lr * scalar_lr_scale * direction for a scalar, each
    through the momentum buffer: p += (1 - b1) * update."""
    lr, (b1, b2), eps = 0.1, (0.9, 0.98), 1e-8
    w = torch.nn.Parameter(torch.tensor([[5.0, -5.0], [5.0, 5.0]]))  # rms 5
    s = torch.nn.Parameter(torch.tensor([0.5]))
    opt = ScaledAdam([w, s], lr=lr, betas=(b1, b2), eps=eps, scalar_lr_scale=0.1, param_max_rms=3.0,
                     clipping_scale=2.0)
    gw, gs = torch.tensor([[0.2, -0.4], [1.0, 0.0]]), torch.tensor([-2.0])
    w.grad, s.grad = gw.clone(), gs.clone()
    opt.step()
    direction = gw / (gw.abs() + eps)  # = sign(g), 0 where g = 0
    expected_w = torch.tensor([[5.0, -5.0], [5.0, 5.0]]) - (1 - b1) * lr * 5.0 * direction
    expected_s = 0.5 - (1 - b1) * lr * 0.1 * (-1.0)
    torch.testing.assert_close(w.detach(), expected_w)
    assert s.item() == pytest.approx(expected_s)
    # the update-scaled norm: sqrt(sum (g * rms)^2 + (g_scalar * scalar_lr_scale)^2); step 0 never clips
    assert opt.last_grad_norm.item() == pytest.approx(((gw * 5.0) ** 2).sum().add(0.04).sqrt().item())
    assert opt.last_clip_factor.item() == 1.0
    # second step: momentum 0.9 * m1 + 0.1 * update2; v2 = b2 * v1 + (1 - b2) g^2, corrected by 1 - b2^2
    w.grad, s.grad = gw.clone(), gs.clone()
    before = w.detach().clone()
    opt.step()
    v2 = (b2 * (1 - b2) + (1 - b2)) * gw ** 2 / (1 - b2 ** 2)  # = g^2
    update2 = -lr * 5.0 * gw / (v2.sqrt() + eps)
    m2 = b1 * (1 - b1) * (-lr * 5.0 * direction) + (1 - b1) * update2
    torch.testing.assert_close(w.detach(), before + m2)


def _clipping_run(norms, clipping_scale=2.0, period=100, scalar_grad=0.0):
    """Feed gradients of prescribed update-scaled norms to a parameter of RMS 2 that does not
    move (lr 0, so its RMS stays 2) plus a scalar; return the optimiser and its clip factors."""
    torch.manual_seed(4)
    p = torch.nn.Parameter(torch.full((4, 4), 2.0))
    scalar = torch.nn.Parameter(torch.tensor([0.3]))
    opt = ScaledAdam([p, scalar], lr=0.0, scalar_lr_scale=0.1, clipping_scale=clipping_scale,
                     clipping_update_period=period)
    factors = []
    for n in norms:
        g = torch.randn(4, 4)
        # ||g * 2||^2 + (0.1 * scalar_grad)^2 = n^2
        g = g / g.norm() * ((n ** 2 - (0.1 * scalar_grad) ** 2) ** 0.5 / 2.0)
        p.grad, scalar.grad = g, torch.tensor([scalar_grad])
        opt.step()
        assert opt.last_grad_norm.item() == pytest.approx(n, rel=1e-5)
        factors.append(opt.last_clip_factor.item())
    return opt, factors


def test_clipping_threshold_at_steps_10_20_40_then_every_period():
    """icefall: no clipping before step 10 (0-based); thresholds from the norms so far at steps
    10, 20, 40 (x 2) and every clipping_update_period steps; fixed in between."""
    norms = [1.0 + 0.1 * i for i in range(60)]
    norms[5] = 500.0  # a spike before step 10 is not clipped
    norms[10] = 1000.0  # step 10: clipped by 2 * 2 * median(norms[1..10])
    norms[15] = 30.0  # between estimates: clipped by the step-10 threshold, which stays
    opt, factors = _clipping_run(norms, scalar_grad=3.0)
    assert factors[:10] == [1.0] * 10
    first = sorted(norms[1:11])[(10 // 4) * 2]  # icefall's "median": index (n // 4) * 2
    threshold10 = 2.0 * 2.0 * first
    assert factors[10] == pytest.approx(threshold10 / 1000.0, rel=1e-5)
    assert factors[15] == pytest.approx(threshold10 / 30.0, rel=1e-5)
    assert [f for i, f in enumerate(factors[11:20], 11) if i != 15] == [1.0] * 8
    second = sorted(norms[1:21])[(20 // 4) * 2]
    third = sorted(norms[1:41])[(40 // 4) * 2]
    assert third != second != first
    opt2, _ = _clipping_run(norms[:21], scalar_grad=3.0)
    assert opt2.clipping_stats()["clip_threshold"] == pytest.approx(4.0 * second, rel=1e-5)
    stats = opt.clipping_stats()  # after 60 steps: the step-40 estimate
    assert stats["clip_threshold"] == pytest.approx(4.0 * third, rel=1e-5)
    assert stats["median_grad_norm"] == pytest.approx(third, rel=1e-5)
    # every period (here 8): step 8 sets clipping_scale * median of the 8 entries (no doubling)
    _, f3 = _clipping_run([1.0] * 8 + [10.0], period=8)
    ring = sorted([10.0] + [1.0] * 7)  # steps 1..7 at indices 1..7, step 8 at index 8 % 8 = 0
    assert f3[8] == pytest.approx(2.0 * ring[4] / 10.0, rel=1e-5)


def test_clipped_update_equals_unclipped_update_of_the_scaled_gradient():
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(10, 10))
    ref = torch.nn.Parameter(p.detach().clone())
    opt = ScaledAdam([p], lr=0.01, clipping_scale=2.0)
    opt_ref = ScaledAdam([ref], lr=0.01, clipping_scale=None)
    for _ in range(10):  # same state in both (nothing clipped before step 10)
        g = torch.randn(10, 10)
        p.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        opt_ref.step()
    spike = torch.randn(10, 10) * 100.0
    p.grad = spike.clone()
    opt.step()
    factor = opt.last_clip_factor.item()
    assert 0 < factor < 1 and opt.clipping_stats()["num_clipped"] == 1
    ref.grad = spike * factor
    opt_ref.step()
    torch.testing.assert_close(p.detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_non_finite_gradient_is_skipped():
    p = torch.nn.Parameter(torch.ones(4, 4))
    opt = ScaledAdam([p], clipping_scale=2.0)
    p.grad = torch.full((4, 4), float("nan"))
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4, 4))


def test_eden_lr_curve():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.05)
    sched = Eden(opt, lr_batches=100, lr_epochs=2, warmup_batches=10, warmup_start=0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5)  # batch 0: warmup_start
    for _ in range(5):
        sched.step_batch()
    expected = 0.05 * ((25 + 100**2) / 100**2) ** -0.25 * 0.75
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    sched.step_batch(200)
    sched.step_epoch(3)
    expected = 0.05 * ((200**2 + 100**2) / 100**2) ** -0.25 * ((9 + 4) / 4) ** -0.25
    assert sched.get_last_lr()[0] == pytest.approx(expected)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    # hand values: 5**-0.25 and (13/4)**-0.25
    assert expected == pytest.approx(0.05 * 0.668740305 * 0.744782, rel=1e-5)
    assert eden_lr_factor(0, 0, 100, 2, 0, 0.5) == 1.0
    # decreasing after warm-up
    lrs = []
    for b in range(10, 1000, 50):
        sched.step_batch(b)
        lrs.append(sched.get_last_lr()[0])
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _batch(step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(32, 8, generator=g)
    w = torch.arange(1, 9, dtype=torch.float32) / 8
    return x, (x @ w).unsqueeze(1) + 0.01 * torch.randn(32, 1, generator=g)


def _train(model, opt, sched, steps):
    losses = []
    for step in steps:
        x, y = _batch(step)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step_batch()
        losses.append(loss.item())
    return losses


def _make(model):
    opt = ScaledAdam(model.parameters(), lr=0.05, clipping_scale=2.0, clipping_update_period=8)
    return opt, Eden(opt, lr_batches=50, lr_epochs=2, warmup_batches=5)


def test_state_dict_resume_is_exact():
    model = _model()
    opt, sched = _make(model)
    _train(model, opt, sched, range(0, 12))
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    lr_at_save = sched.get_last_lr()
    _train(model, opt, sched, range(12, 24))

    model2 = _model()
    opt2, sched2 = _make(model2)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    assert sched2.batch == 12 and sched2.get_last_lr() == lr_at_save
    assert opt2.param_groups[0]["lr"] == lr_at_save[0]
    _train(model2, opt2, sched2, range(12, 24))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert sched.state_dict() == sched2.state_dict()


def test_toy_regression_loss_falls():
    model = _model()
    opt, sched = _make(model)
    losses = _train(model, opt, sched, range(150))
    assert sum(losses[-10:]) / 10 < 0.05 * sum(losses[:10]) / 10


def test_state_from_the_earlier_clipping_restarts_the_threshold_schedule():
    """An optimiser state saved before this algorithm (per-step median history, a step count of
    400) must not leave a zero threshold that clips every gradient away after a resume."""
    torch.manual_seed(5)
    p = torch.nn.Parameter(torch.randn(6, 6))
    opt = ScaledAdam([p], lr=0.01)
    p.grad = torch.randn(6, 6)
    opt.step()
    old = opt.state_dict()
    gstate = old["state"][0]
    for key in ("model_norms", "model_norm_threshold", "model_norm_median"):
        gstate.pop(key, None)
    gstate.update(clip_norm_history=torch.full((100,), 1.0), clip_step=400, num_clipped=torch.tensor(3))
    resumed = ScaledAdam([p], lr=0.01)
    resumed.load_state_dict(old)
    factors = []
    for _ in range(12):
        p.grad = torch.randn(6, 6)
        resumed.step()
        factors.append(resumed.last_clip_factor.item())
    assert factors[:10] == [1.0] * 10  # the schedule restarted: no threshold before step 10
    stats = resumed.clipping_stats()
    assert stats["clip_threshold"] > 0 and "clip_norm_history" not in resumed.state[p]
