"""BalanceMix loss cases (eq. 10): fastmix per backend vs the reference vs the loss written plainly, forward +
backward, at MS-COCO's 80 labels."""

from __future__ import annotations

import torch

import fastmix
from fastmix.bench import Case, backend_providers, bytes_floor
from fastmix.benchcases import gradient_step
from fastmix.ops import balancemix as balancemix_ops

CLASSES = 80


def paper_loss(logits, targets, weights):
    """Eq. 10 written plainly with autograd: per-label weighted BCE, summed over labels, averaged over the batch."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (weights * bce).sum(1).mean()


def batch_case(batch: int, device: torch.device) -> Case:
    generator = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(batch, CLASSES, device=device, generator=generator).requires_grad_()
    targets = (torch.rand(batch, CLASSES, device=device, generator=generator) < 0.05).float()
    weights = torch.rand(batch, CLASSES, device=device, generator=generator)
    providers = backend_providers(
        lambda b: torch.autograd.grad(fastmix.balancemix_loss(logits, targets, weights, backend=b), logits),
        device, balancemix_ops.BACKENDS)
    providers["paper"] = gradient_step(lambda: paper_loss(logits, targets, weights), logits)
    # forward reads logits, targets, weights; backward reads them again and writes the gradient
    bytes_moved = 7 * logits.numel() * logits.element_size()
    return Case("balancemix_loss fwd+bwd", (batch, CLASSES), logits.dtype, providers, bytes_floor(bytes_moved, device),
                {"paper": "eq. 10 written plainly: binary_cross_entropy_with_logits, weighted, summed"},
                extra={"mode": "forward+backward"})


def cases(device: torch.device, s) -> list[Case]:
    return [batch_case(batch, device) for batch in s.batches]
