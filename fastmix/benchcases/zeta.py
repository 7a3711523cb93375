"""zeta-mixup cases: fastmix per backend vs the reference vs the paper's pipeline (Appendix B, Listing A1)."""

from __future__ import annotations

import numpy as np
import torch

import fastmix
from fastmix.bench import Case, backend_providers, copy_floor
from fastmix.benchcases import image_batch
from fastmix.ops import zeta as zeta_ops

CLASSES = 1000
GAMMA = 2.8


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


def batch_case(batch: int, device: torch.device, image_side: int) -> Case:
    x = image_batch(batch, image_side, device)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    y_onehot = torch.nn.functional.one_hot(y, CLASSES)
    generator = torch.Generator(device=device).manual_seed(0)
    providers = backend_providers(
        lambda b: fastmix.zeta_mixup(x, y, num_classes=CLASSES, gamma=GAMMA, generator=generator, backend=b), device,
        zeta_ops.BACKENDS)
    providers["paper"] = lambda: paper_pipeline(x, y_onehot, GAMMA)
    weights = torch.rand(batch, batch, device=device, dtype=x.dtype).softmax(dim=1)
    x_rows = x.reshape(batch, -1)
    providers["gemm"] = lambda: torch.mm(weights, x_rows)
    return Case("zeta_mixup", tuple(x.shape), x.dtype, providers, copy_floor(x),
                {"paper": "the paper's code (Appendix B, Listing A1): numpy weights on the host, einsum",
                 "gemm": "one torch.mm(W, x) of a given (B, B) W into a new output: the GEMM zeta-mixup runs, "
                         "without its weights, labels and argument checks"})


def cases(device: torch.device, s) -> list[Case]:
    return [batch_case(batch, device, s.image_side) for batch in s.batches]
