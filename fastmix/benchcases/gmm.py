"""BalanceMix GMM cases: ``fit_gmm2`` on per-label losses (rows x K labels, 2K GMMs; MS-COCO has K = 80) per
backend vs the reference vs a scikit-learn loop (one GaussianMixture per group, the noisy-label literature's
practice), and ``gmm_posterior`` (eq. 8) of a batch's losses vs scikit-learn's ``predict_proba`` per group.

Every fit runs exactly 10 EM iterations per group (tol=0), so the work is fixed; scikit-learn's time includes its
k-means init, fastmix's its default (deterministic k-means) init. The losses are float32, as a training loop produces them. The
scikit-learn providers run on the CPU and appear only when scikit-learn is installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

import fastmix
from fastmix.bench import Case, backend_providers, copy_floor
from fastmix.ops import gmm as gmm_ops

ITERATIONS = 10
SKLEARN_NOTE = "scikit-learn {}: one GaussianMixture(2, max_iter=10, tol=0, reg_covar=5e-4) per group, in a loop"


def synthetic_losses(rows: int, classes: int, device: torch.device, seed: int = 0):
    """BCE-like losses of a multi-label set: 5% positives with spread-out losses, negatives mostly near zero."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(rows, classes, generator=g) < 0.05
    positive, negative = torch.rand(rows, classes, generator=g), torch.rand(rows, classes, generator=g)
    losses = torch.where(labels, positive * 3, negative ** 4)
    return losses.to(device), fastmix.label_groups(labels).to(device)


def normalised_groups(losses: torch.Tensor, groups: torch.Tensor) -> list[np.ndarray]:
    """Each group's losses min-max normalised, as (n, 1) arrays for scikit-learn."""
    out = []
    for group in range(2 * losses.size(1)):
        v = losses[groups == group].cpu().double().numpy()
        out.append(((v - v.min()) / (v.max() - v.min()))[:, None])
    return out


def sklearn_fits(per_group: list[np.ndarray]):
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [GaussianMixture(2, max_iter=ITERATIONS, tol=0.0, reg_covar=5e-4).fit(x) for x in per_group]


def sklearn_posterior(models, losses: torch.Tensor, groups: torch.Tensor, fit: fastmix.GMM2Fit) -> torch.Tensor:
    """Eq. 8 with scikit-learn: per group, normalise with the fit's min/max, then ``predict_proba`` of the
    small-mean component."""
    values, group_ids = losses.cpu().double().numpy().ravel(), groups.cpu().numpy().ravel()
    low, high = fit.min.cpu().numpy(), fit.max.cpu().numpy()
    out = np.ones_like(values)
    for group, model in enumerate(models):
        mine = group_ids == group
        if not mine.any():
            continue
        x = (values[mine] - low[group]) / (high[group] - low[group])
        out[mine] = model.predict_proba(x[:, None])[:, int(np.argmin(model.means_[:, 0]))]
    return torch.from_numpy(out).view(losses.shape)


def equal_groups_case(device: torch.device, n_groups: int, per_group: int) -> Case:
    """``fit_gmm2`` on ``n_groups`` groups of ``per_group`` losses each, laid out as per-label losses are (group = the
    column of a (per_group, n_groups) array), each group's losses piled near 0 as the negatives': the size the GPU
    fit is designed for (160 x 118,287), timed by fastmix's backends only (a scikit-learn loop would take a minute)."""
    g = torch.Generator().manual_seed(n_groups)
    losses = (torch.rand(per_group, n_groups, generator=g) ** 4).to(device)
    groups = torch.arange(n_groups, dtype=torch.int32).repeat(per_group).view(per_group, n_groups).to(device)
    providers = backend_providers(lambda b: fastmix.fit_gmm2(losses, groups, n_groups=n_groups, max_iter=ITERATIONS,
                                                             tol=0.0, backend=b), device, gmm_ops.BACKENDS)
    return Case("fit_gmm2 equal groups", tuple(losses.shape), losses.dtype, providers, copy_floor(losses), {},
                extra={"groups": n_groups, "iterations": ITERATIONS})


def cases(device: torch.device, s) -> list[Case]:
    losses, groups = synthetic_losses(s.gmm_rows, s.gmm_labels, device)
    n_groups = 2 * s.gmm_labels
    providers = backend_providers(lambda b: fastmix.fit_gmm2(losses, groups, n_groups=n_groups, max_iter=ITERATIONS,
                                                             tol=0.0, backend=b), device, gmm_ops.BACKENDS)
    notes, models = {}, None
    try:
        import sklearn
    except ImportError:
        sklearn = None
    if sklearn is not None:
        per_group = normalised_groups(losses, groups)
        models = sklearn_fits(per_group)
        providers["sklearn-loop"] = lambda: sklearn_fits(per_group)
        notes["sklearn-loop"] = SKLEARN_NOTE.format(sklearn.__version__)
    out = [Case("fit_gmm2", tuple(losses.shape), losses.dtype, providers, copy_floor(losses), notes,
                extra={"groups": n_groups, "iterations": ITERATIONS})]
    if s.gmm_groups_of:
        out.append(equal_groups_case(device, *s.gmm_groups_of))
    fit = fastmix.fit_gmm2(losses, groups, n_groups=n_groups, max_iter=ITERATIONS, tol=0.0)
    for batch in s.batches:
        batch_losses, batch_groups = synthetic_losses(batch, s.gmm_labels, device, seed=batch)
        providers = {"fastmix": lambda v=batch_losses, g=batch_groups: fastmix.gmm_posterior(v, g, fit)}
        if models is not None:
            providers["sklearn-loop"] = lambda v=batch_losses, g=batch_groups: sklearn_posterior(models, v, g, fit)
        out.append(Case("gmm_posterior", tuple(batch_losses.shape), batch_losses.dtype, providers,
                        copy_floor(batch_losses), {"sklearn-loop": "scikit-learn: predict_proba of the small-mean "
                                                                   "component, one GaussianMixture per group"}))
    return out
