"""LaMix cases: ``lamix_inputs`` (eq. 4) and the fused target-and-loss (forward + backward) vs the reference vs
the paper's formula."""

from __future__ import annotations

import torch

import fastmix
from fastmix.bench import Case, backend_providers, bytes_floor, copy_floor
from fastmix.benchcases import gradient_step, image_batch
from fastmix.ops import lamix as lamix_ops
from fastmix.ops.mix import BACKENDS as MIX_BACKENDS

CLASSES = 1000


def paper_inputs(x: torch.Tensor, generator: torch.Generator):
    """Eq. 4 as written: a random permutation, then 0.5 x + 0.5 x[perm]."""
    perm = torch.randperm(x.size(0), generator=generator, device=x.device)
    return 0.5 * x + 0.5 * x[perm], perm


def paper_loss(logits, target_logits, y, lam, partner, beta):
    """Eq. 2, 9-11 as written, with autograd: the (B, K) target materialised, then soft-label cross-entropy."""
    labels = torch.nn.functional.one_hot(y, logits.size(1)).float()
    local = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
    target = beta * local + (1 - beta) * torch.softmax(torch.sigmoid(target_logits.float()), dim=1)
    return torch.nn.functional.cross_entropy(logits.float(), target)


def batch_cases(batch: int, device: torch.device, image_side: int) -> list[Case]:
    generator = torch.Generator(device=device).manual_seed(0)
    x = image_batch(batch, image_side, device)
    providers = backend_providers(lambda b: fastmix.lamix_inputs(x, generator=generator, backend=b), device,
                                  MIX_BACKENDS)
    providers["paper"] = lambda: paper_inputs(x, generator)
    inputs = Case("lamix_inputs", tuple(x.shape), x.dtype, providers, copy_floor(x),
                  {"paper": "eq. 4 as written: randperm, then 0.5 x + 0.5 x[perm]"})

    logits = torch.randn(batch, CLASSES, device=device, generator=generator).requires_grad_()
    target_logits = torch.randn(batch, CLASSES, device=device, generator=generator).requires_grad_()
    y = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    lam = torch.rand(batch, device=device, generator=generator)
    partner = torch.randperm(batch, device=device, generator=generator)
    providers = backend_providers(
        lambda b: torch.autograd.grad(fastmix.lamix_loss(logits, target_logits, y, lam, partner, backend=b),
                                      (logits, target_logits)), device, lamix_ops.BACKENDS)
    providers["paper"] = gradient_step(lambda: paper_loss(logits, target_logits, y, lam, partner, 0.5),
                                       logits, target_logits)
    # Must move: read both logits (B, K), write both gradients, read the labels' rows.
    bytes_moved = 4 * logits.numel() * logits.element_size() + logits.numel() * 4
    loss = Case("lamix_loss fwd+bwd", (batch, CLASSES), logits.dtype, providers, bytes_floor(bytes_moved, device),
                {"paper": "eq. 2, 9-11 as written with autograd: the (B, K) target, then soft-label cross-entropy"},
                extra={"mode": "forward+backward"})
    return [inputs, loss]


def cases(device: torch.device, s) -> list[Case]:
    return [case for batch in s.batches for case in batch_cases(batch, device, s.image_side)]
