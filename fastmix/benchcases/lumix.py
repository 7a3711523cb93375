"""LUMix benchmark cases: the fused loss (forward + backward) vs the reference vs Algorithm 1 as the paper writes it."""

from __future__ import annotations

import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case


def algorithm_1_loss(logits, y_a, y_b, lam, eta):
    """Algorithm 1's loss lines (paper 003_*) on one-hot rows: the (B, K) target and b materialised, then
    ``ce_loss(logits, y) + y * max(0, b - scores)`` summed over classes, averaged over the batch."""
    scores = torch.softmax(logits.float(), dim=-1)
    target = lam[:, None] * y_a + (1 - lam[:, None]) * y_b
    b = torch.zeros_like(scores)
    b[y_a > y_a.min(dim=1, keepdim=True).values] = 1
    b[y_b > y_b.min(dim=1, keepdim=True).values] = 1
    hinge = (target * torch.clamp(b - scores, min=0)).sum(1).mean()
    return torch.nn.functional.cross_entropy(logits.float(), target) + eta * hinge


def cases(device: torch.device, quick: bool) -> list[Case]:
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    # The Triton interpreter's timings on CPU mean nothing, so CPU runs time the reference and Algorithm 1.
    backends = [b for b in ("triton", "reference")
                if device.type == "cuda" or b == "reference"
                if not _backend.unavailable_reason(b, device.type)]
    batches = (128, 1024) if device.type == "cuda" else (32, 128)
    out = []
    for batch in batches:
        for classes in (100, 1000):
            for dtype in dtypes:
                generator = torch.Generator(device=device).manual_seed(0)
                logits = torch.randn(batch, classes, device=device, dtype=dtype, generator=generator).requires_grad_()
                y_a = torch.randint(0, classes, (batch,), device=device, generator=generator)
                y_b = torch.randint(0, classes, (batch,), device=device, generator=generator)
                lam = torch.rand(batch, device=device, generator=generator)
                one_hot_a = torch.nn.functional.one_hot(y_a, classes).float()
                one_hot_b = torch.nn.functional.one_hot(y_b, classes).float()
                providers = {}
                for backend in backends:
                    name = "reference" if backend == "reference" else f"fastmix-{backend}"
                    providers[name] = (lambda b=backend: torch.autograd.grad(
                        fastmix.lumix_loss(logits, y_a, y_b, lam, backend=b), logits))
                providers["paper"] = lambda: torch.autograd.grad(
                    algorithm_1_loss(logits, one_hot_a, one_hot_b, lam, 1.0), logits)
                # Must move: read the logits in the forward and the backward, write the gradient.
                bytes_moved = 3 * batch * classes * logits.element_size()
                source = torch.empty(bytes_moved // 2, dtype=torch.uint8, device=device)
                copy_target = torch.empty_like(source)
                out.append(Case("lumix_loss", (batch, classes), dtype, providers,
                                floor=lambda d=copy_target, s=source: d.copy_(s), bytes_moved=bytes_moved,
                                extra={"mode": "forward+backward", "labels": "int"}))
    return out
