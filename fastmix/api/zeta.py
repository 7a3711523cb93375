"""zeta-mixup: ``x~ = W x``, ``y~ = W y`` with p-series weights over random permutations (zeta-mixup paper)."""

from __future__ import annotations

import torch
from torch import nn

from fastmix import _backend, _checks
from fastmix._dtypes import compute_dtype
from fastmix.ops import zeta as zeta_ops


def zeta_mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    gamma: float = 2.8,
    num_classes: int | None = None,
    self_dominant: bool = True,
    generator: torch.Generator | None = None,
    backend: str | None = None,
    return_weights: bool = False,
):
    """zeta-mixup of a batch (zeta-mixup paper, eq. 2-3): returns ``(x_mixed, y_mixed)`` (and ``W`` if asked).

    ``W`` is B x B; row p holds ``s^-gamma / C`` over a random permutation ``s`` of 1..B with
    ``C = sum_{n=1..B} n^-gamma`` (eq. 3), so every row sums to 1. ``x_mixed = W @ x`` and ``y_mixed = W @ y``
    (eq. 2) over the batch dim.

    Args:
        x: (B, ...) floating or uint8 tensor, any trailing shape and memory format; the output keeps x's dtype
            and dimension order (channels_last in, channels_last out). Accumulation is fp32 (fp64 for fp64); uint8
            results saturate to [0, 255] and round half to even. Non-finite values follow that fp32 (fp64) sum on
            every backend: an inf in sample i gives inf in every output row (all weights are > 0), NaN (or +inf
            meeting -inf in a column) gives NaN. Triton with fp16 x drops weights below fp16's range (2^-25).
        y: int class indices (B,) with ``num_classes``, or float one-hot/soft/multi-hot labels (B, K).
        gamma: the p-series exponent, > 0: a Python or numpy number or a 0-d tensor (read on the host). For
            ``gamma >= 1.72865`` one sample dominates each row (Theorem 1).
        self_dominant: sample p takes rank 1 in its own row (``W[p, p] = 1/C``) and ranks 2..B go to the other
            samples at random, as in the authors' code; False draws each row's permutation freely (eq. 3 as
            written). Must be a bool.
        generator: the torch.Generator (on x's device) that draws the permutations; all drawing is on the device.
        backend: "triton", "cpu", "reference", or None for the default: Triton on CUDA tensors, "cpu" on CPU
            tensors (the weights and the class-index labels' mix in C++, ``W @ x`` one torch.mm written straight
            into the output; the reference where fastmix._C is not built). There is no CUDA C++ kernel (see
            ``fastmix.ops.zeta``).
        return_weights: also return ``W`` (float32; float64 for float64 x).

    Returns:
        ``x_mixed`` like x; ``y_mixed`` float32 (B, K) (float64 for float64 labels). Gradients flow to x
        (``W^T @ grad``) and to float y.
    """
    _checks.check_batch_input("x", x, allow_uint8=True)
    gamma = _checks.check_positive_scalar("gamma", gamma)
    self_dominant = _checks.check_bool("self_dominant", self_dominant)
    batch = x.size(0)
    classes = _checks.check_labels(y, batch, x.device, num_classes)
    _checks.check_generator(generator, x.device)
    name = _backend.resolve(backend, x.device, cuda_default="triton", cpu_default="cpu", supported=zeta_ops.BACKENDS)
    keys = torch.rand((batch, batch), generator=generator, device=x.device, dtype=compute_dtype(x.dtype))
    weights = zeta_ops.zeta_weights_call(keys, gamma, self_dominant, name)
    x_mixed, y_mixed = zeta_ops.zeta_mixup_call(x, weights, y, classes, name)
    return (x_mixed, y_mixed, weights) if return_weights else (x_mixed, y_mixed)


class ZetaMixup(nn.Module):
    """zeta-mixup as a module: mixes in training mode, returns ``(x, y)`` untouched in eval mode."""

    def __init__(self, gamma: float = 2.8, num_classes: int | None = None, self_dominant: bool = True,
                 backend: str | None = None):
        super().__init__()
        self.gamma = _checks.check_positive_scalar("gamma", gamma)
        self.num_classes = num_classes
        self.self_dominant = _checks.check_bool("self_dominant", self_dominant)
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        if not self.training:
            return x, y
        return zeta_mixup(x, y, gamma=self.gamma, num_classes=self.num_classes, self_dominant=self.self_dominant,
                          generator=generator, backend=self.backend)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, num_classes={self.num_classes}, self_dominant={self.self_dominant}"
