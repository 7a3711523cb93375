"""zeta-mixup benchmark cases: fastmix per backend vs the reference vs the paper's pipeline (Appendix B)."""

from __future__ import annotations

import numpy as np
import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case


def paper_weights(batch: int, gamma: float) -> np.ndarray:
    """The weights as the paper's code draws them: on the host with numpy, sample i ranked first in row i."""
    weights = np.empty((batch, batch))
    for i in range(batch):
        ranks = np.empty(batch)
        ranks[i] = 1
        ranks[np.arange(batch) != i] = np.random.permutation(batch - 1) + 2
        weights[i] = ranks ** -gamma
    return weights / weights.sum(1, keepdims=True)


def paper_pipeline(x: torch.Tensor, y_onehot: torch.Tensor, gamma: float):
    """Appendix B, Listing A1: host weights, a copy to the device, then einsum for images and labels."""
    weights = torch.from_numpy(paper_weights(x.size(0), gamma)).to(device=x.device, dtype=x.dtype)
    return torch.einsum("ijkl,pi->pjkl", x, weights), torch.einsum("pq,qj->pj", weights, y_onehot.to(x.dtype))


def cases(device: torch.device, quick: bool) -> list[Case]:
    batches = ((32,) if quick else (32, 128, 256)) if device.type == "cuda" else ((8,) if quick else (8, 32))
    dtypes = (torch.float32, torch.bfloat16)
    out = []
    for batch in batches:
        for dtype in dtypes:
            x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
            y = torch.randint(0, 1000, (batch,), device=device)
            y_onehot = torch.nn.functional.one_hot(y, 1000)
            generator = torch.Generator(device=device).manual_seed(0)
            providers = {}
            for backend in ("triton", "reference"):
                if not _backend.unavailable_reason(backend, device.type):
                    name = "reference" if backend == "reference" else f"fastmix-{backend}"
                    providers[name] = (lambda b=backend: fastmix.zeta_mixup(x, y, num_classes=1000, generator=generator, backend=b))
            providers["paper"] = lambda: paper_pipeline(x, y_onehot, 2.8)
            copy_target = torch.empty_like(x)
            out.append(Case("zeta_mixup", tuple(x.shape), dtype, providers, floor=lambda d=copy_target, s=x: d.copy_(s),
                            bytes_moved=2 * x.numel() * x.element_size()))
    return out
