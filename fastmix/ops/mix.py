"""Per-sample Mixup/CutMix custom ops: ``fastmix::mix_pairs``, its in-place twin ``fastmix::mix_pairs_inplace``,
``fastmix::pair_mix``, and for the library's own calls ``fastmix::mix_params`` and ``fastmix::mix_pairs_unchecked``.

``mix_pairs`` is the forward mix of every mode (LUMix paper, eq. 1 and Mixup): ``out[i, e] = x[partner[i], e]``
inside ``boxes[i]``, else ``weight[i] x[i, e] + (1 - weight[i]) x[partner[i], e]`` (Mixup: an empty box and
``weight = lam``; CutMix: ``weight = 1``; an unmixed sample: ``weight = 1`` and an empty box). ``mixup_pairs`` and
``cutmix_pairs`` are its two pure cases. Its gradient is the adjoint mix over the samples that took each sample as
partner (their lists found by a stable counting sort, no atomics), so backward is deterministic and works for any
``partner`` (a permutation, the flipped batch, or indices drawn with repetition); with the inverse permutation
(which the parameter kernel writes) it is one term per sample. ``pair_mix`` is the general form (see
fastmix/reference/mix.py): every sample is its own weight (inside/outside a box) times itself plus a weighted sum
over a segment of source samples.

Boxes are int32 ``(y0, y1, x0, x1)``, half-open. ``pair_mix``'s weights are float32 (float64 for float64 x) pairs
``(weight_in_box, weight_out_of_box)``. ``height_dim``/``width_dim`` < 0 mean "no spatial dims" (pure mixup).
"""

from __future__ import annotations

import math

import torch

from fastmix import _checks, _layout, _native
from fastmix._dtypes import compute_dtype
from fastmix.ops import _fast_path
from fastmix.reference import mix as reference

# "cpu": mix_pairs runs the C++ line kernel, pair_mix (the gradients) the CUDA kernel's body over its launch grid,
# both with OpenMP (csrc/mix_cpu.cpp).
BACKENDS = ("cuda", "triton", "reference", "cpu")
# mix_params's codes, shared by its Triton kernel and its C++ twin: how the drawn rows map to samples (one draw for
# the batch, one per pair (i, B-1-i), one per sample, one per sample of the first half, the rest unmixed), and the
# labels mixed (none, int class indices (B,), dense (B, K) rows of any dtype).
DRAW_MODES = ("batch", "pair", "elem", "half")
LABEL_KINDS = ("none", "index", "dense")


def spatial_geometry(x: torch.Tensor, height_dim: int, width_dim: int) -> tuple[int, int, int, int]:
    """``(height, width, h_div, w_div)``: in a canonical row (x's memory order), ``h = f // h_div % height``."""
    if height_dim < 0:
        return 1, 1, 1, 1
    if x.is_contiguous():  # memory order is x's order: a dim's divisor is its stride (1 for a size-1 dim)
        height, width = x.size(height_dim), x.size(width_dim)
        return height, width, x.stride(height_dim) if height > 1 else 1, x.stride(width_dim) if width > 1 else 1
    order = _layout._trailing_order(x)
    divisor = {}
    step = 1
    for d in reversed(order):
        divisor[d] = step
        step *= x.size(d)
    return x.size(height_dim), x.size(width_dim), divisor[height_dim], divisor[width_dim]


def check_boxes(name: str, boxes: torch.Tensor, count: int, spatial: tuple[int, int] | None,
                device: torch.device) -> None:
    """``boxes`` an integer (count, 4) tensor of half-open ``(y0, y1, x0, x1)`` with 0 <= y0 <= y1 <= height and
    0 <= x0 <= x1 <= width for ``spatial = (height, width)`` (value checks asynchronous on CUDA); None: no box, the
    values are unused."""
    _check_operand(name, boxes, (count, 4), device, integer=True)
    if spatial is None:
        return
    height, width = spatial
    y0, y1, x0, x1 = boxes.unbind(1)
    inside = (y0 >= 0) & (y0 <= y1) & (y1 <= height) & (x0 >= 0) & (x0 <= x1) & (x1 <= width)
    _checks.check_on_device(inside.all(), f"{name} must hold boxes (y0, y1, x0, x1) with 0 <= y0 <= y1 <= {height} "
                                          f"and 0 <= x0 <= x1 <= {width}")


def check_indices(name: str, indices: torch.Tensor, count: int, batch: int, device: torch.device) -> None:
    """``indices`` an integer (count,) tensor with values in [0, batch) (checked asynchronously on CUDA)."""
    _check_operand(name, indices, (count,), device, integer=True)
    _checks.check_on_device(((indices >= 0) & (indices < batch)).all(), f"{name} holds indices outside [0, {batch})")


def _check_operand(name, tensor, shape, device, *, integer):
    _checks.check_tensor(name, tensor)
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but x is on {device}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
    if integer and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
        raise TypeError(f"{name} must hold integers, got dtype {tensor.dtype}")
    if not integer and not tensor.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {tensor.dtype}")


def _spatial_size(x, height_dim, width_dim):
    if height_dim < 0:
        return None
    if not (0 < height_dim < x.dim() and 0 < width_dim < x.dim() and height_dim != width_dim):
        raise ValueError(f"height_dim and width_dim must be two trailing dims of x, got {height_dim}, {width_dim}")
    return x.size(height_dim), x.size(width_dim)


def check_pairs(x, weight, boxes, partner, height_dim, width_dim) -> None:
    """The arguments of ``mix_pairs``: weight float (B,), boxes int (B, 4) inside the image, partner int (B,)."""
    batch = x.size(0)
    _check_operand("weight", weight, (batch,), x.device, integer=False)
    check_indices("partner", partner, batch, batch, x.device)
    check_boxes("boxes", boxes, batch, _spatial_size(x, height_dim, width_dim), x.device)


def check_pair_mix(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, height_dim, width_dim):
    """The arguments of ``pair_mix``: segments ``offsets`` (B + 1,) from 0 to the number of terms, non-decreasing."""
    batch, terms = x.size(0), sources.numel()
    spatial = _spatial_size(x, height_dim, width_dim)
    _check_operand("self_weights", self_weights, (batch, 2), x.device, integer=False)
    _check_operand("seg_weights", seg_weights, (terms, 2), x.device, integer=False)
    check_boxes("self_boxes", self_boxes, batch, spatial, x.device)
    check_boxes("seg_boxes", seg_boxes, terms, spatial, x.device)
    check_indices("sources", sources, terms, batch, x.device)
    _check_operand("offsets", offsets, (batch + 1,), x.device, integer=True)
    ends = (offsets[0] == 0) & (offsets[-1] == terms) & (offsets[1:] >= offsets[:-1]).all()
    _checks.check_on_device(ends, f"offsets must rise from 0 to {terms} (the number of terms)")


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
    weight_dtype = compute_dtype(x.dtype)  # the kernels read weights in their accumulation type
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
    check_pair_mix(x, self_boxes, self_weights, seg_boxes, seg_weights, sources, offsets, height_dim, width_dim)
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
    starts = offsets[1:-1]  # term k is in segment j when j segments start at or before k
    rows = torch.zeros(sources.numel() + 1, dtype=offsets.dtype, device=offsets.device).index_add_(
        0, starts, torch.ones_like(starts)).cumsum(0)[:-1]
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


def _pairs_structure(weight, boxes, partner, dtype):
    """``mix_pairs`` as a ``pair_mix``: own weights (0 in the box, w outside), partner's (1 in the box, 1 - w)."""
    weight = weight.to(compute_dtype(dtype))
    self_weights = torch.stack([torch.zeros_like(weight), weight], dim=1)
    seg_weights = torch.stack([torch.ones_like(weight), 1 - weight], dim=1)
    offsets = torch.arange(partner.numel() + 1, device=partner.device)
    return boxes, self_weights, boxes, seg_weights, partner, offsets


def _mix_pairs_cpu(x_rows, out_rows, x, weight, boxes, partner, height_dim, width_dim):
    """The C++ kernel on (B, F) rows of x; in place when ``out_rows`` is ``x_rows``."""
    height, width, h_div, w_div = spatial_geometry(x, height_dim, width_dim)
    weight_dtype = compute_dtype(x.dtype)
    weight, partner = weight.to(weight_dtype).contiguous(), partner.to(torch.int64).contiguous()
    boxes = boxes.to(torch.int32).contiguous()
    batch = x_rows.size(0)
    _native.launch(
        "mix_pairs_cpu", x.device, _native.Buffer(x_rows, x.dtype, rows=True),
        _native.Buffer(out_rows, x.dtype, rows=True), *x_rows.shape, _native.Buffer(weight, weight_dtype, batch),
        _native.Buffer(boxes, torch.int32, batch * 4), _native.Buffer(partner, torch.int64, batch),
        height, width, h_div, w_div, height_dim >= 0, _native.DTYPE_CODES[x.dtype])


def _launch_pairs(x, weight, boxes, sources, offsets, height_dim, width_dim, backend, adjoint):
    """The pair mix kernel of ``backend`` (triton, cuda, or for the adjoint the CUDA body on the CPU): the mix
    (``sources`` the partners) or its adjoint (``sources`` the inverse permutation, or with ``offsets`` the readers'
    lists, see ``readers``). Operands already in the kernels' dtypes, contiguous."""
    out = _layout.empty_like_rows(x)
    x_rows, out_rows = _layout.rows_view(x), _layout.rows_view(out)
    height, width, h_div, w_div = spatial_geometry(x, height_dim, width_dim)
    if backend == "triton":
        from fastmix.kernels.triton import mix as triton_mix

        triton_mix.mix_pairs(x_rows, out_rows, weight, boxes, sources, offsets, height, width, h_div, w_div,
                             height_dim >= 0, adjoint)
        return out
    batch, features = x_rows.shape
    weight_dtype = compute_dtype(x.dtype)
    segments = () if offsets is None else (_native.Buffer(offsets, torch.int64, batch + 1),)
    _native.launch(
        "mix_pairs_emulate" if backend == "cpu" else "mix_pairs_cuda", x.device,
        _native.Buffer(x_rows, x.dtype, rows=True), _native.Buffer(out_rows, x.dtype, rows=True), batch, features,
        _native.Buffer(weight, weight_dtype, batch), _native.Buffer(boxes, torch.int32, batch * 4),
        _native.Buffer(sources, torch.int64), *(segments or (0,)), height, width, h_div, w_div, height_dim >= 0,
        adjoint, _native.DTYPE_CODES[x.dtype])
    return out


def _mix_pairs(x, weight, boxes, partner, height_dim, width_dim, backend):
    """The forward mix of ``mix_pairs`` with operands of any dtype and layout (converted when they must be)."""
    if backend == "reference":
        spatial = (height_dim, width_dim) if height_dim >= 0 else (None, None)
        return _layout.empty_like_rows(x).copy_(reference.mix_pairs(x, weight, boxes, partner, *spatial))
    if backend == "cpu":
        x_rows, out, out_rows = _fast_path.rows_with_output(x)
        _mix_pairs_cpu(x_rows, out_rows, x, weight, boxes, partner, height_dim, width_dim)
        return out
    weight = weight.to(compute_dtype(x.dtype)).contiguous()
    boxes, partner = boxes.to(torch.int32).contiguous(), partner.to(torch.int64).contiguous()
    return _launch_pairs(x, weight, boxes, partner, None, height_dim, width_dim, backend, adjoint=False)


def readers(partner: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sources, offsets)``: the samples that read row j (``partner[i] = j``) in increasing i are
    ``sources[offsets[j]:offsets[j + 1]]``, for any int64 partner map; one launch on the kernel backends."""
    if backend in ("triton", "cuda"):
        from fastmix.kernels.triton import mix as triton_mix

        return triton_mix.readers(partner)
    sorted_partner, sources = torch.sort(partner, stable=True)
    return sources, torch.searchsorted(sorted_partner, torch.arange(partner.numel() + 1, device=partner.device))


def _adjoint(grad_out, weight, boxes, partner, inverse, height_dim, width_dim, backend):
    """The gradient of the pair mix: ``grad_x[j] = W_j g_j + sum_{i: partner[i] = j} (1 - W_i) g_i``; with the
    inverse permutation one term per row (one launch), otherwise the readers' lists (two)."""
    if backend == "reference":
        structure = transpose(*_pairs_structure(weight, boxes, partner, grad_out.dtype))
        return pair_mix(grad_out, *structure, height_dim, width_dim, backend)
    if backend == "cpu" and inverse is not None:
        return _adjoint_cpu(grad_out, weight, boxes, inverse, height_dim, width_dim)
    sources, offsets = (inverse, None) if inverse is not None else readers(partner, backend)
    return _launch_pairs(grad_out, weight, boxes, sources, offsets, height_dim, width_dim, backend, adjoint=True)


def _adjoint_cpu(grad_out, weight, boxes, inverse, height_dim, width_dim):
    """The C++ adjoint for a partner permutation (mix_pairs_cpu's lines and runs, OpenMP)."""
    out = _layout.empty_like_rows(grad_out)
    grad_rows, out_rows = _layout.rows_view(grad_out), _layout.rows_view(out)
    batch = grad_rows.size(0)
    _native.launch(
        "mix_pairs_adjoint_cpu", grad_out.device, _native.Buffer(grad_rows, grad_out.dtype, rows=True),
        _native.Buffer(out_rows, grad_out.dtype, rows=True), *grad_rows.shape,
        _native.Buffer(weight, compute_dtype(grad_out.dtype), batch), _native.Buffer(boxes, torch.int32, batch * 4),
        _native.Buffer(inverse, torch.int64, batch), *spatial_geometry(grad_out, height_dim, width_dim),
        height_dim >= 0, _native.DTYPE_CODES[grad_out.dtype])
    return out


@torch.library.custom_op("fastmix::mix_pairs", mutates_args=())
def mix_pairs(x: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor, height_dim: int,
              width_dim: int, backend: str) -> torch.Tensor:
    """The forward mix of every mode (module docstring), for any batch-first x (float or uint8).

    weight float (B,), boxes int (B, 4) ``(y0, y1, x0, x1)`` half-open over dims ``height_dim``, ``width_dim`` of x
    (< 0: no box), partner int (B,) in [0, B). Math in fp32 (fp64 for fp64 x); uint8 rounds half to even and
    saturates; the box region is copied exactly. Gradient flows to x only, summed deterministically:
    ``grad_x[j] = W_j g_j + sum_{i: partner[i] = j} (1 - W_i) g_i`` with ``W`` 0 in the box and ``weight`` outside
    (``mix_pairs_unchecked``'s adjoint: two launches, the readers' lists and the adjoint kernel).
    """
    check_pairs(x, weight, boxes, partner, height_dim, width_dim)
    return _mix_pairs(x, weight, boxes, partner, height_dim, width_dim, backend)


@mix_pairs.register_fake
def _(x, weight, boxes, partner, height_dim, width_dim, backend):
    torch._check(weight.shape == (x.size(0),) and partner.shape == (x.size(0),) and boxes.shape == (x.size(0), 4))
    return _layout.empty_like_rows(x)


def _setup_mix_pairs(ctx, inputs, output):
    x, weight, boxes, partner, height_dim, width_dim, backend = inputs
    ctx.save_for_backward(weight, boxes, partner)
    ctx.dtype = x.dtype
    ctx.spatial = (height_dim, width_dim)
    ctx.backend = backend


def _backward_mix_pairs(ctx, grad_out):
    weight, boxes, partner = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        weight = weight.to(compute_dtype(ctx.dtype)).contiguous()
        boxes, partner = boxes.to(torch.int32).contiguous(), partner.to(torch.int64).contiguous()
        grad_x = mix_pairs_unchecked(grad_out, weight, boxes, partner, None, *ctx.spatial, ctx.backend, True)
    return (grad_x,) + (None,) * 6


mix_pairs.register_autograd(_backward_mix_pairs, setup_context=_setup_mix_pairs)


def _mix_pairs_unchecked(x, weight, boxes, partner, inverse, height_dim, width_dim, backend, adjoint):
    if adjoint:
        return _adjoint(x, weight, boxes, partner, inverse, height_dim, width_dim, backend)
    if backend in ("reference", "cpu"):
        return _mix_pairs(x, weight, boxes, partner, height_dim, width_dim, backend)
    return _launch_pairs(x, weight, boxes, partner, None, height_dim, width_dim, backend, adjoint=False)


@torch.library.custom_op("fastmix::mix_pairs_unchecked", mutates_args=())
def mix_pairs_unchecked(x: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor,
                        inverse: torch.Tensor | None, height_dim: int, width_dim: int, backend: str,
                        adjoint: bool) -> torch.Tensor:
    """``mix_pairs`` (``adjoint=False``) or its adjoint, the gradient (``adjoint=True``), for arguments the library
    built itself, unchecked: weight in x's accumulation type (float32, float64 for float64 x), int32 boxes inside
    the image, int64 partner in [0, B), all contiguous; ``inverse`` the inverse permutation when partner is one
    (the parameter kernel writes it), else None. The mix is one launch; the adjoint
    ``grad_x[j] = W_j g_j + sum_{i: partner[i] = j} (1 - W_i) g_i`` is one launch with ``inverse``
    (``grad_x[j] = W_j g_j + (1 - W_i) g_i``, ``i = inverse[j]``), else two (the readers' lists, then the kernel).
    Each is the other's gradient."""
    return _mix_pairs_unchecked(x, weight, boxes, partner, inverse, height_dim, width_dim, backend, adjoint)


@mix_pairs_unchecked.register_fake
def _(x, weight, boxes, partner, inverse, height_dim, width_dim, backend, adjoint):
    return _layout.empty_like_rows(x)


def _setup_mix_pairs_unchecked(ctx, inputs, output):
    ctx.save_for_backward(*inputs[1:5])
    ctx.arguments = inputs[5:8]
    ctx.adjoint = inputs[8]


def _backward_mix_pairs_unchecked(ctx, grad_out):
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = mix_pairs_unchecked(grad_out, *ctx.saved_tensors, *ctx.arguments, not ctx.adjoint)
    return (grad_x,) + (None,) * 8


mix_pairs_unchecked.register_autograd(_backward_mix_pairs_unchecked, setup_context=_setup_mix_pairs_unchecked)


# The eager path of mix_pairs_unchecked (no custom-op dispatch, about 50 us a call); its backward is the op itself,
# so gradients of any order flow.
mix_pairs_unchecked_call = _fast_path.EagerOp(mix_pairs_unchecked, _mix_pairs_unchecked, _setup_mix_pairs_unchecked,
                                              _backward_mix_pairs_unchecked, differentiable_backward=True)


def _mix_pairs_into(x, weight, boxes, partner, height_dim, width_dim, backend):
    separate_rows = x.size(0) == 1 or abs(x.stride(0)) >= math.prod(x.shape[1:])  # not an expanded batch
    if backend == "cpu" and _layout._dense_rows(x) and separate_rows:
        x_rows = _layout.rows_view(x)
        _mix_pairs_cpu(x_rows, x_rows, x, weight, boxes, partner, height_dim, width_dim)
    else:
        x.copy_(_mix_pairs(x, weight, boxes, partner, height_dim, width_dim, backend))


@torch.library.custom_op("fastmix::mix_pairs_inplace", mutates_args=("x",))
def mix_pairs_inplace(x: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor,
                      height_dim: int, width_dim: int, backend: str) -> None:
    """``mix_pairs`` written into x (no gradient). The C++ kernel writes each sample after every sample that reads
    it (a cycle of partners saves one line of its first member), touching only what changes: a CutMix sample's box.
    Other backends, and an x whose samples are not separate dense blocks, mix out of place and copy back."""
    check_pairs(x, weight, boxes, partner, height_dim, width_dim)
    _mix_pairs_into(x, weight, boxes, partner, height_dim, width_dim, backend)


@mix_pairs_inplace.register_fake
def _(x, weight, boxes, partner, height_dim, width_dim, backend):
    torch._check(weight.shape == (x.size(0),) and partner.shape == (x.size(0),) and boxes.shape == (x.size(0), 4))


# The eager path of mix_pairs_inplace for arguments the library built itself (as mix_pairs_unchecked takes them):
# its implementation, unchecked.
mix_pairs_inplace_call = _fast_path.EagerOp(mix_pairs_inplace, _mix_pairs_into)


def mixup_pairs(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor, backend: str) -> torch.Tensor:
    """Mixup: ``out[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]]`` for any batch-first x (``mix_pairs``, no box)."""
    boxes = torch.zeros((x.size(0), 4), dtype=torch.int32, device=x.device)
    return mix_pairs(x, lam, boxes, partner, -1, -1, backend)


def cutmix_pairs(x: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor, height_dim: int, width_dim: int,
                 backend: str) -> torch.Tensor:
    """CutMix (LUMix paper, eq. 1): ``out[i]`` is ``x[partner[i]]`` inside ``boxes[i]`` and ``x[i]`` outside; each
    element is copied from exactly one input (``mix_pairs`` with weight 1)."""
    weight = torch.ones(x.size(0), dtype=torch.float32, device=x.device)
    return mix_pairs(x, weight, boxes, partner, height_dim, width_dim, backend)


def _mix_params(seed: torch.Tensor, labels: torch.Tensor | None, classes: int, smoothing: float, multi_label: bool,
                batch: int, height: int, width: int, draws: str, permute: bool, mixup_alpha: float,
                cutmix_alpha: float, mix_prob: float, switch_prob: float, box_range: list[int] | None,
                correct_lam: bool, weight_dtype: torch.dtype, backend: str = "triton"):
    """``mix_params``'s implementation: the Triton kernel, or on the "cpu" backend its C++ twin."""
    outputs = _mix_params_outputs(seed, labels, classes, batch, weight_dtype)
    kind = LABEL_KINDS.index("none" if labels is None else ("index" if labels.dim() == 1 else "dense"))
    keep, add = 1.0 - smoothing, smoothing * (0.5 if multi_label else 1.0 / classes)
    low_h, span_h, low_w, span_w = box_range or (0, 1, 0, 1)
    if backend == "cpu":
        label_dtype = outputs[6].dtype
        label_arguments = (0, 0) if labels is None else _fast_path.label_arguments(
            labels.long() if labels.dim() == 1 else labels, label_dtype)
        _native.launch(
            "mix_params_cpu", seed.device, _native.Buffer(seed, torch.int64, 1), *outputs[:2],
            _native.DTYPE_CODES[weight_dtype], *outputs[2:6], kind, *label_arguments,
            _native.DTYPE_CODES[label_dtype], outputs[6], classes if labels is not None else 0, batch, height, width,
            low_h, span_h, low_w, span_w, DRAW_MODES.index(draws), permute, mixup_alpha, cutmix_alpha,
            mix_prob, switch_prob, box_range is not None, correct_lam, keep, add)
        return outputs
    from fastmix.kernels.triton import mix as triton_mix

    triton_mix.mix_params(seed, labels, kind, classes if labels is not None else 0, keep, add, outputs,
                          draws=DRAW_MODES.index(draws), permute=permute, mixup_alpha=mixup_alpha,
                          cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob, height=height,
                          width=width, box_range=None if box_range is None else (low_h, span_h, low_w, span_w),
                          correct_lam=correct_lam)
    return outputs


@torch.library.custom_op("fastmix::mix_params", mutates_args=())
def mix_params(seed: torch.Tensor, labels: torch.Tensor | None, classes: int, smoothing: float, multi_label: bool,
               batch: int, height: int, width: int, draws: str, permute: bool, mixup_alpha: float,
               cutmix_alpha: float, mix_prob: float, switch_prob: float, box_range: list[int] | None,
               correct_lam: bool, weight_dtype: torch.dtype, backend: str = "triton"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                          torch.Tensor]:
    """One call's mix parameters and mixed labels from the int64 ``seed`` (fastmix._random.draw_seed), in one
    launch (fastmix/kernels/triton/mix.py ``_mix_params_kernel`` on "triton" and "cuda", its C++ twin
    csrc/mix_params_cpu.cpp on "cpu": the same draws for the same seed), drawn as ``fastmix.api.mix.sample``
    describes (``Sampling``'s fields; ``box_range`` from ``fastmix.api.mix.box_range``).

    Returns ``(lam float32 (B,), weight (B,) in weight_dtype, boxes int32 (B, 4), partner int64 (B,), inverse int64
    (B,) (partner's inverse permutation), cutmix bool (B,), mixed labels (B, K))``: the labels (int class indices
    (B,) in [0, classes), or dense (B, K) of any dtype) smoothed by ``y (1 - s) + s / K`` (``s / 2`` with
    ``multi_label``) and mixed, float32 (float64 for float64 labels); (B, 0) without labels. Class indices are
    checked by a device assert compiled into the Triton kernel, by a ValueError in C++. Arguments are the library's
    own, unchecked.
    """
    return _mix_params(seed, labels, classes, smoothing, multi_label, batch, height, width, draws, permute,
                       mixup_alpha, cutmix_alpha, mix_prob, switch_prob, box_range, correct_lam, weight_dtype,
                       backend)


# The eager path of mix_params: its implementation without the custom op's dispatch (the op under torch.compile).
mix_params_call = _fast_path.EagerOp(mix_params, _mix_params)


def _mix_params_outputs(seed, labels, classes, batch, weight_dtype):
    device = seed.device
    label_dtype = torch.float64 if labels is not None and labels.dtype == torch.float64 else torch.float32
    return (torch.empty(batch, dtype=torch.float32, device=device),
            torch.empty(batch, dtype=weight_dtype, device=device),
            torch.empty((batch, 4), dtype=torch.int32, device=device),
            torch.empty(batch, dtype=torch.int64, device=device), torch.empty(batch, dtype=torch.int64, device=device),
            torch.empty(batch, dtype=torch.bool, device=device),
            torch.empty((batch, classes if labels is not None else 0), dtype=label_dtype, device=device))


@mix_params.register_fake
def _(seed, labels, classes, smoothing, multi_label, batch, height, width, draws, permute, mixup_alpha, cutmix_alpha,
      mix_prob, switch_prob, box_range, correct_lam, weight_dtype, backend="triton"):
    return _mix_params_outputs(seed, labels, classes, batch, weight_dtype)
