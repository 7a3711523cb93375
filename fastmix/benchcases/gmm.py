"""BalanceMix GMM cases: fit_gmm2 on per-label losses (N x K, 2K GMMs) per backend vs the reference vs a
scikit-learn loop (one GaussianMixture per group, the noisy-label literature's practice; CPU, when installed).

Every provider runs exactly 10 EM iterations per group (tol=0), so the work is fixed; scikit-learn's time includes
its k-means init, fastmix's its default (deterministic k-means) init. The losses are float32, as a training loop
produces them.
"""

from __future__ import annotations

import warnings

import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case
from fastmix.ops import gmm as gmm_ops

CLASSES = 80
ITERATIONS = 10


def synthetic_losses(rows: int, device: torch.device):
    """BCE-like losses of a multi-label set: 5% positives with spread-out losses, negatives mostly near zero."""
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(rows, CLASSES, generator=g) < 0.05
    losses = torch.where(labels, torch.rand(rows, CLASSES, generator=g) * 3, torch.rand(rows, CLASSES, generator=g) ** 4)
    return losses.to(device), fastmix.label_groups(labels).to(device)


def sklearn_loop(losses: torch.Tensor, groups: torch.Tensor):
    """The per-group scikit-learn fits a training loop runs today, or None without scikit-learn."""
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError:
        return None
    per_group = []
    for group in range(2 * CLASSES):
        v = losses[groups == group].cpu().numpy()
        per_group.append(((v - v.min()) / (v.max() - v.min()))[:, None])

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [GaussianMixture(2, max_iter=ITERATIONS, tol=0.0, reg_covar=5e-4).fit(x) for x in per_group]

    return run


def cases(device: torch.device, quick: bool) -> list[Case]:
    rows = 118_287 if device.type == "cuda" or not quick else 5_000
    losses, groups = synthetic_losses(rows, device)
    providers = {}
    for backend in gmm_ops.BACKENDS:
        if not _backend.unavailable_reason(backend, device.type):
            name = "reference" if backend == "reference" else f"fastmix-{backend}"
            providers[name] = (lambda b=backend: fastmix.fit_gmm2(losses, groups, n_groups=2 * CLASSES,
                                                                  max_iter=ITERATIONS, tol=0.0, backend=b))
    loop = sklearn_loop(losses, groups)
    if loop is not None:
        providers["sklearn-loop"] = loop
    copy_target = torch.empty_like(losses)
    return [Case("fit_gmm2", tuple(losses.shape), losses.dtype, providers,
                 floor=lambda: copy_target.copy_(losses), bytes_moved=2 * losses.numel() * losses.element_size(),
                 extra={"groups": 2 * CLASSES, "iterations": ITERATIONS})]
