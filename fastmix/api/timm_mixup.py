"""``fastmix.Mixup`` / ``fastmix.FastCollateMixup``: timm 1.0.31's ``Mixup`` and ``FastCollateMixup`` (constructor,
call convention, statistics) on the device: on the kernel backends three launches a call (seed, parameters and
labels, mix), see fastmix/api/mix.py."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import default_collate

from fastmix import _backend, _checks
from fastmix.api import mix
from fastmix.ops import mix as mix_ops


class Mixup:
    """Drop-in replacement for ``timm.data.Mixup`` (timm 1.0.31): ``x, target = mixer(x, target)``.

    Same arguments, positional order and defaults as timm, same statistics per mode: "batch" draws one gate
    (``prob``), one choice of mixer (``switch_prob`` picks CutMix when both alphas are > 0), one lam and one box for
    the whole batch; "pair" draws them per pair (i, B-1-i), both members sharing lam and box (CutMix swaps the box
    both ways); "elem" draws them per sample. Partners are the flipped batch (i <-> B-1-i). CutMix boxes follow timm
    1.0.31's ``rand_bbox``/``rand_bbox_minmax`` (see ``fastmix.api.mix.sample_boxes``); with ``correct_lam`` or
    ``cutmix_minmax`` lam is the kept-area fraction; a ``cutmix_minmax`` sets ``cutmix_alpha`` to 1 (as timm).
    Targets are ``lam y + (1 - lam) y[partner]`` of the smoothed labels (``off = s/K``, ``on = 1 - s + off``); with
    ``multi_label`` the targets are dense (B, K) multi-hot labels smoothed towards 0.5 (``y (1 - s) + s/2``).
    Set ``mixup_enabled = False`` to stop mixing (targets are still smoothed).

    Deliberate differences from timm 1.0.31:

    - Randomness: torch's RNG on x's device (``generator=``), not numpy's global RNG: on the kernel backends one
      seed per call drawn on the device, from which one kernel (its C++ twin on "cpu") draws every parameter
      (Philox); on the "reference" backend one ``torch.rand`` and one Gamma draw per call. No host sync, no Python
      loop: one kernel launch mixes the batch, whatever the mode.
    - Odd batches work in every mode: the middle sample pairs with itself and stays unchanged (timm asserts).
    - Targets may be int class indices (B,) or float one-hot/soft/multi-hot (B, K); smoothing maps every kind by
      ``y (1 - s) + s / K``. Targets are float32 (float64 for float64 targets), never x's dtype.
    - x is never modified unless ``inplace=True``; a batch whose gate fails comes back as an unmixed copy.
    - uint8 x works in every mode (Mixup rounds half to even and saturates; timm's batch mode raises, elem/pair
      truncate). ``layout="NHWC"`` takes (B, H, W, C) batches; channels_last NCHW needs nothing. Video batches
      (B, C, T, H, W) get one box per sample on every frame (timm takes 4-D batches only).
    - Bad arguments raise at construction: unknown mode (timm falls back to "batch"), no active mixer (timm asserts
      at call time), prob/switch_prob outside [0, 1], label_smoothing outside [0, 1), a bad cutmix_minmax, flags
      that are not bools. Numbers may be Python or numpy scalars.
    - ``cutmix_minmax`` with ``int(S lo) == int(S hi)`` draws sides of ``int(S lo)`` (numpy's randint raises there).
    """

    MODES = ("batch", "pair", "elem")

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, cutmix_minmax=None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int | None = 1000, multi_label: bool = False, *,
                 layout: str = "NCHW", inplace: bool = False, generator: torch.Generator | None = None,
                 backend: str | None = None):
        self.mixup_alpha = _checks.check_real("mixup_alpha", mixup_alpha, 0.0, float("inf"))
        self.cutmix_alpha = _checks.check_real("cutmix_alpha", cutmix_alpha, 0.0, float("inf"))
        self.cutmix_minmax = mix.check_minmax(cutmix_minmax)
        if self.cutmix_minmax is not None:
            self.cutmix_alpha = 1.0
        if self.mixup_alpha == 0.0 and self.cutmix_alpha == 0.0:
            raise ValueError("mixup_alpha or cutmix_alpha (or cutmix_minmax) must enable a mixer")
        self.mix_prob = _checks.check_real("prob", prob, 0.0, 1.0)
        self.switch_prob = _checks.check_real("switch_prob", switch_prob, 0.0, 1.0)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.correct_lam = _checks.check_bool("correct_lam", correct_lam)
        self.label_smoothing = _checks.check_real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.num_classes = None if num_classes is None else _checks.check_int("num_classes", num_classes, 1)
        self.multi_label = _checks.check_bool("multi_label", multi_label)
        if layout not in mix.LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(mix.LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.inplace = _checks.check_bool("inplace", inplace)
        self.generator = generator
        self.backend = backend
        self.mixup_enabled = True

    def _sampling(self) -> mix.Sampling:
        return mix.Sampling(self.mode, False, self.mixup_alpha, self.cutmix_alpha, self.mix_prob, self.switch_prob,
                            self.cutmix_minmax, self.correct_lam, self.layout)

    def sample(self, x: torch.Tensor) -> mix.MixParams:
        """Draws one batch's parameters on x's device (per mode, as the class docstring says) as a call on this
        mixer's backend draws them: the parameter kernel (or its C++ twin on "cpu") from one seed, or on the
        reference torch's sampler (one ``torch.rand`` and one Gamma draw)."""
        _checks.check_batch_input("x", x, allow_uint8=True)
        spatial = mix.spatial_dims(x, self.layout) if self.cutmix_alpha > 0 else (-1, -1)
        _checks.check_generator(self.generator, x.device)
        name = _backend.resolve(self.backend, x.device, cpu_default="cpu", supported=mix_ops.BACKENDS)
        return mix.draw(x, None, self._sampling(), self.generator, name, *spatial)[0]

    def _mix(self, x: torch.Tensor, target: torch.Tensor, inplace: bool):
        """``(x_mixed, target_mixed, params)``, x mixed in place or not; ``params`` is None when ``mixup_enabled``
        is False."""
        labels, name = mix.prepare(x, target, self.num_classes, self.label_smoothing, self.generator, self.backend,
                                   inplace, multi_label=self.multi_label)
        if not self.mixup_enabled:
            return x, mix.float_labels(labels), None
        return mix.mix_batch(x, labels, self._sampling(), self.generator, name, inplace)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, *, return_params: bool = False):
        """Mixes ``(x, target)``; returns ``(x_mixed, target_mixed)`` (and the ``MixParams`` if asked)."""
        x_mixed, y_mixed, params = self._mix(x, target, self.inplace)
        return (x_mixed, y_mixed, params) if return_params else (x_mixed, y_mixed)

    def __repr__(self) -> str:
        return (f"fastmix.{type(self).__name__}(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"cutmix_minmax={self.cutmix_minmax}, prob={self.mix_prob}, switch_prob={self.switch_prob}, "
                f"mode={self.mode!r}, correct_lam={self.correct_lam}, label_smoothing={self.label_smoothing}, "
                f"num_classes={self.num_classes}, multi_label={self.multi_label})")


class FastCollateMixup(Mixup):
    """A DataLoader ``collate_fn`` like timm 1.0.31's ``FastCollateMixup``: stacks ``(uint8 CHW image, label)``
    samples (numpy arrays or tensors; labels int class indices, or dense multi-hot vectors with ``multi_label``) and
    mixes the uint8 batch. Takes ``Mixup``'s arguments, in timm's order.

    Returns ``(images uint8 (B, C, H, W), targets float32 (B, K))`` on the CPU. Mode "half" (timm's): elem
    parameters for the first B/2 samples, each mixed with sample B-1-i, and only those B/2 samples and targets are
    returned. ``mixup_enabled = False`` stops mixing; targets are still smoothed. timm's ``PrefetchLoader`` forwards
    its ``mixup_enabled`` only to timm's own class (an ``isinstance`` check), so with timm's loader set it on this
    object (``loader.loader.collate_fn``) when mixing should stop. Differences from timm beyond those of ``Mixup``:
    odd batches work (in "half" mode the middle sample is left out), and the samples' arrays are never modified.
    """

    MODES = ("batch", "pair", "elem", "half")

    def __call__(self, batch, _=None):
        """Stacks the images into a new batch and mixes it in place (no second batch-sized buffer; ``inplace`` is
        moot here). Numpy arrays (and CPU tensors among them) are stacked by numpy in one call; ``torch.stack``
        would take a tensor made per sample first (2-3 us each)."""
        images = [image for image, _ in batch]
        images = (torch.stack(images) if all(isinstance(image, torch.Tensor) for image in images)
                  else torch.from_numpy(np.stack(images)))
        if images.dtype != torch.uint8:
            raise TypeError(f"FastCollateMixup takes uint8 images, got dtype {images.dtype}")
        targets = default_collate([label for _, label in batch])
        x_mixed, y_mixed, _ = self._mix(images, targets, inplace=True)
        if self.mode == "half":
            return x_mixed[: len(batch) // 2], y_mixed[: len(batch) // 2]
        return x_mixed, y_mixed
