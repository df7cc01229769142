"""Timing for the benchmarks on a shared machine: every figure is the fastest of several runs,
and runs that are compared are interleaved, so background load hits them alike."""

from __future__ import annotations

import time

import torch


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones (the least
    disturbed run: on a shared machine medians are noisy)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def interleaved_best(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Run every function ``warmup`` times, then ``repeats`` rounds of all of them in turn, and
    keep each one's fastest."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    return best


def make_matmul(n: int = 2048, device: torch.device | str = "cpu"):
    """``(fn, flops)``: an ``n`` x ``n`` fp32 matmul (waiting for the device), the reference
    whose rate the benchmarks measure in the same rounds as what they compare."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def matmul():
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return matmul, 2 * n ** 3


def print_head(head: str) -> None:
    """A markdown table's header line and its separator."""
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
