"""Per-sample Mixup/CutMix Triton kernel (LUMix paper, eq. 1; formula in fastmix/reference/mix.py).

One program per (sample, block of columns): each output element reads its own sample and each source at most
once, skipping a read whose weight is zero (CutMix reads exactly one input per element); no mask tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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
def _pair_mix_kernel(x_ptr, x_row_stride, out_ptr, out_row_stride, features, self_box_ptr, self_weights_ptr,
                     seg_box_ptr, seg_weights_ptr, sources_ptr, offsets_ptr, height, width, h_div, w_div,
                     HAS_BOX: tl.constexpr, IS_UINT8: tl.constexpr, BLOCK_F: tl.constexpr):
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
    ones = tl.full([BLOCK_F], 1.0, dtype=self_weights_ptr.dtype.element_ty)
    weight = _box_weight(self_box_ptr, self_weights_ptr, row, h, w, ones, HAS_BOX)
    values = tl.load(x_ptr + row * x_row_stride + cols, mask=in_row & (weight != 0), other=0)
    acc = weight * values.to(weight.dtype)
    start = tl.load(offsets_ptr + row)
    end = tl.load(offsets_ptr + row + 1)
    for k in range(start, end):
        source = tl.load(sources_ptr + k)
        weight = _box_weight(seg_box_ptr, seg_weights_ptr, k, h, w, ones, HAS_BOX)
        values = tl.load(x_ptr + source * x_row_stride + cols, mask=in_row & (weight != 0), other=0)
        acc += weight * values.to(weight.dtype)
    if IS_UINT8:  # round half to even, saturate
        acc = tl.minimum(tl.maximum(acc, 0.0), 255.0)
        rounded = tl.floor(acc + 0.5)
        odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) == 1.0
        acc = tl.where(((rounded - acc) == 0.5) & odd, rounded - 1.0, rounded)
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
