"""BalanceMix loss (eq. 10) benchmark cases: the fused Triton kernel vs the reference, forward + backward."""

from __future__ import annotations

import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case


def loss_and_grad(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, backend: str):
    """One training step's loss work: eq. 10 and its gradient with respect to the logits."""
    leaf = logits.detach().requires_grad_()
    loss = fastmix.balancemix_loss(leaf, targets, weights, backend=backend)
    loss.backward()
    return leaf.grad


def cases(device: torch.device, quick: bool) -> list[Case]:
    """MS-COCO's 80 classes and DeepFashion's 1000 attributes at training batch sizes."""
    shapes = ((64, 80),) if quick and device.type != "cuda" else ((64, 80), (256, 1000))
    out = []
    for batch, classes in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            logits = torch.randn(batch, classes, device=device, dtype=dtype)
            targets = torch.rand(batch, classes, device=device)
            weights = torch.rand(batch, classes, device=device)
            providers = {}
            for backend in ("triton", "reference"):
                if not _backend.unavailable_reason(backend, device.type):
                    name = "reference" if backend == "reference" else f"fastmix-{backend}"
                    providers[name] = lambda b=backend: loss_and_grad(logits, targets, weights, b)
            # forward reads logits, targets, weights; backward reads them again and writes the gradient
            logit_bytes = logits.numel() * logits.element_size()
            bytes_moved = 3 * logit_bytes + 4 * targets.numel() * 4
            copy_source = torch.empty(bytes_moved // 2, dtype=torch.uint8, device=device)  # a copy reads + writes
            copy_target = torch.empty_like(copy_source)
            out.append(Case("balancemix_loss", (batch, classes), dtype, providers,
                            floor=lambda d=copy_target, s=copy_source: d.copy_(s), bytes_moved=bytes_moved,
                            extra={"mode": "forward+backward"}))
    return out
