"""FLOP counting for the benchmarks: ``torch.utils.flop_counter`` plus the LSTMs, which it does
not see, added analytically (2 * 4H(I + H) per time step, layer and direction)."""

from __future__ import annotations

import torch


def lstm_forward_flops(module: torch.nn.Module, fn) -> int:
    """FLOPs of the LSTMs in ``module`` during ``fn()`` (forward only)."""
    total = [0]

    def hook(mod, inputs, _out):
        x = inputs[0]
        steps = x.shape[0] * x.shape[1]  # T * B, whatever the layout
        h, dirs = mod.hidden_size, 2 if mod.bidirectional else 1
        for layer in range(mod.num_layers):
            i = mod.input_size if layer == 0 else h * dirs
            total[0] += dirs * steps * 2 * 4 * h * (i + h)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.LSTM)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def step_flops(fn, module: torch.nn.Module | None = None, lstm_factor: int = 3) -> int:
    """FLOPs of one ``fn()``: flop counter + ``lstm_factor`` x the forward FLOPs of the LSTMs in
    ``module`` (3 for a training step: their backward costs about twice their forward, like any
    matmul; 1 for inference)."""
    from torch.utils.flop_counter import FlopCounterMode

    lstm = 0
    with FlopCounterMode(display=False) as counter:
        if module is None:
            fn()
        else:
            lstm = lstm_forward_flops(module, fn)
    return counter.get_total_flops() + lstm_factor * lstm
