"""Per-sample Mixup and CutMix in plain PyTorch: the ground truth of the pair-mix kernels.

One formula covers both (CutMix: LUMix paper, eq. 1; Mixup: the same with an empty box). For sample ``j`` and
element ``e`` at spatial position ``(h, w)``::

    out[j, e] = W(self_j, h, w) x[j, e] + sum_{k in segment j} W(seg_k, h, w) x[sources[k], e]
    W(p, h, w) = p.weight_in if (h, w) lies in p.box else p.weight_out

``segment j`` is ``offsets[j] <= k < offsets[j + 1]``. The forward mix has one term per segment (the partner);
the gradient of a mix is again such a sum over the samples that took j as partner, so one formula serves both.
A zero weight skips its input (a NaN there does not leak into the output).
"""

from __future__ import annotations

import torch

from fastmix._dtypes import compute_dtype


def store(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast accumulated values to the storage dtype; uint8 rounds half to even and saturates to [0, 255]."""
    if dtype == torch.uint8:
        return values.clamp(0, 255).round().to(torch.uint8)
    return values.to(dtype)


def weight_map(boxes: torch.Tensor, weights: torch.Tensor, x: torch.Tensor, height_dim: int | None,
               width_dim: int | None) -> torch.Tensor:
    """Per-row, per-position weights broadcastable against ``x``: ``weights[:, 0]`` inside ``boxes``, else ``[:, 1]``.

    ``boxes`` (N, 4) int holds ``(y0, y1, x0, x1)``, half-open. Without spatial dims every element is outside.
    """
    acc = compute_dtype(x.dtype)
    weight_in = weights[:, 0].to(acc)
    weight_out = weights[:, 1].to(acc)
    shape = [weights.size(0)] + [1] * (x.dim() - 1)
    if height_dim is None:
        return weight_out.view(shape)
    rows = torch.arange(x.size(height_dim), device=x.device)
    cols = torch.arange(x.size(width_dim), device=x.device)
    inside_h = (rows[None, :] >= boxes[:, 0:1]) & (rows[None, :] < boxes[:, 1:2])
    inside_w = (cols[None, :] >= boxes[:, 2:3]) & (cols[None, :] < boxes[:, 3:4])
    h_shape = list(shape)
    h_shape[height_dim] = x.size(height_dim)
    w_shape = list(shape)
    w_shape[width_dim] = x.size(width_dim)
    inside = inside_h.view(h_shape) & inside_w.view(w_shape)
    return torch.where(inside, weight_in.view(shape), weight_out.view(shape))


def weighted(x_rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    values = x_rows.to(weights.dtype)
    return torch.where(weights != 0, weights * values, torch.zeros((), dtype=weights.dtype, device=x_rows.device))


def segment_rows(offsets: torch.Tensor, terms: int) -> torch.Tensor:
    """The segment (sample) each of the ``terms`` terms belongs to: ``offsets[j] <= k < offsets[j + 1]``."""
    positions = torch.arange(terms, device=offsets.device, dtype=offsets.dtype)
    return torch.searchsorted(offsets, positions, right=True) - 1


def pair_mix(x: torch.Tensor, self_boxes: torch.Tensor, self_weights: torch.Tensor, seg_boxes: torch.Tensor,
             seg_weights: torch.Tensor, sources: torch.Tensor, offsets: torch.Tensor, height_dim: int | None,
             width_dim: int | None) -> torch.Tensor:
    """The module formula for any batch-first ``x``; output in x's dtype (accumulated in fp32, fp64 for fp64)."""
    acc = weighted(x, weight_map(self_boxes, self_weights, x, height_dim, width_dim))
    rows = segment_rows(offsets, sources.numel())
    terms = weighted(x[sources], weight_map(seg_boxes, seg_weights, x, height_dim, width_dim))
    return store(acc.index_add(0, rows, terms), x.dtype)


def mixup_pairs(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``out[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]]`` in fp32 (fp64 for fp64), stored in x's dtype."""
    acc = compute_dtype(x.dtype)
    shape = [-1] + [1] * (x.dim() - 1)
    lam = lam.to(acc).view(shape)
    return store(weighted(x, lam) + weighted(x[partner], 1 - lam), x.dtype)


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) bool: True inside each sample's half-open box ``(y0, y1, x0, x1)``."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    inside_h = (rows[None, :] >= boxes[:, 0:1]) & (rows[None, :] < boxes[:, 1:2])
    inside_w = (cols[None, :] >= boxes[:, 2:3]) & (cols[None, :] < boxes[:, 3:4])
    return inside_h[:, :, None] & inside_w[:, None, :]


def _box_mask_like(x: torch.Tensor, boxes: torch.Tensor, height_dim: int, width_dim: int) -> torch.Tensor:
    """``box_mask`` broadcastable against x: (B, 1, .., H, .., W, ..)."""
    view = [x.size(0)] + [1] * (x.dim() - 1)
    view[height_dim] = x.size(height_dim)
    view[width_dim] = x.size(width_dim)
    mask = box_mask(boxes, x.size(height_dim), x.size(width_dim))
    return (mask if height_dim < width_dim else mask.transpose(1, 2)).reshape(view)


def cutmix_pairs(x: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor, height_dim: int,
                 width_dim: int) -> torch.Tensor:
    """CutMix (LUMix paper, eq. 1): sample i keeps its pixels outside ``boxes[i]``, takes ``x[partner[i]]`` inside."""
    return torch.where(_box_mask_like(x, boxes, height_dim, width_dim), x[partner], x)


def mix_pairs(x: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor, partner: torch.Tensor,
              height_dim: int | None, width_dim: int | None) -> torch.Tensor:
    """Every mode at once: ``x[partner[i]]`` inside ``boxes[i]`` (CutMix), ``mixup_pairs`` with ``weight`` outside."""
    mixed = mixup_pairs(x, weight, partner)
    if height_dim is None:
        return mixed
    return torch.where(_box_mask_like(x, boxes, height_dim, width_dim), x[partner], mixed)
