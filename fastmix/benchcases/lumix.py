"""LUMix cases: ``lumix_lambda`` (eq. 3-5) and the fused loss (forward + backward) vs the reference vs Algorithm 1
as the paper writes it."""

from __future__ import annotations

import torch

import fastmix
from fastmix.bench import Case, backend_providers, bytes_floor
from fastmix.benchcases import gradient_step
from fastmix.ops import lumix as lumix_ops

CLASSES = 1000


def algorithm_1_loss(logits, y_a, y_b, lam, eta):
    """Algorithm 1's loss lines (LUMix paper) on one-hot rows: the (B, K) target and b materialised, then
    ``ce_loss(logits, y) + y * max(0, b - scores)`` summed over classes, averaged over the batch."""
    scores = torch.softmax(logits.float(), dim=-1)
    target = lam[:, None] * y_a + (1 - lam[:, None]) * y_b
    b = torch.zeros_like(scores)
    b[y_a > y_a.min(dim=1, keepdim=True).values] = 1
    b[y_b > y_b.min(dim=1, keepdim=True).values] = 1
    hinge = (target * torch.clamp(b - scores, min=0)).sum(1).mean()
    return torch.nn.functional.cross_entropy(logits.float(), target) + eta * hinge


def paper_lambda(lam0, logits, y_a, y_b, r1=0.4, r2=0.1, alpha=2.0):
    """Eq. 3-5 written plainly: lam_r from torch's Beta, lam_s = p_a / (p_a + p_b) of the detached softmax."""
    scores = torch.softmax(logits.detach().float(), dim=-1)
    p_a, p_b = scores.gather(1, y_a[:, None])[:, 0], scores.gather(1, y_b[:, None])[:, 0]
    lam_r = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample((logits.size(0),))
    return (1 - r1 - r2) * lam0 + r1 * lam_r.to(logits.device) + r2 * p_a / (p_a + p_b)


def batch_cases(batch: int, device: torch.device) -> list[Case]:
    generator = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(batch, CLASSES, device=device, generator=generator).requires_grad_()
    y_a = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    y_b = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    lam = torch.rand(batch, device=device, generator=generator)
    one_hot_a = torch.nn.functional.one_hot(y_a, CLASSES).float()
    one_hot_b = torch.nn.functional.one_hot(y_b, CLASSES).float()
    logit_bytes = logits.numel() * logits.element_size()
    weights = Case("lumix_lambda", (batch, CLASSES), logits.dtype, {
        "fastmix": lambda: fastmix.lumix_lambda(lam, logits, y_a, y_b, generator=generator),
        "paper": lambda: paper_lambda(lam, logits, y_a, y_b)}, bytes_floor(logit_bytes, device),
        {"paper": "eq. 3-5 written plainly in PyTorch (softmax, gather, torch.distributions.Beta)"},
        extra={"labels": "int"})
    providers = backend_providers(
        lambda b: torch.autograd.grad(fastmix.lumix_loss(logits, y_a, y_b, lam, backend=b), logits), device,
        lumix_ops.BACKENDS)
    providers["paper"] = gradient_step(lambda: algorithm_1_loss(logits, one_hot_a, one_hot_b, lam, 1.0), logits)
    # Must move: read the logits in the forward and the backward, write the gradient.
    loss = Case("lumix_loss fwd+bwd", (batch, CLASSES), logits.dtype, providers, bytes_floor(3 * logit_bytes, device),
                {"paper": "Algorithm 1's loss lines with autograd: one-hot targets and b materialised"},
                extra={"mode": "forward+backward", "labels": "int"})
    return [weights, loss]


def cases(device: torch.device, s) -> list[Case]:
    return [case for batch in s.batches for case in batch_cases(batch, device)]
