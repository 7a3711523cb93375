"""Per-sample Mixup/CutMix custom ops: ``fastmix::mixup_pairs``, ``fastmix::cutmix_pairs`` and ``fastmix::pair_mix``.

``pair_mix`` is the general form (see fastmix/reference/mix.py): every sample is its own weight (inside/outside a
box) times itself plus a weighted sum over a segment of source samples. ``mixup_pairs`` and ``cutmix_pairs`` are the
forward cases with one source per sample; the gradient of any of them is a ``pair_mix`` over the samples that took
each sample as partner (found by a stable sort, no atomics), so backward is deterministic and works for any
``partner`` (a permutation, the flipped batch, or indices drawn with repetition).

Boxes are int32 ``(y0, y1, x0, x1)``, half-open. Weights are float32 (float64 for float64 x) pairs
``(weight_in_box, weight_out_of_box)``. ``height_dim``/``width_dim`` < 0 mean "no spatial dims" (pure mixup).
"""

from __future__ import annotations

import torch

from fastmix import _layout, _native
from fastmix.reference import mix as reference

# "cpu" runs the CUDA kernel's per-thread body over its launch grid with OpenMP (csrc/mix_cpu.cpp).
BACKENDS = ("cuda", "triton", "reference", "cpu")


def spatial_geometry(x: torch.Tensor, height_dim: int, width_dim: int) -> tuple[int, int, int, int]:
    """``(height, width, h_div, w_div)``: in a canonical row (x's memory order), ``h = f // h_div % height``."""
    if height_dim < 0:
        return 1, 1, 1, 1
    order = _layout._trailing_order(x)
    divisor = {}
    step = 1
    for d in reversed(order):
        divisor[d] = step
        step *= x.size(d)
    return x.size(height_dim), x.size(width_dim), divisor[height_dim], divisor[width_dim]


def _launch(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, height_dim, width_dim, backend):
    if backend == "reference":
        spatial = (height_dim, width_dim) if height_dim >= 0 else (None, None)
        out = _layout.empty_like_rows(x)
        out.copy_(reference.pair_mix(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, *spatial))
        return out
    out = _layout.empty_like_rows(x)
    x_rows = _layout.rows_view(x)
    out_rows = _layout.rows_view(out)
    height, width, h_div, w_div = spatial_geometry(x, height_dim, width_dim)
    has_box = height_dim >= 0
    weight_dtype = reference.accumulate_dtype(x.dtype)  # the kernels read weights in their accumulation type
    self_boxes, seg_boxes = self_boxes.to(torch.int32).contiguous(), seg_boxes.to(torch.int32).contiguous()
    self_weights, seg_weights = self_weights.to(weight_dtype).contiguous(), seg_weights.to(weight_dtype).contiguous()
    sources, offsets = sources.to(torch.int64).contiguous(), offsets.to(torch.int64).contiguous()
    if backend == "triton":
        from fastmix.kernels.triton import mix as triton_mix

        triton_mix.pair_mix(x_rows, out_rows, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets,
                            height, width, h_div, w_div, has_box)
        return out
    batch, features = x_rows.shape
    segments = sources.numel()
    _native.launch(
        "pair_mix_emulate" if backend == "cpu" else "pair_mix_cuda", x.device,
        _native.Buffer(x_rows, x.dtype, rows=True), _native.Buffer(out_rows, x.dtype, rows=True), batch, features,
        _native.Buffer(self_boxes, torch.int32, batch * 4), _native.Buffer(self_weights, weight_dtype, batch * 2),
        _native.Buffer(seg_boxes, torch.int32, segments * 4), _native.Buffer(seg_weights, weight_dtype, segments * 2),
        _native.Buffer(sources, torch.int64), _native.Buffer(offsets, torch.int64, batch + 1), height, width, h_div,
        w_div, has_box, _native.DTYPE_CODES[x.dtype])
    return out


@torch.library.custom_op("fastmix::pair_mix", mutates_args=())
def pair_mix(x: torch.Tensor, self_boxes: torch.Tensor, self_weights: torch.Tensor, seg_boxes: torch.Tensor,
             seg_weights: torch.Tensor, sources: torch.Tensor, offsets: torch.Tensor, height_dim: int,
             width_dim: int, backend: str) -> torch.Tensor:
    """The general pair mix (module docstring); output like x (dtype, dimension order)."""
    return _launch(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, height_dim, width_dim,
                   backend)


@pair_mix.register_fake
def _(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, height_dim, width_dim, backend):
    torch._check(offsets.numel() == x.size(0) + 1)
    return _layout.empty_like_rows(x)


def transpose(self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets):
    """The pair mix whose result is the gradient (adjoint) of the given one: term k of segment j becomes a term of
    segment ``sources[k]`` reading sample j, with the same box and weight. A stable sort keeps it deterministic."""
    batch = offsets.numel() - 1
    rows = reference.segment_rows(offsets, sources.numel())
    sorted_sources, order = torch.sort(sources, stable=True)
    new_offsets = torch.searchsorted(sorted_sources, torch.arange(batch + 1, device=offsets.device))
    return self_boxes, self_weights, seg_boxes[order], seg_weights[order], rows[order], new_offsets


def _setup_pair_mix(ctx, inputs, output):
    ctx.save_for_backward(*inputs[1:7])
    ctx.spatial = inputs[7:9]
    ctx.backend = inputs[9]


def _backward_pair_mix(ctx, grad_out):
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = pair_mix(grad_out, *transpose(*ctx.saved_tensors), *ctx.spatial, ctx.backend)
    return (grad_x,) + (None,) * 9


pair_mix.register_autograd(_backward_pair_mix, setup_context=_setup_pair_mix)


def _one_source_each(partner: torch.Tensor) -> torch.Tensor:
    return torch.arange(partner.numel() + 1, device=partner.device)


def _mixup_structure(lam, partner, dtype):
    weight_dtype = reference.accumulate_dtype(dtype)
    lam = lam.to(weight_dtype)
    boxes = torch.zeros(lam.numel(), 4, dtype=torch.int32, device=lam.device)
    self_weights = torch.stack([lam, lam], dim=1)
    return boxes, self_weights, boxes, 1 - self_weights, partner, _one_source_each(partner)


@torch.library.custom_op("fastmix::mixup_pairs", mutates_args=())
def mixup_pairs(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, backend: str) -> torch.Tensor:
    """``out[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]]`` for any batch-first x (float or uint8).

    lam float32 (B,), partner int64 (B,) with values in [0, B) (any index map; checked by the caller). Math in fp32
    (fp64 for fp64 x); uint8 rounds half to even. Gradient flows to x only:
    ``grad_x[j] = lam[j] g[j] + sum_{i: partner[i] = j} (1 - lam[i]) g[i]``, summed deterministically.
    """
    if backend == "reference":
        return _layout.empty_like_rows(x).copy_(reference.mixup_pairs(x, lam, partner))
    return _launch(x, *_mixup_structure(lam, partner, x.dtype), -1, -1, backend)


@mixup_pairs.register_fake
def _(x, lam, partner, backend):
    torch._check(lam.numel() == x.size(0) and partner.numel() == x.size(0))
    return _layout.empty_like_rows(x)


def _setup_mixup(ctx, inputs, output):
    x, lam, partner, backend = inputs
    ctx.save_for_backward(lam, partner)
    ctx.dtype = x.dtype
    ctx.backend = backend


def _backward_mixup(ctx, grad_out):
    lam, partner = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        structure = transpose(*_mixup_structure(lam, partner, ctx.dtype))
        grad_x = pair_mix(grad_out, *structure, -1, -1, ctx.backend)
    return grad_x, None, None, None


mixup_pairs.register_autograd(_backward_mixup, setup_context=_setup_mixup)


def _cutmix_structure(boxes, partner, dtype):
    weight_dtype = reference.accumulate_dtype(dtype)
    self_weights = torch.tensor([0.0, 1.0], dtype=weight_dtype, device=boxes.device).expand(boxes.size(0), 2)
    return boxes, self_weights, boxes, 1 - self_weights, partner, _one_source_each(partner)


@torch.library.custom_op("fastmix::cutmix_pairs", mutates_args=())
def cutmix_pairs(x: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor, height_dim: int, width_dim: int,
                 backend: str) -> torch.Tensor:
    """CutMix (paper 003_*, eq. 1): ``out[i]`` is ``x[partner[i]]`` inside ``boxes[i]`` and ``x[i]`` outside.

    boxes int32 (B, 4) ``(y0, y1, x0, x1)`` half-open over dims ``height_dim`` < ``width_dim`` of x; each element is
    read from exactly one input, no mask tensor is built. Gradient: masked routing (each output element's gradient
    goes to the one input element it was copied from).
    """
    if backend == "reference":
        return _layout.empty_like_rows(x).copy_(reference.cutmix_pairs(x, boxes, partner, height_dim, width_dim))
    return _launch(x, *_cutmix_structure(boxes, partner, x.dtype), height_dim, width_dim, backend)


@cutmix_pairs.register_fake
def _(x, boxes, partner, height_dim, width_dim, backend):
    torch._check(boxes.size(0) == x.size(0) and partner.numel() == x.size(0))
    return _layout.empty_like_rows(x)


def _setup_cutmix(ctx, inputs, output):
    x, boxes, partner, height_dim, width_dim, backend = inputs
    ctx.save_for_backward(boxes, partner)
    ctx.dtype = x.dtype
    ctx.spatial = (height_dim, width_dim)
    ctx.backend = backend


def _backward_cutmix(ctx, grad_out):
    boxes, partner = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        structure = transpose(*_cutmix_structure(boxes, partner, ctx.dtype))
        grad_x = pair_mix(grad_out, *structure, *ctx.spatial, ctx.backend)
    return grad_x, None, None, None, None, None


cutmix_pairs.register_autograd(_backward_cutmix, setup_context=_setup_cutmix)
