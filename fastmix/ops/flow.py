"""Flow-Mixup custom ops: ``fastmix::flow_mix``, ``fastmix::flow_mix_backward`` and ``fastmix::flow_params`` (Flow-Mixup
paper, eq. 2-3).

``flow_mix`` maps z (flow_size * B rows) to ``[z, z_mixed]`` (or ``z_mixed``); its autograd is
``flow_mix_backward``, which halves the summed gradient (eq. 3) when the original flow is kept. That backward is
linear in the incoming gradient, so its own autograd is ``flow_mix`` again, scaled the same way.
"""

from __future__ import annotations

import torch

from fastmix import _backend, _checks, _layout, _native
from fastmix._dtypes import compute_dtype
from fastmix.reference import flow as reference

BACKENDS = _backend.DEFAULT_SUPPORTED


def _output_rows(rows: int, keep_original: bool) -> int:
    return 2 * rows if keep_original else rows


def _check_args(name: str, values: torch.Tensor, expected_rows: int, lam: torch.Tensor, perm: torch.Tensor,
                flow_size: int, backend: str) -> None:
    """Shapes, dtypes and devices of an op's arguments (what a fake tensor has too); ``expected_rows`` is what
    ``values`` must hold given ``flow_size`` and B = ``perm.numel()``."""
    if not values.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {values.dtype}")
    if not lam.is_floating_point() or lam.dim() != 1:
        raise TypeError(f"lam must be a 1-D floating-point tensor, got {lam.dtype} of shape {tuple(lam.shape)}")
    if perm.dtype not in (torch.int32, torch.int64) or perm.shape != lam.shape:
        raise TypeError(f"perm must be an int32/int64 tensor shaped like lam {tuple(lam.shape)}, got {perm.dtype} "
                        f"of shape {tuple(perm.shape)}")
    if flow_size < 1 or values.dim() < 1 or values.size(0) != expected_rows:
        raise ValueError(f"{name} must hold {expected_rows} rows for flow_size={flow_size} and B={perm.numel()}, "
                         f"got shape {tuple(values.shape)}")
    if lam.device != values.device or perm.device != values.device:
        raise ValueError(f"lam ({lam.device}) and perm ({perm.device}) must be on {name}'s device {values.device}")
    _backend.check_name(backend, BACKENDS, default_allowed=False)


def _kernel_params(lam: torch.Tensor, perm: torch.Tensor, dtype: torch.dtype, backend: str):
    """p in the kernels' accumulation dtype (fp32, fp64 for fp64 data) and the shuffle, both contiguous, after
    checking that perm is a permutation of 0..B-1 (the kernels index with it and the backward inverts it):
    asynchronously on a GPU; the Triton kernels check it themselves (kernels.triton.flow), so here only where the
    host reads it for free. Triton reads int32 and int64 shuffles; the others take int64."""
    if backend != "triton" or _checks.host_reads_values(perm):
        _checks.check_on_device((perm.sort().values == torch.arange(perm.numel(), device=perm.device)).all(),
                                "perm must be a permutation of 0..B-1")
    perm = perm.contiguous() if backend == "triton" else perm.long().contiguous()
    return lam.to(compute_dtype(dtype)).contiguous(), perm


@torch.library.custom_op("fastmix::flow_mix", mutates_args=())
def flow_mix(z: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, flow_size: int, keep_original: bool,
             backend: str) -> torch.Tensor:
    """The Mixing module's output in z's dtype and dimension order; the kernels load each z row once for both
    halves (its second read, as another row's shuffled partner, is meant to hit L2).

    Every backend evaluates ``p z[i] + (1 - p) z[perm[i]]`` as written, in fp32 (fp64 for fp64 z): +-inf stays
    +-inf where the partner is finite or the same infinity; NaN, or +inf meeting -inf, gives NaN.
    """
    _check_args("z", z, flow_size * perm.numel(), lam, perm, flow_size, backend)
    out = _layout.empty_like_rows(z, batch=_output_rows(z.size(0), keep_original))
    lam, perm = _kernel_params(lam, perm, z.dtype, backend)
    if backend == "reference":
        if keep_original:
            out[:z.size(0)].copy_(z)
        out[out.size(0) - z.size(0):].copy_(reference.mix_blocks(z, lam, perm, flow_size))
        return out
    z_rows = _layout.rows_view(z)
    out_rows = _layout.rows_view(out)
    if backend == "triton":
        from fastmix.kernels.triton import flow as triton_flow

        triton_flow.flow_mix_forward(z_rows, lam, perm, out_rows, keep_original)
        return out
    _native.launch("flow_forward_cuda", z.device, _native.Buffer(z_rows, z.dtype, rows=True),
                   _native.Buffer(lam, numel=perm.numel()), _native.Buffer(perm, torch.int64),
                   _native.Buffer(out_rows, z.dtype, rows=True), perm.numel(), flow_size, z_rows.size(1),
                   keep_original, _native.DTYPE_CODES[z.dtype])
    return out


@flow_mix.register_fake
def _(z, lam, perm, flow_size, keep_original, backend):
    _check_args("z", z, flow_size * perm.numel(), lam, perm, flow_size, backend)
    return _layout.empty_like_rows(z, batch=_output_rows(z.size(0), keep_original))


@torch.library.custom_op("fastmix::flow_mix_backward", mutates_args=())
def flow_mix_backward(grad: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, flow_size: int,
                      keep_original: bool, backend: str) -> torch.Tensor:
    """``0.5 * (g0 + p g1 + (1 - p_q) g1[q])`` per flow block, q = perm^-1 (eq. 3); ``g1`` terms alone without
    the original flow. Every output element is written by one thread: no atomics, deterministic. Non-finite
    gradients follow that sum as written, as in ``flow_mix``."""
    rows = flow_size * perm.numel()
    _check_args("grad", grad, _output_rows(rows, keep_original), lam, perm, flow_size, backend)
    grad_z = _layout.empty_like_rows(grad, batch=rows)
    lam, perm = _kernel_params(lam, perm, grad.dtype, backend)
    if backend == "reference":
        grad_z.copy_(reference.flow_mix_backward(grad, lam, perm, flow_size, keep_original))
        return grad_z
    grad_rows = _layout.rows_view(grad)
    grad_z_rows = _layout.rows_view(grad_z)
    if backend == "triton":
        from fastmix.kernels.triton import flow as triton_flow

        triton_flow.flow_mix_backward(grad_rows, lam, perm, grad_z_rows, keep_original)
        return grad_z
    inverse = torch.empty_like(perm).scatter_(0, perm, torch.arange(perm.numel(), device=perm.device))
    _native.launch("flow_backward_cuda", grad.device, _native.Buffer(grad_rows, grad.dtype, rows=True),
                   _native.Buffer(lam, numel=perm.numel()), _native.Buffer(inverse, torch.int64),
                   _native.Buffer(grad_z_rows, grad.dtype, rows=True), perm.numel(), flow_size, grad_z_rows.size(1),
                   keep_original, _native.DTYPE_CODES[grad.dtype])
    return grad_z


@flow_mix_backward.register_fake
def _(grad, lam, perm, flow_size, keep_original, backend):
    rows = flow_size * perm.size(0)
    _check_args("grad", grad, _output_rows(rows, keep_original), lam, perm, flow_size, backend)
    return _layout.empty_like_rows(grad, batch=rows)


def _setup_context(ctx, inputs, output):
    _, lam, perm, flow_size, keep_original, backend = inputs
    ctx.save_for_backward(lam, perm)
    ctx.flow_size, ctx.keep_original, ctx.backend = flow_size, keep_original, backend


def _flow_mix_autograd(ctx, grad_out):
    lam, perm = ctx.saved_tensors
    grad_z = None
    if ctx.needs_input_grad[0]:
        grad_z = flow_mix_backward(grad_out, lam, perm, ctx.flow_size, ctx.keep_original, ctx.backend)
    return grad_z, None, None, None, None, None


def _flow_mix_backward_autograd(ctx, grad_grad_z):
    """flow_mix_backward is ``s * M^T g`` (s = 1/2 with the original flow), so its gradient is ``s * M gg``."""
    lam, perm = ctx.saved_tensors
    grad_grad = None
    if ctx.needs_input_grad[0]:
        grad_grad = flow_mix(grad_grad_z, lam, perm, ctx.flow_size, ctx.keep_original, ctx.backend)
        if ctx.keep_original:
            grad_grad = grad_grad * 0.5
    return grad_grad, None, None, None, None, None


flow_mix.register_autograd(_flow_mix_autograd, setup_context=_setup_context)
flow_mix_backward.register_autograd(_flow_mix_backward_autograd, setup_context=_setup_context)


def _check_params_args(seed: torch.Tensor, alpha: float, batch: int, dtype: torch.dtype) -> None:
    if seed.dtype != torch.int64 or seed.shape != (1,):
        raise ValueError(f"seed must be a (1,) int64 tensor, got {seed.dtype} {tuple(seed.shape)}")
    _checks.check_positive_finite("alpha", alpha)
    if batch < 0 or dtype not in (torch.float32, torch.float64):
        raise ValueError(f"batch must be >= 0 and dtype float32 or float64, got {batch} and {dtype}")


@torch.library.custom_op("fastmix::flow_params", mutates_args=())
def flow_params(seed: torch.Tensor, alpha: float, batch: int, per_sample: bool,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lam, perm)`` for ``flow_mix`` drawn by one Triton kernel from ``seed`` ((1,) int64, e.g.
    ``fastmix._random.draw_seed``): p ~ Beta(alpha, alpha) in ``dtype``, one per sample with ``per_sample`` else
    one for all, and a uniformly random permutation of 0..B-1 (int64). The same seed gives the same draws."""
    _check_params_args(seed, alpha, batch, dtype)
    from fastmix.kernels.triton import flow as triton_flow

    lam = seed.new_empty(batch, dtype=dtype)
    perm = seed.new_empty(batch)
    triton_flow.flow_params(seed, alpha, lam, perm, per_sample)
    return lam, perm


@flow_params.register_fake
def _(seed, alpha, batch, per_sample, dtype):
    _check_params_args(seed, alpha, batch, dtype)
    return seed.new_empty(batch, dtype=dtype), seed.new_empty(batch)
