"""Flow-Mixup's Mixing module in plain PyTorch autograd (Flow-Mixup paper, section III.C, eq. 2-3).

The flow dimension is folded into the batch: a tensor of flow size F holds F blocks of B samples, block after
block along dim 0. Mixing shuffles the batch index inside every block with the same permutation and the same
``p``, as a shuffle along the batch dim of a (F, B, ...) tensor would.
"""

from __future__ import annotations

import torch


def mix_blocks(z: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, flow_size: int) -> torch.Tensor:
    """``z_mixed[f, i] = p_i z[f, i] + (1 - p_i) z[f, perm_i]`` for every flow block f, in lam's precision.

    Evaluated as written (not as a lerp, which gives NaN for inf mixed with the same inf), so +-inf stays +-inf
    where the partner is finite or the same infinity, and NaN comes only from NaN or +inf meeting -inf.
    """
    blocks = z.to(lam.dtype).unflatten(0, (flow_size, perm.numel()))
    weight = lam.view(1, -1, *([1] * (z.dim() - 1)))
    return (weight * blocks + (1 - weight) * blocks[:, perm]).flatten(0, 1).to(z.dtype)


def flow_mix(z: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, flow_size: int,
             keep_original: bool) -> torch.Tensor:
    """``z' = [z, z_mixed]`` along the flow (eq. 2), whose backward is ``(grad' + grad_m) / 2`` (eq. 3).

    A hook on the mixing module's input halves the sum of both paths' gradients. With ``keep_original=False``
    this is plain mixup: ``z' = z_mixed`` and ``grad = grad_m``.
    """
    if not keep_original:
        return mix_blocks(z, lam, perm, flow_size)
    source = z.view_as(z)
    if source.requires_grad:
        source.register_hook(lambda grad: grad * 0.5)
    return torch.cat([source, mix_blocks(source, lam, perm, flow_size)])


def flow_mix_backward(grad: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, flow_size: int,
                      keep_original: bool) -> torch.Tensor:
    """The gradient to z by the chain rule of eq. 2, halved per eq. 3 when the original flow is kept."""
    rows = flow_size * perm.numel()
    mixed = grad[rows:] if keep_original else grad
    blocks = mixed.to(lam.dtype).unflatten(0, (flow_size, perm.numel()))
    weight = lam.view(1, -1, *([1] * (grad.dim() - 1)))
    to_z = (blocks * weight).index_add_(1, perm, blocks * (1 - weight)).flatten(0, 1)
    if keep_original:
        to_z = (grad[:rows].to(lam.dtype) + to_z) * 0.5
    return to_z.to(grad.dtype)
