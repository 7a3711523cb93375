"""``fastmix.Mixup``: timm's ``Mixup`` (constructor, call convention, statistics) on the device, in one launch."""

from __future__ import annotations

import math

import torch

from fastmix import _checks, _random
from fastmix.api import mix

MODES = ("batch", "pair", "elem")


class Mixup:
    """Drop-in replacement for ``timm.data.Mixup``: ``x, target = mixer(x, target)``.

    Same arguments and defaults as timm, same statistics per mode: "batch" draws one gate (``prob``), one choice
    of mixer (``switch_prob`` picks CutMix when both alphas are > 0), one lam and one box for the whole batch;
    "pair" draws them per pair (i, B-1-i), both members sharing lam and box (CutMix swaps the box both ways);
    "elem" draws them per sample. Partners are the flipped batch (i <-> B-1-i). CutMix boxes follow timm's
    ``rand_bbox``/``rand_bbox_minmax`` (see ``fastmix.api.mix.sample_boxes``); with ``correct_lam`` or
    ``cutmix_minmax`` lam is the kept-area fraction; a ``cutmix_minmax`` sets ``cutmix_alpha`` to 1 (as timm).
    Targets are ``lam y + (1 - lam) y[partner]`` of the smoothed labels (``off = s/K``, ``on = 1 - s + off``).
    Set ``mixup_enabled = False`` to stop mixing (targets are still smoothed).

    Deliberate differences from timm (1.0.16-1.0.28):

    - Randomness: torch's RNG on x's device (``generator=``), not numpy's global RNG; no host sync, no Python loop:
      one kernel launch mixes the batch, whatever the mode.
    - Odd batches work in every mode: the middle sample pairs with itself and stays unchanged (timm asserts).
    - Targets may be int class indices (B,) or float one-hot/soft/multi-hot (B, K); smoothing maps every kind by
      ``y (1 - s) + s / K``. Targets are float32 (float64 for float64 targets), never x's dtype.
    - x is never modified unless ``inplace=True``; a batch whose gate fails comes back as an unmixed copy.
    - uint8 x works in every mode (Mixup rounds half to even and saturates; timm's batch mode raises, elem/pair
      truncate). ``layout="NHWC"`` takes (B, H, W, C) batches; channels_last NCHW needs nothing.
    - Bad arguments raise at construction: unknown mode (timm falls back to "batch"), no active mixer (timm asserts
      at call time), prob/switch_prob outside [0, 1], label_smoothing outside [0, 1), a bad cutmix_minmax.
    - ``rand_bbox_minmax`` draws the box origin over every position that keeps it inside (timm >= PR #2739; older
      timm never drew the last one).
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, cutmix_minmax=None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int | None = 1000, *, layout: str = "NCHW",
                 inplace: bool = False, generator: torch.Generator | None = None, backend: str | None = None):
        self.mixup_alpha = _checks.check_real("mixup_alpha", mixup_alpha, 0.0, math.inf)
        self.cutmix_alpha = _checks.check_real("cutmix_alpha", cutmix_alpha, 0.0, math.inf)
        self.cutmix_minmax = mix.check_minmax(cutmix_minmax)
        if self.cutmix_minmax is not None:
            self.cutmix_alpha = 1.0
        if self.mixup_alpha == 0.0 and self.cutmix_alpha == 0.0:
            raise ValueError("mixup_alpha or cutmix_alpha (or cutmix_minmax) must enable a mixer")
        self.mix_prob = _checks.check_real("prob", prob, 0.0, 1.0)
        self.switch_prob = _checks.check_real("switch_prob", switch_prob, 0.0, 1.0)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = _checks.check_real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.num_classes = num_classes
        if layout not in mix.LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(mix.LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.inplace = bool(inplace)
        self.generator = generator
        self.backend = backend
        self.mixup_enabled = True

    def sample(self, x: torch.Tensor) -> mix.MixParams:
        """Draws one batch's parameters on x's device (per mode, as the class docstring says)."""
        batch, device, generator = x.size(0), x.device, self.generator
        count = {"batch": 1, "pair": (batch + 1) // 2, "elem": batch}[self.mode]
        mixup_on, cutmix_on = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if mixup_on and cutmix_on:
            use_cutmix = torch.rand(count, generator=generator, device=device) < self.switch_prob
        else:
            use_cutmix = torch.full((count,), cutmix_on, dtype=torch.bool, device=device)
        lam = (_random.sample_beta(self.cutmix_alpha, count, device, generator) if cutmix_on
               else torch.ones(count, device=device))
        if mixup_on:
            lam = torch.where(use_cutmix, lam, _random.sample_beta(self.mixup_alpha, count, device, generator))
        mixed = torch.rand(count, generator=generator, device=device) < self.mix_prob
        cutmix = use_cutmix & mixed
        boxes = torch.zeros((count, 4), dtype=torch.int32, device=device)
        if cutmix_on:
            height_dim, width_dim = mix.spatial_dims(x, self.layout)
            height, width = x.size(height_dim), x.size(width_dim)
            boxes = torch.where(cutmix[:, None], mix.sample_boxes(lam, height, width, self.cutmix_minmax, generator),
                                boxes)
            if self.correct_lam or self.cutmix_minmax is not None:
                lam = torch.where(cutmix, mix.kept_fraction(boxes, height, width), lam)
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        if self.mode != "elem":
            rows = torch.arange(batch, device=device)
            index = torch.minimum(rows, batch - 1 - rows) if self.mode == "pair" else torch.zeros_like(rows)
            lam, boxes, cutmix = lam[index], boxes[index], cutmix[index]
        partner = torch.arange(batch - 1, -1, -1, device=device)
        return mix.MixParams(lam, partner, boxes, cutmix)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, *, return_params: bool = False):
        """Mixes ``(x, target)``; returns ``(x_mixed, target_mixed)`` (and the ``MixParams`` if asked)."""
        labels, name = mix.prepare(x, target, self.num_classes, self.label_smoothing, self.generator, self.backend,
                                   self.inplace)
        if not self.mixup_enabled:
            return (x, labels, None) if return_params else (x, labels)
        params = self.sample(x)
        spatial = mix.spatial_dims(x, self.layout) if self.cutmix_alpha > 0 else (-1, -1)
        x_mixed, y_mixed = mix.apply(x, labels, params, *spatial, name, self.inplace)
        return (x_mixed, y_mixed, params) if return_params else (x_mixed, y_mixed)

    def __repr__(self) -> str:
        return (f"fastmix.Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"cutmix_minmax={self.cutmix_minmax}, prob={self.mix_prob}, switch_prob={self.switch_prob}, "
                f"mode={self.mode!r}, correct_lam={self.correct_lam}, label_smoothing={self.label_smoothing}, "
                f"num_classes={self.num_classes})")


class FastCollateMixup:
    """A DataLoader ``collate_fn`` like timm's ``FastCollateMixup``: stacks ``(uint8 CHW image, int label)`` samples
    (numpy arrays or tensors) and mixes the uint8 batch with ``fastmix.Mixup(**mixup_kwargs)``.

    Returns ``(images uint8 (B, C, H, W), targets float32 (B, K))`` on the CPU. Differences from timm beyond those of
    ``Mixup``: odd batches work, and timm's "half" mode (mix the first half only, return B/2 samples) is not offered.
    """

    def __init__(self, **mixup_kwargs):
        self.mixer = Mixup(**mixup_kwargs)

    def __call__(self, batch, _=None):
        images = torch.stack([torch.as_tensor(image) for image, _ in batch])
        if images.dtype != torch.uint8:
            raise TypeError(f"FastCollateMixup takes uint8 images, got dtype {images.dtype}")
        targets = torch.tensor([int(label) for _, label in batch], dtype=torch.int64)
        return self.mixer(images, targets)
