"""zeta-mixup custom ops (zeta-mixup paper, eq. 2-3): ``fastmix::zeta_weights``, ``fastmix::zeta_mixup`` (``W @ x``
and the labels' ``W @ y``, one Triton launch) and ``fastmix::zeta_mix`` (``W @ x`` alone: the backward of both).

Backends: "triton" (the default on CUDA tensors), "cpu" (the default on CPU tensors: the weights and the index
labels' mix in C++, ``W @ x`` one torch.mm written straight into the output) and "reference" (the PyTorch oracle's
weights, one-hot labels). The eager calls go through ``EagerOp`` (``zeta_weights_call``, ``zeta_mixup_call``). There is
no CUDA C++ kernel, by the bytes each moves: ``W @ x`` is a GEMM with K = B, and the Triton kernel reads x once
per 64-row block of W, with tensor-core dots, ordered so that repeats hit L2: 4 reads at B = 256, 308 MB for a
(256, 3, 224, 224) bf16 x of 77 MB. The CUDA kernel it replaced kept 16 output rows per thread and read x
ceil(B/16) times, 16 reads (1.2 GB) at B = 256, and spilled in fp64; making it a tiled tensor-core GEMM would
have duplicated the Triton kernel.
"""

from __future__ import annotations

import functools

import torch

from fastmix import _backend, _checks, _layout, _native
from fastmix._dtypes import compute_dtype
from fastmix.ops._fast_path import EagerOp, rows_with_output, unit_column_rows
from fastmix.reference import zeta as reference

BACKENDS = ("triton", "reference", "cpu")
# Columns per fp32 chunk on the PyTorch path for fp16/bf16/uint8 x. Timed on a 2-core Xeon at (32 | 128, 3, 224,
# 224): converting the whole of x to fp32 first (a 2-4x larger copy written and re-read) is 2-2.5x slower; 2k-8k
# columns are alike within noise, 16k slower. One GEMM with W rounded to bf16/fp16 ran ~1.5x faster still, but W to
# 8 (11) bits breaks the tolerance table where a row's terms cancel; W_hi + W_lo in two such GEMMs was no faster.
_CHUNK_COLUMNS = 4096


@functools.lru_cache(maxsize=256)
def p_series_norm(batch: int, gamma: float) -> float:
    """C = sum_{n=1..B} n^-gamma (eq. 3), from Python numbers only (no tensor, no sync)."""
    return float(sum(n ** -gamma for n in range(1, batch + 1)))


def _check_weights_args(keys: torch.Tensor, gamma: float, backend: str) -> None:
    if keys.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"keys must be float32 or float64, got {keys.dtype}")
    if keys.dim() != 2 or keys.size(0) != keys.size(1):
        raise ValueError(f"keys must be a square (B, B) matrix, got shape {tuple(keys.shape)}")
    _checks.check_positive_finite("gamma", gamma)
    _backend.check_name(backend, BACKENDS, default_allowed=False)


def _check_mix_args(x: torch.Tensor, weights: torch.Tensor, backend: str) -> None:
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"x must be a floating-point or uint8 tensor, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have a batch dim")
    if weights.dtype != compute_dtype(x.dtype):
        raise TypeError(f"weights must be {compute_dtype(x.dtype)} for {x.dtype} x, got {weights.dtype}")
    if weights.shape != (x.size(0), x.size(0)):
        raise ValueError(f"weights must be (B, B) = ({x.size(0)}, {x.size(0)}), got {tuple(weights.shape)}")
    if weights.device != x.device:
        raise ValueError(f"weights are on {weights.device} but x is on {x.device}")
    _backend.check_name(backend, BACKENDS, default_allowed=False)


def _check_labels(labels: torch.Tensor, x: torch.Tensor, num_classes: int) -> None:
    """Class indices (B,) of an integer dtype, or floating (B, num_classes) rows, on x's device."""
    batch = x.size(0)
    index = labels.dim() == 1 and not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool)
    if not (index and labels.shape == (batch,)) and not (labels.is_floating_point()
                                                          and labels.shape == (batch, num_classes)):
        raise ValueError(f"labels must be integer ({batch},) or floating ({batch}, {num_classes}), got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if labels.device != x.device:
        raise ValueError(f"labels are on {labels.device} but x is on {x.device}")


def mixed_labels_dtype(labels: torch.Tensor) -> torch.dtype:
    """y_mixed's dtype: float64 for float64 labels, else float32."""
    return torch.float64 if labels.dtype == torch.float64 else torch.float32


def _zeta_weights(keys: torch.Tensor, gamma: float, self_dominant: bool, backend: str) -> torch.Tensor:
    _check_weights_args(keys, gamma, backend)
    if backend == "reference":
        return reference.zeta_weights(keys, gamma, self_dominant).contiguous()
    norm = p_series_norm(keys.size(0), gamma)
    if backend == "cpu":
        weights = torch.empty(keys.shape, dtype=keys.dtype, device=keys.device)
        _native.launch("zeta_weights_cpu", keys.device, _native.Buffer(unit_column_rows(keys), keys.dtype, rows=True),
                       keys.size(0), gamma, norm, self_dominant, _native.DTYPE_CODES[keys.dtype], weights)
        return weights
    from fastmix.kernels.triton import zeta as triton_zeta

    return triton_zeta.zeta_weights(keys, gamma, norm, self_dominant)


zeta_weights = torch.library.custom_op("fastmix::zeta_weights", _zeta_weights, mutates_args=())
zeta_weights.__doc__ = """The (B, B) weight matrix, contiguous, from uniform keys of any strides, in the keys' dtype
(fp32/fp64)."""
zeta_weights_call = EagerOp(zeta_weights, _zeta_weights)


@zeta_weights.register_fake
def _(keys, gamma, self_dominant, backend):
    _check_weights_args(keys, gamma, backend)
    return keys.new_empty(keys.shape)


def _mix_with_torch(x_rows: torch.Tensor, weights: torch.Tensor, out_rows: torch.Tensor) -> None:
    """``W @ x`` by torch.mm written straight into the output: in one GEMM where x is in the weights' dtype, else
    in fp32 (per column chunk on a CPU, where a chunk stays in cache; in one piece on a GPU, saving launches),
    stored rounded to x's dtype (uint8: saturated, rounded half to even)."""
    if x_rows.dtype == weights.dtype:
        torch.mm(weights, x_rows, out=out_rows)
        return
    chunk = _CHUNK_COLUMNS if x_rows.device.type == "cpu" else max(x_rows.size(1), 1)
    for start in range(0, x_rows.size(1), chunk):
        mixed = torch.mm(weights, x_rows[:, start:start + chunk].to(weights.dtype))
        if x_rows.dtype == torch.uint8:
            mixed = mixed.clamp_(0, 255).round_()
        out_rows[:, start:start + chunk].copy_(mixed)


def _zeta_mix(x: torch.Tensor, weights: torch.Tensor, backend: str) -> torch.Tensor:
    _check_mix_args(x, weights, backend)
    x_rows, out, out_rows = rows_with_output(x)
    if backend != "triton":
        _mix_with_torch(x_rows, weights, out_rows)
    else:
        from fastmix.kernels.triton import zeta as triton_zeta

        triton_zeta.zeta_mix(x_rows, weights, out_rows)
    return out


zeta_mix = torch.library.custom_op("fastmix::zeta_mix", _zeta_mix, mutates_args=())
zeta_mix.__doc__ = """``W @ x`` over the batch dim for any trailing shape and weights of any strides; the output keeps
x's dtype and dimension order.

Non-finite x follows the fp32 (fp64) sum on every backend: +-inf gives +-inf in each row it has weight in, NaN (or
+inf meeting -inf) gives NaN there."""


@zeta_mix.register_fake
def _(x, weights, backend):
    _check_mix_args(x, weights, backend)
    return _layout.empty_like_rows(x)


def _setup_mix_context(ctx, inputs, output):
    _, weights, backend = inputs
    ctx.save_for_backward(weights)
    ctx.backend = backend


def _mix_backward(ctx, grad_out):
    """``W^T @ grad`` by the op itself (differentiable: the op is linear in x)."""
    (weights,) = ctx.saved_tensors
    grad_x = zeta_mix(grad_out, weights.t(), ctx.backend) if ctx.needs_input_grad[0] else None
    return grad_x, None, None


zeta_mix.register_autograd(_mix_backward, setup_context=_setup_mix_context)
zeta_mix_call = EagerOp(zeta_mix, _zeta_mix, _setup_mix_context, _mix_backward, differentiable_backward=True)


def _check_index_range(labels: torch.Tensor, num_classes: int, backend: str) -> None:
    """Class indices in [0, num_classes): on the device for the reference; the C++ kernel checks them before it
    writes, the Triton kernel asserts them as it reads them (checked here too where the host reads them for free)."""
    if labels.is_floating_point() or backend == "cpu" or (backend == "triton"
                                                          and not _checks.host_reads_values(labels)):
        return
    _checks.check_on_device(((labels >= 0) & (labels < num_classes)).all(),
                            f"y holds class indices outside [0, {num_classes})")


def _mix_labels(weights: torch.Tensor, labels: torch.Tensor, num_classes: int, backend: str,
                           y_mixed: torch.Tensor) -> None:
    """``W @ y`` into ``y_mixed`` with W rounded to its dtype: float labels by torch.mm; class indices by the C++
    kernel (the "cpu" backend, no one-hot matrix) or by torch.mm with their one-hot rows (the reference)."""
    if labels.is_floating_point():
        torch.mm(weights.to(y_mixed.dtype), labels.to(y_mixed.dtype), out=y_mixed)
    elif backend == "cpu":
        batch = labels.size(0)
        _native.launch("zeta_index_labels_cpu", labels.device, _native.Buffer(weights.contiguous(), weights.dtype),
                       _native.DTYPE_CODES[weights.dtype], _native.Buffer(labels.long().contiguous(), torch.int64),
                       batch, num_classes, _native.Buffer(y_mixed, torch.float32, batch * num_classes))
    else:
        dense = torch.nn.functional.one_hot(labels.long(), num_classes).to(y_mixed.dtype)
        torch.mm(weights.to(y_mixed.dtype), dense, out=y_mixed)


def _zeta_mixup(x: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, num_classes: int,
                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_mix_args(x, weights, backend)
    _check_labels(labels, x, num_classes)
    _check_index_range(labels, num_classes, backend)
    x_rows, out, out_rows = rows_with_output(x)
    y_mixed = x.new_empty((x.size(0), num_classes), dtype=mixed_labels_dtype(labels))
    if backend != "triton":  # the labels first: the C++ kernel checks the class indices before anything is written
        _mix_labels(weights, labels, num_classes, backend, y_mixed)
        _mix_with_torch(x_rows, weights, out_rows)
    else:
        from fastmix.kernels.triton import zeta as triton_zeta

        label_rows = labels if labels.dim() == 1 else unit_column_rows(labels)
        triton_zeta.zeta_mix(x_rows, weights, out_rows, label_rows, y_mixed)
    return out, y_mixed


zeta_mixup = torch.library.custom_op("fastmix::zeta_mixup", _zeta_mixup, mutates_args=())
zeta_mixup.__doc__ = """``(W @ x, W @ y)`` (eq. 2): x as ``zeta_mix`` mixes it; labels as class indices (B,) of an
integer dtype (read as one-hot rows, never built in memory on the "cpu" and "triton" backends) or float (B, K) rows,
mixed in float32 (float64 for float64 labels) with W rounded to that dtype, into a contiguous (B, K)."""


@zeta_mixup.register_fake
def _(x, weights, labels, num_classes, backend):
    _check_mix_args(x, weights, backend)
    _check_labels(labels, x, num_classes)
    return _layout.empty_like_rows(x), x.new_empty((x.size(0), num_classes), dtype=mixed_labels_dtype(labels))


def _setup_mixup_context(ctx, inputs, output):
    _, weights, labels, _, backend = inputs
    ctx.save_for_backward(weights)
    ctx.set_materialize_grads(False)  # an unused output needs no zeros
    ctx.labels_dtype = labels.dtype
    ctx.backend = backend


def _mixup_backward_with(mix):
    """The backward of ``zeta_mixup``: ``W^T @ grad`` for x and for float labels, one ``mix`` each (``zeta_mix``
    for the op, ``zeta_mix_call`` for the eager path; W^T a view of the saved W)."""

    def backward(ctx, grad_x_mixed, grad_y_mixed):
        (weights,) = ctx.saved_tensors
        grad_x = grad_labels = None
        if ctx.needs_input_grad[0] and grad_x_mixed is not None:
            grad_x = mix(grad_x_mixed, weights.t(), ctx.backend)
        if ctx.needs_input_grad[2] and grad_y_mixed is not None:
            grad_labels = mix(grad_y_mixed, weights.to(grad_y_mixed.dtype).t(), ctx.backend).to(ctx.labels_dtype)
        return grad_x, None, grad_labels, None, None

    return backward


zeta_mixup.register_autograd(_mixup_backward_with(zeta_mix), setup_context=_setup_mixup_context)
zeta_mixup_call = EagerOp(zeta_mixup, _zeta_mixup, _setup_mixup_context, _mixup_backward_with(zeta_mix_call),
                          differentiable_backward=True)
