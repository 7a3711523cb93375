"""BalanceMix (BalanceMix paper): minority sampler (eq. 2-4), minority-augmented mixing (eq. 5), label-wise management
(eq. 6-9) and the loss (eq. 10), tied together by ``BalanceMix`` as in Algorithm 1 (Appendix A).

A training loop draws a mini-batch from a random sampler and one from ``BalanceMix.sampler``, mixes them with
``mix`` and trains on ``loss``; once per epoch it passes the logits (or per-label BCE losses) of the whole training
set to ``begin_epoch``, which updates the sampler (eq. 4) and fits the 2K GMMs (eq. 7) with ``fastmix.fit_gmm2``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from fastmix import _backend, _checks, _random
from fastmix._categories import AMBIGUOUS, CLEAN, RELABELED
from fastmix._dtypes import compute_dtype
from fastmix.api import gmm
from fastmix.api.balancemix import balancemix_loss
from fastmix.ops import balancemix as balancemix_ops

MIN_SCORE = 1e-12
"""The smallest Score (eq. 3) the minority sampler divides by."""

__all__ = ["AMBIGUOUS", "CLEAN", "RELABELED", "BalanceMix", "BalanceMixState", "MinoritySampler",
           "manage_labels", "minority_sampling_probabilities"]


def _multi_hot(name: str, labels, shape: tuple | None = None, device: torch.device | None = None) -> torch.Tensor:
    """(N, K) 0/1 labels of any numeric dtype as float32 (float64 stays float64); values are checked on CPU only."""
    _checks.check_tensor(name, labels)
    if labels.is_complex():
        raise TypeError(f"{name} must hold 0/1 multi-hot labels, got dtype {labels.dtype}")
    labels = _checks.check_matrix(name, labels if labels.is_floating_point() else labels.float(), shape, device)
    if _checks.host_reads_values(labels):
        if bool(((labels != 0) & (labels != 1)).any()):
            raise ValueError(f"{name} must hold multi-hot labels (0 or 1 only)")
    return labels if labels.dtype == torch.float64 else labels.float()


def _check_probabilities(name: str, value: torch.Tensor) -> None:
    """Every entry in [0, 1] (NaN fails), checked on the device (a device-side assert on CUDA tensors)."""
    _checks.check_on_device(((value >= 0) & (value <= 1)).all(), f"{name} must hold probabilities in [0, 1] (no NaN)")


def minority_sampling_probabilities(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The minority sampler's distribution (BalanceMix paper, eq. 2-4), float64 (N,).

    ``probabilities`` are the model's sigmoid outputs f(x)_k over the whole training set (N, K); ``labels`` the
    given (noisy) multi-hot labels. P(k) and A(k) are the mean confidences in the presence/absence of class k
    (eq. 2), Score sums them over an instance's labels (eq. 3), and the probability is ``1/Score`` normalised (eq. 4).
    """
    probabilities = _checks.check_matrix("probabilities", probabilities)
    _check_probabilities("probabilities", probabilities)
    labels = _multi_hot("labels", labels, probabilities.shape, probabilities.device)
    return _sampling_probabilities(probabilities, labels)


def _sampling_probabilities(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 2-4 in float64 on checked inputs: ``Score = sum_k A(k) + y . (P - A)``, probability ``1/Score`` normalised.

    Scores are clamped at ``MIN_SCORE`` so that an instance whose every label has zero class confidence gets a
    large but finite weight.
    """
    probabilities, labels = probabilities.double(), labels.double()
    positives = labels.sum(0)
    hits = (probabilities * labels).sum(0)
    negatives = labels.size(0) - positives
    presence = hits / positives.clamp(min=1.0)
    absence = (negatives - probabilities.sum(0) + hits) / negatives.clamp(min=1.0)
    inverse = (labels @ (presence - absence) + absence.sum()).clamp(min=MIN_SCORE).reciprocal()
    return inverse / inverse.sum()


class MinoritySampler(torch.utils.data.Sampler[int]):
    """The confidence-based minority sampler (BalanceMix paper, eq. 4): indices drawn with replacement by probability.

    Uniform until ``set_probabilities`` is called (``BalanceMix.begin_epoch`` does it once per epoch). Each epoch
    draws ``num_draws`` indices from a ``torch.Generator`` seeded with ``seed + epoch``, by inverse-CDF search in
    float64 (no category limit). Distributed training: every rank builds the sampler with the same ``seed`` and the
    same probabilities (from the losses of the full data set) and its ``num_replicas``/``rank``; all ranks draw the
    same sequence and each yields the positions ``rank, rank + num_replicas, ...`` of it, like
    ``torch.utils.data.DistributedSampler`` does with its permutation.
    """

    def __init__(self, num_samples: int, *, num_draws: int | None = None, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0):
        for name, value, low in (("num_samples", num_samples, 1), ("num_replicas", num_replicas, 1),
                                 ("num_draws", num_samples if num_draws is None else num_draws, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.num_samples = num_samples
        self.num_draws = num_samples if num_draws is None else num_draws
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = int(seed)
        self.epoch = 0
        self.probabilities = torch.full((num_samples,), 1.0 / num_samples, dtype=torch.float64)

    def set_probabilities(self, probabilities: torch.Tensor) -> None:
        """Sampling probabilities over the data set, (num_samples,), non-negative with a positive sum."""
        _checks.check_tensor("probabilities", probabilities)
        if probabilities.shape != (self.num_samples,):
            raise ValueError(f"probabilities must have shape ({self.num_samples},), got {tuple(probabilities.shape)}")
        probabilities = probabilities.detach().to("cpu", torch.float64)
        usable = bool(torch.isfinite(probabilities).all()) and bool((probabilities >= 0).all())
        if not usable or not probabilities.sum() > 0:
            raise ValueError("probabilities must be finite, non-negative and not all zero")
        self.probabilities = probabilities / probabilities.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.num_draws / self.num_replicas)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        cdf = self.probabilities.cumsum(0)
        total = len(self) * self.num_replicas
        uniform = torch.rand(total, generator=generator, dtype=torch.float64) * cdf[-1]
        drawn = torch.searchsorted(cdf, uniform, right=True).clamp_(max=self.num_samples - 1)
        return iter(drawn[self.rank::self.num_replicas].tolist())


def manage_labels(labels: torch.Tensor, clean_probability: torch.Tensor, view_confidences: torch.Tensor | None = None,
                  *, tau: float = 0.975) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-wise management (BalanceMix paper, eq. 8-10): ``(refined_labels, categories, loss_weights)``, all (B, K).

    ``clean_probability`` is p_G of each given label (eq. 8); ``view_confidences`` (V, B, K) the sigmoid outputs on
    V augmented views (V = 2 in the paper), averaged for eq. 9, or None to skip re-labeling. Labels with p_G > 0.5
    are CLEAN (kept, weight 1); the others are RELABELED to 1 where the mean confidence is ``>= tau`` and to 0 where
    it is ``<= 1 - tau`` (weight 1), else AMBIGUOUS (kept, weight p_G). ``tau`` in (0.5, 1]: 0.975 in the paper,
    0.55 in the single-positive setting (Table 7). Categories are int8 codes; weights are float32.
    """
    tau = _checks.check_real("tau", tau, 0.5, 1.0, low_open=True)
    labels = _multi_hot("labels", labels)
    clean_probability = _checks.check_matrix("clean_probability", clean_probability, labels.shape,
                                             labels.device).float()
    _check_probabilities("clean_probability", clean_probability)
    mean_confidence = None
    if view_confidences is not None:
        _checks.check_tensor("view_confidences", view_confidences)
        if view_confidences.dim() != 3 or view_confidences.shape[1:] != labels.shape or not len(view_confidences):
            raise ValueError(f"view_confidences must have shape (V, {labels.size(0)}, {labels.size(1)}) with V >= 1, "
                             f"got shape {tuple(view_confidences.shape)}")
        _check_probabilities("view_confidences", view_confidences)
        mean_confidence = _checks.check_matrix("view_confidences", view_confidences.float().mean(0),
                                               device=labels.device)
    clean = clean_probability > 0.5
    labels = labels.to(clean_probability.dtype)
    if mean_confidence is None:
        return labels, torch.where(clean, CLEAN, AMBIGUOUS).to(torch.int8), torch.where(clean, 1.0, clean_probability)
    to_one = mean_confidence >= tau
    relabeled = (to_one | (mean_confidence <= 1.0 - tau)) & ~clean
    refined = torch.where(relabeled, to_one.to(labels.dtype), labels)
    categories = torch.where(clean, CLEAN, torch.where(relabeled, RELABELED, AMBIGUOUS)).to(torch.int8)
    return refined, categories, torch.where(clean | relabeled, 1.0, clean_probability)


def draw_mixing_ratios(batch: int, alpha: float, device, *, dtype: torch.dtype = torch.float32,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """lambda = max(l0, 1 - l0), l0 ~ Beta(alpha, alpha), one per instance, drawn on ``device`` (eq. 5)."""
    l0 = _random.sample_beta(alpha, batch, device, generator, torch.float64)
    return torch.maximum(l0, 1.0 - l0).to(dtype)


@dataclasses.dataclass
class BalanceMixState:
    """What ``BalanceMix.mix`` hands to ``BalanceMix.loss``: the mixing ratios (B,) and, after warm-up, the
    categories (B, K) int8 and loss weights (B, K) of the dominant (random-sampler) instance's refined labels."""

    lam: torch.Tensor
    categories: torch.Tensor | None = None
    label_weights: torch.Tensor | None = None


class BalanceMix:
    """BalanceMix training logic (BalanceMix paper, Algorithm 1).

    Per epoch: ``begin_epoch(values, labels)`` with the logits (or per-label BCE losses) of the whole training set
    under the current model, then per step ``x, y, state = mix(batch_random, batch_minority)`` and
    ``loss(model(x), y, state)``. Each batch is ``(x, labels, indices)`` or ``(x, labels, indices,
    view_confidences)``: inputs (B, ...), multi-hot labels (B, K), data set indices (B,) int64 (to look up p_G),
    and optionally sigmoid outputs on V augmented views (V, B, K) for re-labeling (eq. 9). Both batches must have
    the same size (use ``drop_last=True``). The minority batch comes from ``self.sampler``.

    For the first ``warmup_epochs`` epochs labels are used as given and the loss is plain BCE; afterwards labels are
    managed (eq. 8-9), mixed (eq. 5) and weighted (eq. 10). ``gmm_options`` go to ``fastmix.fit_gmm2``, whose default
    (deterministic k-means init) gives the authors' ``GaussianMixture`` call's clean sets.
    """

    def __init__(self, num_samples: int, num_classes: int, *, alpha: float = 4.0, tau: float = 0.975,
                 warmup_epochs: int = 0, num_draws: int | None = None, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, backend: str | None = None, gmm_options: dict | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.alpha = _checks.check_positive_finite("alpha", alpha)
        self.tau = _checks.check_real("tau", tau, 0.5, 1.0, low_open=True)
        self.num_classes = num_classes
        self.warmup_epochs = warmup_epochs
        self.backend = _backend.check_name(backend, balancemix_ops.BACKENDS)
        self.gmm_options = dict(gmm_options or {})
        self.sampler = MinoritySampler(num_samples, num_draws=num_draws, num_replicas=num_replicas, rank=rank,
                                       seed=seed)
        self.epoch = -1
        self.clean_probability: torch.Tensor | None = None
        self.gmm_fit = None

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.warmup_epochs

    def begin_epoch(self, values: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
                    values_are: str = "logits", generator: torch.Generator | None = None):
        """Start the next epoch (Algorithm 1, lines 17-18, run for the previous epoch's model).

        ``values`` (N, K): the logits, or with ``values_are="losses"`` the per-label BCE losses, of all N training
        instances; ``labels`` (N, K) their given multi-hot labels. Updates the sampler's probabilities (eq. 2-4;
        the confidence of a label is ``exp(-BCE)``, so losses carry the same information as logits) and, from the
        first epoch after warm-up on, fits the 2K GMMs to the losses (eq. 6-7) and stores p_G of every label (eq. 8)
        in ``clean_probability``. With no ``values`` (before the first epoch) nothing is updated.
        Returns the GMM fit record, or None when no fit ran.
        """
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        if values is None:
            return None
        if values_are not in ("logits", "losses"):
            raise ValueError(f"values_are must be 'logits' or 'losses', got {values_are!r}")
        values = _checks.check_matrix("values", values)
        if values.size(0) != self.sampler.num_samples or values.size(1) != self.num_classes:
            raise ValueError(f"values must have shape ({self.sampler.num_samples}, {self.num_classes}), "
                             f"got shape {tuple(values.shape)}")
        labels = _multi_hot("labels", labels, values.shape, values.device).double()
        values = values.detach().double()
        if values_are == "logits":
            losses = torch.nn.functional.binary_cross_entropy_with_logits(values, labels, reduction="none")
            probabilities = torch.sigmoid(values)
        else:
            if bool((values < 0).any()):
                raise ValueError("values_are='losses' needs non-negative BCE losses")
            losses = values
            label_confidence = torch.exp(-losses)
            probabilities = torch.where(labels > 0.5, label_confidence, 1.0 - label_confidence)
        self.sampler.set_probabilities(_sampling_probabilities(probabilities, labels))
        if self.in_warmup:
            return None
        groups = gmm.label_groups(labels).reshape(-1)
        flat_losses = losses.reshape(-1)
        self.gmm_fit = gmm.fit_gmm2(flat_losses, groups, n_groups=2 * self.num_classes, generator=generator,
                                    **self.gmm_options)
        self.clean_probability = gmm.gmm_posterior(flat_losses, groups, self.gmm_fit).reshape(labels.shape).float()
        return self.gmm_fit

    def _refine(self, batch, name: str):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
            raise TypeError(f"{name} must be a tuple (x, labels, indices[, view_confidences])")
        x, labels, indices = batch[:3]
        _checks.check_batch_input(f"{name}[0]", x)
        labels = _multi_hot(f"{name}[1]", labels, (x.size(0), self.num_classes), x.device)
        _checks.check_tensor(f"{name}[2]", indices)
        if indices.shape != (x.size(0),) or indices.is_floating_point() or indices.dtype == torch.bool:
            raise ValueError(f"{name}[2] must hold integer data set indices of shape ({x.size(0)},)")
        if self.in_warmup:
            return x, labels, None, None
        if self.clean_probability is None:
            raise RuntimeError("no GMM fit yet: call begin_epoch with the model's outputs before training past warm-up")
        clean_probability = self.clean_probability.to(x.device)[indices.to(x.device)]
        view_confidences = batch[3] if len(batch) == 4 else None
        refined, categories, weights = manage_labels(labels, clean_probability, view_confidences, tau=self.tau)
        return x, refined, categories, weights

    def mix(self, batch_random, batch_minority, *, generator: torch.Generator | None = None):
        """Minority-augmented mixing (eq. 5): ``(x_mix, y_mix, state)``.

        ``x_mix = lam x_R + (1 - lam) x_M`` and ``y_mix = lam y_R + (1 - lam) y_M`` (refined labels after warm-up)
        with one ``lam = max(l0, 1 - l0)``, ``l0 ~ Beta(alpha, alpha)`` per instance, drawn on the device from
        ``generator``. The random-sampler instance dominates (lam >= 0.5), so the mixed labels take its categories
        and loss weights (paper, "Optimization with BalanceMix"). Mixing uses plain torch ops, in float32 for half
        inputs; x_mix keeps x_R's dtype and memory format.
        """
        x_random, y_random, categories, weights = self._refine(batch_random, "batch_random")
        x_minority, y_minority, _, _ = self._refine(batch_minority, "batch_minority")
        if x_minority.shape != x_random.shape or x_minority.dtype != x_random.dtype:
            raise ValueError(f"batch_minority[0] must match batch_random[0] in shape and dtype, got "
                             f"{tuple(x_minority.shape)} {x_minority.dtype} vs {tuple(x_random.shape)} {x_random.dtype}")
        _checks.check_generator(generator, x_random.device)
        mix_dtype = compute_dtype(x_random.dtype)
        lam = draw_mixing_ratios(x_random.size(0), self.alpha, x_random.device, dtype=mix_dtype, generator=generator)
        lam_x = lam.view(-1, *([1] * (x_random.dim() - 1)))
        x_mix = (lam_x * x_random.to(mix_dtype) + (1.0 - lam_x) * x_minority.to(mix_dtype)).to(x_random.dtype)
        lam_y = lam.to(y_random.dtype).unsqueeze(1)
        y_mix = lam_y * y_random + (1.0 - lam_y) * y_minority.to(y_random.dtype)
        return x_mix, y_mix, BalanceMixState(lam, categories, weights)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, state: BalanceMixState) -> torch.Tensor:
        """Eq. 10 on the mixed batch (plain BCE during warm-up, where ``state.label_weights`` is None)."""
        return balancemix_loss(logits, targets, state.label_weights, backend=self.backend)
