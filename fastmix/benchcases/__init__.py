"""Benchmark cases per op, shared by ``python -m fastmix bench`` and ``benchmarks/bench_ops.py``.

Each module's ``cases(device, settings)`` returns ``fastmix.bench.Case`` objects: fastmix per backend, the
reference, the paper's formula and the peers, at the settings' batch sizes.
"""

from __future__ import annotations

import torch


def image_batch(batch: int, side: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (batch, 3, side, side) image batch with ImageNet-like value spread, in ``dtype`` (uint8 rounds)."""
    generator = torch.Generator(device=device).manual_seed(batch)
    x = torch.randn(batch, 3, side, side, device=device, generator=generator) * 60 + 128
    return x.clamp(0, 255).round().to(dtype) if dtype == torch.uint8 else (x / 255).to(dtype)


def gradient_step(loss_fn, *inputs):
    """A provider's call: the loss forward and its gradient with respect to ``inputs`` (no ``.grad`` kept)."""
    return lambda: torch.autograd.grad(loss_fn(), inputs)


def case_modules():
    """Every op family's case module, in report order."""
    from fastmix.benchcases import balancemix, flow, gmm, lamix, lumix, mix, zeta

    return (zeta, mix, flow, lumix, lamix, balancemix, gmm)
