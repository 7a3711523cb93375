"""LaMix benchmark cases: the fused target-and-loss (forward + backward) vs the reference vs the paper's formula."""

from __future__ import annotations

import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case


def paper_loss(logits, target_logits, y, lam, partner, beta):
    """Eq. 2, 9-11 as written, with autograd: the (B, K) target materialised, then soft-label cross-entropy."""
    labels = torch.nn.functional.one_hot(y, logits.size(1)).float()
    local = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
    target = beta * local + (1 - beta) * torch.softmax(torch.sigmoid(target_logits.float()), dim=1)
    return torch.nn.functional.cross_entropy(logits.float(), target)


def providers_for(backends, logits, target_logits, y, lam, partner) -> dict:
    """Forward and backward to both logits per provider, without accumulating into ``.grad``."""
    def full_step(loss_fn):
        return lambda: torch.autograd.grad(loss_fn(), (logits, target_logits))

    providers = {}
    for backend in backends:
        name = "reference" if backend == "reference" else f"fastmix-{backend}"
        providers[name] = full_step(
            lambda b=backend: fastmix.lamix_loss(logits, target_logits, y, lam, partner, backend=b))
    providers["paper"] = full_step(lambda: paper_loss(logits, target_logits, y, lam, partner, 0.5))
    return providers


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    # The Triton interpreter's timings on CPU mean nothing, so CPU runs time the reference and the paper's formula.
    backends = [b for b in ("triton", "reference")
                if device.type == "cuda" or b == "reference"
                if not _backend.unavailable_reason(b, device.type)]
    out = []
    for batch in (128, 1024):
        for classes in (100, 1000):
            for dtype in dtypes:
                generator = torch.Generator(device=device).manual_seed(0)
                logits = torch.randn(batch, classes, device=device, dtype=dtype, generator=generator).requires_grad_()
                target_logits = torch.randn(batch, classes, device=device, dtype=dtype,
                                            generator=generator).requires_grad_()
                y = torch.randint(0, classes, (batch,), device=device, generator=generator)
                lam = torch.rand(batch, device=device, generator=generator)
                partner = torch.randperm(batch, device=device, generator=generator)
                providers = providers_for(backends, logits, target_logits, y, lam, partner)
                # Must move: read both logits (B, K), write both gradients, read the labels' rows.
                bytes_moved = 4 * batch * classes * logits.element_size() + batch * classes * 4
                source = torch.empty(bytes_moved // 2, dtype=torch.uint8, device=device)
                copy_target = torch.empty_like(source)
                out.append(Case("lamix_loss", (batch, classes), dtype, providers,
                                floor=lambda d=copy_target, s=source: d.copy_(s), bytes_moved=bytes_moved,
                                extra={"mode": "forward+backward"}))
    return out
