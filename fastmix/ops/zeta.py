"""zeta-mixup custom ops: ``fastmix::zeta_weights`` and ``fastmix::zeta_mix`` (paper 002_*, eq. 2-3)."""

from __future__ import annotations

import functools

import torch

from fastmix import _layout, _native
from fastmix.reference import zeta as reference


@functools.lru_cache(maxsize=256)
def p_series_norm(batch: int, gamma: float) -> float:
    """C = sum_{n=1..B} n^-gamma (eq. 3), from Python numbers only (no tensor, no sync)."""
    return float(sum(n ** -gamma for n in range(1, batch + 1)))


@torch.library.custom_op("fastmix::zeta_weights", mutates_args=())
def zeta_weights(keys: torch.Tensor, gamma: float, self_dominant: bool, backend: str) -> torch.Tensor:
    """The (B, B) weight matrix from uniform keys, in the keys' dtype (float32 or float64)."""
    if backend == "reference":
        return reference.zeta_weights(keys, gamma, self_dominant)
    batch = keys.size(0)
    norm = p_series_norm(batch, gamma)
    if backend == "triton":
        from fastmix.kernels.triton import zeta as triton_zeta

        return triton_zeta.zeta_weights(keys, gamma, norm, self_dominant)
    weights = torch.empty_like(keys)
    _native.launch("zeta_weights_cuda", keys.device, _native.Buffer(keys, numel=batch * batch), weights, batch, gamma,
                   norm, self_dominant, _native.DTYPE_CODES[keys.dtype])
    return weights


@zeta_weights.register_fake
def _(keys, gamma, self_dominant, backend):
    return torch.empty_like(keys)


@torch.library.custom_op("fastmix::zeta_mix", mutates_args=())
def zeta_mix(x: torch.Tensor, weights: torch.Tensor, backend: str) -> torch.Tensor:
    """``W @ x`` over the batch dim for any trailing shape; the output keeps x's dtype and dimension order."""
    out = _layout.empty_like_rows(x)
    x_rows = _layout.rows_view(x)
    out_rows = _layout.rows_view(out)
    if backend == "reference":
        out_rows.copy_(reference.zeta_mix(x_rows, weights))
        return out
    weights = weights.contiguous()
    if backend == "triton":
        from fastmix.kernels.triton import zeta as triton_zeta

        triton_zeta.zeta_mix(x_rows, weights, out_rows)
        return out
    batch, features = x_rows.shape
    _native.launch("zeta_mix_cuda", x.device, _native.Buffer(x_rows, x.dtype, rows=True),
                   _native.Buffer(weights, numel=batch * batch), _native.Buffer(out_rows, x.dtype, rows=True), batch,
                   features, _native.DTYPE_CODES[x.dtype])
    return out


@zeta_mix.register_fake
def _(x, weights, backend):
    torch._check(weights.dim() == 2 and weights.size(0) == x.size(0) and weights.size(1) == x.size(0))
    return _layout.empty_like_rows(x)


def _setup_context(ctx, inputs, output):
    _, weights, backend = inputs
    ctx.save_for_backward(weights)
    ctx.backend = backend


def _backward(ctx, grad_out):
    (weights,) = ctx.saved_tensors
    grad_x = zeta_mix(grad_out, weights.t().contiguous(), ctx.backend) if ctx.needs_input_grad[0] else None
    return grad_x, None, None


zeta_mix.register_autograd(_backward, setup_context=_setup_context)
