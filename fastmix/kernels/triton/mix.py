"""Per-sample Mixup/CutMix Triton kernels (LUMix paper, eq. 1; formulas in fastmix/reference/mix.py and
fastmix/ops/mix.py): the general pair mix, the pair mix and its adjoint, the adjoint's reader lists, and the
parameter kernel that draws a call's parameters and mixed labels.

The mix kernels run one program per (sample, block of columns): each output element reads its own sample and each
source at most once, skipping a read whose weight is zero (CutMix reads exactly one input per element); no mask
tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastmix.kernels.triton import random as sampler
from fastmix.kernels.triton.checks import DEVICE_ASSERTS
from fastmix.kernels.triton.scalars import float64_bits, float64_from_bits

@triton.jit
def _round_to_uint8(acc):
    """``acc`` saturated to [0, 255] and rounded half to even (the value a uint8 output stores)."""
    acc = tl.minimum(tl.maximum(acc, 0.0), 255.0)
    rounded = tl.floor(acc + 0.5)
    odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) == 1.0
    return tl.where(((rounded - acc) == 0.5) & odd, rounded - 1.0, rounded)


@triton.jit
def _box_weight(box_ptr, weights_ptr, index, h, w, ones, HAS_BOX: tl.constexpr):
    """Per-column weight of term ``index``: weights[index, 0] inside its box, weights[index, 1] outside."""
    weight_out = tl.load(weights_ptr + 2 * index + 1)
    if HAS_BOX:
        weight_in = tl.load(weights_ptr + 2 * index)
        y0 = tl.load(box_ptr + 4 * index)
        y1 = tl.load(box_ptr + 4 * index + 1)
        x0 = tl.load(box_ptr + 4 * index + 2)
        x1 = tl.load(box_ptr + 4 * index + 3)
        inside = (h >= y0) & (h < y1) & (w >= x0) & (w < x1)
        return tl.where(inside, weight_in * ones, weight_out * ones)
    return weight_out * ones


@triton.jit
def _row_tile(features, height, width, h_div, w_div, HAS_BOX: tl.constexpr, BLOCK_F: tl.constexpr):
    """This program's tile of a (B, F) row-major launch: ``(row, cols, in_row, h, w)``, with each column's image row
    ``h`` and column ``w`` (``f // div % size``) where there is a box."""
    tiles = tl.cdiv(features, BLOCK_F)
    row = (tl.program_id(0) // tiles).to(tl.int64)
    cols = (tl.program_id(0) % tiles) * BLOCK_F + tl.arange(0, BLOCK_F)
    in_row = cols < features
    if HAS_BOX:
        h = (cols // h_div) % height
        w = (cols // w_div) % width
    else:  # unused: every element is outside the (absent) box
        h = cols
        w = cols
    return row, cols, in_row, h, w


@triton.jit
def _weighted_row(x_ptr, x_row_stride, source, cols, in_row, weight):
    """``weight * x[source]`` over the tile's columns, in the weight's dtype; columns of weight 0 are not read."""
    # tl.where, not &: a scalar weight (no box) makes the interpreter's & of a bool scalar and block fail
    values = tl.load(x_ptr + source * x_row_stride + cols, mask=tl.where(weight != 0, in_row, False), other=0)
    return weight * values.to(weight.dtype)


@triton.jit
def _pair_mix_kernel(x_ptr, x_row_stride, out_ptr, out_row_stride, features, self_box_ptr, self_weights_ptr,
                     seg_box_ptr, seg_weights_ptr, sources_ptr, offsets_ptr, height, width, h_div, w_div,
                     HAS_BOX: tl.constexpr, IS_UINT8: tl.constexpr, BLOCK_F: tl.constexpr):
    row, cols, in_row, h, w = _row_tile(features, height, width, h_div, w_div, HAS_BOX, BLOCK_F)
    ones = tl.full([BLOCK_F], 1.0, dtype=self_weights_ptr.dtype.element_ty)
    acc = _weighted_row(x_ptr, x_row_stride, row, cols, in_row,
                        _box_weight(self_box_ptr, self_weights_ptr, row, h, w, ones, HAS_BOX))
    start = tl.load(offsets_ptr + row)
    end = tl.load(offsets_ptr + row + 1)
    for k in range(start, end):
        source = tl.load(sources_ptr + k)
        acc += _weighted_row(x_ptr, x_row_stride, source, cols, in_row,
                             _box_weight(seg_box_ptr, seg_weights_ptr, k, h, w, ones, HAS_BOX))
    if IS_UINT8:
        acc = _round_to_uint8(acc)
    tl.store(out_ptr + row * out_row_stride + cols, acc.to(out_ptr.dtype.element_ty), mask=in_row)


def pair_mix(x_rows: torch.Tensor, out_rows: torch.Tensor, self_boxes: torch.Tensor, self_weights: torch.Tensor,
             seg_boxes: torch.Tensor, seg_weights: torch.Tensor, sources: torch.Tensor, offsets: torch.Tensor,
             height: int, width: int, h_div: int, w_div: int, has_box: bool) -> None:
    """Writes the pair mix of ``x_rows`` into ``out_rows``; both (B, F) with unit column stride."""
    batch, features = x_rows.shape
    block_f = 1024
    grid = (batch * triton.cdiv(features, block_f),)
    _pair_mix_kernel[grid](x_rows, x_rows.stride(0), out_rows, out_rows.stride(0), features, self_boxes,
                           self_weights, seg_boxes, seg_weights, sources, offsets, height, width, h_div, w_div,
                           HAS_BOX=has_box, IS_UINT8=x_rows.dtype == torch.uint8, BLOCK_F=block_f, num_warps=4)


@triton.jit
def _own_weight(weight_ptr, box_ptr, index, h, w, HAS_BOX: tl.constexpr):
    """``W_index``: 0 inside sample ``index``'s box, ``weight[index]`` outside; per column with a box, else one
    scalar."""
    weight = tl.load(weight_ptr + index)
    if HAS_BOX:
        y0 = tl.load(box_ptr + 4 * index)
        y1 = tl.load(box_ptr + 4 * index + 1)
        x0 = tl.load(box_ptr + 4 * index + 2)
        x1 = tl.load(box_ptr + 4 * index + 3)
        weight = tl.where((h >= y0) & (h < y1) & (w >= x0) & (w < x1), 0.0, weight)
    return weight


@triton.jit
def _mix_pairs_kernel(x_ptr, x_row_stride, out_ptr, out_row_stride, features, weight_ptr, box_ptr, sources_ptr,
                      offsets_ptr, height, width, h_div, w_div, HAS_BOX: tl.constexpr, ADJOINT: tl.constexpr,
                      ONE_TERM: tl.constexpr, IS_UINT8: tl.constexpr, BLOCK_F: tl.constexpr):
    """``out[j] = W_j x[j] + sum_k (1 - W_t(k)) x[s_k]`` over the terms k of row j: one term ``s = sources[j]``
    (``ONE_TERM``) or ``sources[offsets[j]:offsets[j + 1]]``; ``t = j`` for the mix, ``t = s`` for its adjoint."""
    row, cols, in_row, h, w = _row_tile(features, height, width, h_div, w_div, HAS_BOX, BLOCK_F)
    acc = _weighted_row(x_ptr, x_row_stride, row, cols, in_row, _own_weight(weight_ptr, box_ptr, row, h, w, HAS_BOX))
    if ONE_TERM:
        start = row
        end = row + 1
    else:
        start = tl.load(offsets_ptr + row)
        end = tl.load(offsets_ptr + row + 1)
    for k in range(start, end):
        source = tl.load(sources_ptr + k)
        if ADJOINT:
            weight = 1.0 - _own_weight(weight_ptr, box_ptr, source, h, w, HAS_BOX)
        else:
            weight = 1.0 - _own_weight(weight_ptr, box_ptr, row, h, w, HAS_BOX)
        acc += _weighted_row(x_ptr, x_row_stride, source, cols, in_row, weight)
    if IS_UINT8:
        acc = _round_to_uint8(acc)
    tl.store(out_ptr + row * out_row_stride + cols, acc.to(out_ptr.dtype.element_ty), mask=in_row)


def mix_pairs(x_rows: torch.Tensor, out_rows: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor,
              sources: torch.Tensor, offsets: torch.Tensor | None, height: int, width: int, h_div: int, w_div: int,
              has_box: bool, adjoint: bool) -> None:
    """The pair mix (``adjoint=False``, ``sources`` the partners) or its adjoint (``sources`` the inverse
    permutation, or with ``offsets`` the reader lists of ``readers``) of ``x_rows`` into ``out_rows``; both (B, F)
    with unit column stride."""
    batch, features = x_rows.shape
    block_f = 1024
    grid = (batch * triton.cdiv(features, block_f),)
    # No fused multiply-adds: each product rounded apart, as the reference computes them (uint8 is bit-exact).
    # maxnreg: without it ptxas held the fp16 adjoint with the readers' lists to 32 registers on sm_80 and spilled
    # 8 B (48 registers with it); 64 is too few for fp64 with a box (80).
    _mix_pairs_kernel[grid](x_rows, x_rows.stride(0), out_rows, out_rows.stride(0), features, weight, boxes, sources,
                            sources if offsets is None else offsets, height, width, h_div, w_div, HAS_BOX=has_box,
                            ADJOINT=adjoint, ONE_TERM=offsets is None, IS_UINT8=x_rows.dtype == torch.uint8,
                            BLOCK_F=block_f, num_warps=4, enable_fp_fusion=False, maxnreg=128)


@triton.jit
def _readers_kernel(partner_ptr, sources_ptr, offsets_ptr, batch, BLOCK: tl.constexpr):
    """Row j's readers ``{i : partner[i] = j}`` in increasing i, as lists: ``sources[offsets[j]:offsets[j + 1]]``
    (a stable counting sort of i by partner[i], by comparisons over blocks of the batch)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    target = tl.load(partner_ptr + rows, mask=rows < batch, other=0)
    position = rows * 0
    starts = rows * 0
    for first in range(0, batch, BLOCK):
        others = first + tl.arange(0, BLOCK)
        other_target = tl.load(partner_ptr + others, mask=others < batch, other=0)
        valid = (others < batch)[None, :]
        earlier = (other_target[None, :] < target[:, None]) | ((other_target[None, :] == target[:, None])
                                                               & (others[None, :] < rows[:, None]))
        position += tl.sum((valid & earlier).to(tl.int64), axis=1)
        starts += tl.sum((valid & (other_target[None, :] < rows[:, None])).to(tl.int64), axis=1)
    tl.store(sources_ptr + position, rows, mask=rows < batch)
    tl.store(offsets_ptr + rows, starts, mask=rows <= batch)


def readers(partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sources, offsets)`` of ``_readers_kernel`` for an int64 partner map (any map into [0, B)); one launch."""
    batch = partner.numel()
    sources = torch.empty(batch, dtype=torch.int64, device=partner.device)
    offsets = torch.empty(batch + 1, dtype=torch.int64, device=partner.device)
    block = 32  # a (32, 32) int64 comparison tile: 8 per thread
    _readers_kernel[(triton.cdiv(batch + 1, block),)](partner, sources, offsets, batch, BLOCK=block, num_warps=4)
    return sources, offsets


# The parameter kernel's streams (fastmix/kernels/triton/random.py): one per quantity it draws.
_GATE_STREAM: tl.constexpr = tl.constexpr(0)  # the gate (prob) and the mixer switch (switch_prob)
_BOX_STREAM: tl.constexpr = tl.constexpr(1)
_CUTMIX_STREAM: tl.constexpr = tl.constexpr(2)  # CutMix's Beta draw
_MIXUP_STREAM: tl.constexpr = tl.constexpr(3)  # Mixup's Beta draw
_PERM_STREAM: tl.constexpr = tl.constexpr(4)


@triton.jit
def _mix_params_kernel(seed_ptr, lam_ptr, weight_ptr, box_ptr, partner_ptr, inverse_ptr, cutmix_ptr, labels_ptr,
                       label_row_stride, label_col_stride, mixed_labels_ptr, classes, batch, height, width, low_h,
                       span_h, low_w, span_w, mixup_alpha_bits, cutmix_alpha_bits, mix_prob_bits, switch_prob_bits,
                       keep_bits, add_bits, DRAWS: tl.constexpr, PERMUTE: tl.constexpr, MIXUP: tl.constexpr,
                       CUTMIX: tl.constexpr, GATE: tl.constexpr, MINMAX: tl.constexpr, CORRECT_LAM: tl.constexpr,
                       LABELS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
    """One block of samples: draws, boxes, lam, weight, partner (and its inverse) and the mixed labels."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    valid = rows < batch
    seed = tl.load(seed_ptr)
    if DRAWS == 0:
        draw = rows * 0
    elif DRAWS == 1:
        draw = tl.minimum(rows, batch - 1 - rows)
    else:
        draw = rows
    gate, switch = sampler.uniform_pair(seed, draw, 0, _GATE_STREAM, 0)
    mixed = valid
    if GATE:
        mixed = mixed & (gate < float64_from_bits(mix_prob_bits))
    if DRAWS == 3:
        mixed = mixed & (rows < batch // 2)
    lam = rows.to(tl.float64) * 0.0 + 1.0
    if MIXUP:
        lam = sampler.symmetric_beta(seed, float64_from_bits(mixup_alpha_bits), draw, _MIXUP_STREAM, 0)
    cutmix = rows < 0
    y0 = rows.to(tl.float64) * 0.0
    y1 = y0
    x0 = y0
    x1 = y0
    if CUTMIX:
        if MIXUP:
            cutmix = mixed & (switch < float64_from_bits(switch_prob_bits))
        else:
            cutmix = mixed
        side_h = height.to(tl.float64)
        side_w = width.to(tl.float64)
        u_h, u_w = sampler.uniform_pair(seed, draw, 0, _BOX_STREAM, 0)
        if MINMAX:  # timm rand_bbox_minmax: sides uniform integers, the origin uniform over every fitting position
            u_y, u_x = sampler.uniform_pair(seed, draw, 1, _BOX_STREAM, 0)
            cut_h = tl.floor(u_h * span_h) + low_h
            cut_w = tl.floor(u_w * span_w) + low_w
            y0 = tl.floor(u_y * (side_h - cut_h + 1.0))
            x0 = tl.floor(u_x * (side_w - cut_w + 1.0))
            y1 = y0 + cut_h
            x1 = x0 + cut_w
        else:  # timm rand_bbox: sides int(S sqrt(1 - lam)), centre uniform over the pixels, clipped
            lam_cut = sampler.symmetric_beta(seed, float64_from_bits(cutmix_alpha_bits), draw, _CUTMIX_STREAM, 0)
            lam = tl.where(cutmix, lam_cut, lam)
            ratio = tl.sqrt(1.0 - lam_cut)  # fp64: sqrt.rn.f64, correctly rounded as torch.sqrt
            cut_h = tl.floor(side_h * ratio)
            cut_w = tl.floor(side_w * ratio)
            start_y = tl.floor(u_h * side_h) - tl.floor(cut_h * 0.5)  # centre - cut // 2
            start_x = tl.floor(u_w * side_w) - tl.floor(cut_w * 0.5)
            y0 = tl.maximum(start_y, 0.0)
            x0 = tl.maximum(start_x, 0.0)
            y1 = tl.minimum(start_y + cut_h, side_h)  # centre + (cut + 1) // 2
            x1 = tl.minimum(start_x + cut_w, side_w)
        y0 = tl.where(cutmix, y0, 0.0)
        y1 = tl.where(cutmix, y1, 0.0)
        x0 = tl.where(cutmix, x0, 0.0)
        x1 = tl.where(cutmix, x1, 0.0)
        if CORRECT_LAM:  # CutMix eq. 2 with the clipped box: the kept fraction
            lam = tl.where(cutmix, 1.0 - (y1 - y0) * (x1 - x0) / (side_h * side_w), lam)
    lam = tl.where(mixed, lam, 1.0).to(tl.float32)
    tl.store(lam_ptr + rows, lam, mask=valid)
    tl.store(weight_ptr + rows, tl.where(cutmix, 1.0, lam).to(weight_ptr.dtype.element_ty), mask=valid)
    tl.store(cutmix_ptr + rows, cutmix, mask=valid)
    tl.store(box_ptr + 4 * rows, y0.to(tl.int32), mask=valid)
    tl.store(box_ptr + 4 * rows + 1, y1.to(tl.int32), mask=valid)
    tl.store(box_ptr + 4 * rows + 2, x0.to(tl.int32), mask=valid)
    tl.store(box_ptr + 4 * rows + 3, x1.to(tl.int32), mask=valid)
    if PERMUTE:
        partner = sampler.permutation_rank(seed, rows, batch, _PERM_STREAM, 0, BLOCK)
    else:
        partner = batch - 1 - rows
    tl.store(partner_ptr + rows, partner, mask=valid)
    tl.store(inverse_ptr + partner, rows, mask=valid)
    if LABELS != 0:
        label_type = mixed_labels_ptr.dtype.element_ty
        keep = float64_from_bits(keep_bits).to(label_type)
        add = float64_from_bits(add_bits).to(label_type)
        weight = lam.to(label_type)[:, None]
        if LABELS == 1:
            own_class = tl.load(labels_ptr + rows * label_row_stride, mask=valid, other=0).to(tl.int64)
            other_class = tl.load(labels_ptr + partner * label_row_stride, mask=valid, other=0).to(tl.int64)
            tl.device_assert(~valid | ((own_class >= 0) & (own_class < classes)),
                             "y holds class indices outside [0, num_classes)")
        for first in range(0, classes, BLOCK_K):
            cols = first + tl.arange(0, BLOCK_K)
            inside = valid[:, None] & (cols < classes)[None, :]
            if LABELS == 1:
                own = (cols[None, :] == own_class[:, None]).to(label_type)
                other = (cols[None, :] == other_class[:, None]).to(label_type)
            else:
                own = tl.load(labels_ptr + rows[:, None] * label_row_stride + cols[None, :] * label_col_stride,
                              mask=inside, other=0).to(label_type)
                other = tl.load(labels_ptr + partner[:, None] * label_row_stride + cols[None, :] * label_col_stride,
                                mask=inside, other=0).to(label_type)
            own = own * keep + add
            other = other * keep + add
            tl.store(mixed_labels_ptr + rows[:, None] * classes + cols[None, :], other + weight * (own - other),
                     mask=inside)


def mix_params(seed: torch.Tensor, labels: torch.Tensor | None, label_kind: int, classes: int, keep: float,
               add: float, outputs: tuple[torch.Tensor, ...], *, draws: int, permute: bool, mixup_alpha: float,
               cutmix_alpha: float, mix_prob: float, switch_prob: float, height: int, width: int,
               box_range: tuple[int, int, int, int] | None, correct_lam: bool) -> None:
    """Fills ``outputs = (lam, weight, boxes, partner, inverse, cutmix, mixed_labels)`` (see ``_mix_params_kernel``
    and fastmix.ops.mix.mix_params); ``draws`` and ``label_kind`` are codes (fastmix.ops.mix ``DRAW_MODES``,
    ``LABEL_KINDS``), ``box_range = (low_h, span_h, low_w, span_w)`` for minmax boxes. One launch, one program per
    32 samples."""
    lam = outputs[0]
    batch = lam.numel()
    block = 32  # (32, 32) permutation tiles and (32, 64) label tiles: no spills with both Beta rejection loops
    label_strides = (0, 0) if labels is None else (labels.stride(0), labels.stride(-1))
    low_h, span_h, low_w, span_w = box_range or (0, 1, 0, 1)
    _mix_params_kernel[(triton.cdiv(batch, block),)](
        seed, *outputs[:6], lam if labels is None else labels, *label_strides, outputs[6], classes, batch, height,
        width, low_h, span_h, low_w, span_w, float64_bits(mixup_alpha), float64_bits(cutmix_alpha),
        float64_bits(mix_prob), float64_bits(switch_prob), float64_bits(keep), float64_bits(add),
        DRAWS=draws, PERMUTE=permute, MIXUP=mixup_alpha > 0, CUTMIX=cutmix_alpha > 0,
        GATE=mix_prob < 1, MINMAX=box_range is not None, CORRECT_LAM=correct_lam or box_range is not None,
        LABELS=label_kind, BLOCK=block, BLOCK_K=64, num_warps=4, **DEVICE_ASSERTS)
