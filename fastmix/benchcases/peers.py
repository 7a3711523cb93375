"""The peer libraries' mixers, for timing beside fastmix: the real library when it imports, else a copy of its code
path written from its documented behaviour (labelled "-like" with the version it follows).

timm 1.0.16-1.0.28 (``timm.data.Mixup`` / ``FastCollateMixup``): numpy's global RNG on the host; batch mode mixes x
in place (``mul_``/``add_`` with the flipped batch, or one box pasted from it); elem and pair modes clone x and loop
in Python over the samples; targets are smoothed one-hots mixed with the flipped batch's. ``FastCollateMixup`` mixes
the uint8 numpy images of a DataLoader batch one by one (float32 math, ``np.rint``) into a uint8 tensor.
torchvision v2 ``MixUp`` / ``CutMix``: one lam per batch from torch's Beta, partners by ``roll(1, 0)``, out of
place, one-hot float32 labels. kornia ``RandomMixUpV2`` / ``RandomCutMixV2`` are used only when installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata

import numpy as np
import torch

TIMM_VERSION = "1.0.16-1.0.28"
TORCHVISION_VERSION = "transforms.v2 (2026)"


def versions() -> dict[str, str | None]:
    """The installed version of each peer library, None where it is not installed (or does not import)."""
    out = {}
    for name in ("timm", "torchvision", "kornia", "scikit-learn"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def importable(module: str):
    """The module, or None when it is missing or fails to import (torchvision without a matching build)."""
    try:
        return importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install raises anything from RuntimeError to OSError
        return None


def provider_name(library: str, module: str) -> tuple[str, bool]:
    """("timm", True) when the real library imports, else ("timm-like", False)."""
    return (library, True) if importable(module) is not None else (f"{library}-like", False)


def smoothed_one_hot(target: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """timm's ``one_hot`` with its smoothing: off = s / K everywhere, on = 1 - s + off at the class."""
    off = smoothing / classes
    return torch.full((target.size(0), classes), off, device=target.device).scatter_(
        1, target.long().view(-1, 1), 1.0 - smoothing + off)


def timm_target(target: torch.Tensor, classes: int, lam, smoothing: float) -> torch.Tensor:
    """timm's ``mixup_target``: lam times the smoothed one-hot plus (1 - lam) times the flipped batch's."""
    own = smoothed_one_hot(target, classes, smoothing)
    return own * lam + smoothed_one_hot(target.flip(0), classes, smoothing) * (1.0 - lam)


class TimmLikeMixup:
    """A copy of timm 1.0.16-1.0.28's ``Mixup`` code path (modes batch, pair, elem), host numpy draws and all."""

    def __init__(self, mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, mode="batch",
                 correct_lam=True, label_smoothing=0.1, num_classes=1000):
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob
        self.mode, self.correct_lam, self.smoothing, self.classes = mode, correct_lam, label_smoothing, num_classes

    def _draw_mixer(self, count: int | None):
        """(lam, use_cutmix) as numpy arrays of ``count`` draws, or scalars for ``count=None`` (batch mode: one
        Beta draw with the chosen mixer's alpha; per-element modes draw both Betas and select)."""
        both = self.mixup_alpha > 0 and self.cutmix_alpha > 0
        use_cutmix = (np.random.random_sample(count) < self.switch_prob if both
                      else np.full(count or (), self.cutmix_alpha > 0))
        if both and count is not None:
            lam = np.where(use_cutmix, np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=count),
                           np.random.beta(self.mixup_alpha, self.mixup_alpha, size=count))
        else:
            alpha = self.cutmix_alpha if np.all(use_cutmix) else self.mixup_alpha
            lam = np.random.beta(alpha, alpha, size=count)
        return lam, use_cutmix

    def _elem_params(self, count: int):
        lam, use_cutmix = self._draw_mixer(count)
        return np.where(np.random.random_sample(count) < self.prob, lam.astype(np.float32), np.float32(1.0)), use_cutmix

    def _batch_params(self):
        if np.random.random_sample() >= self.prob:
            return 1.0, False
        lam, use_cutmix = self._draw_mixer(None)
        return float(lam), bool(use_cutmix)

    def box(self, height: int, width: int, lam: float):
        """timm's ``rand_bbox`` + ``cutmix_bbox_and_lam``: truncated cut sides, centre cy then cx, clipped."""
        ratio = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = np.random.randint(0, height), np.random.randint(0, width)
        y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
        x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
        if self.correct_lam:
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        return (y0, y1, x0, x1), lam

    def _mix_batch(self, x: torch.Tensor):
        lam, use_cutmix = self._batch_params()
        if lam == 1.0:
            return 1.0
        if use_cutmix:
            (y0, y1, x0, x1), lam = self.box(x.size(-2), x.size(-1), lam)
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
        else:
            flipped = x.flip(0).mul_(1.0 - lam)
            x.mul_(lam).add_(flipped)
        return lam

    def _mix_elem(self, x: torch.Tensor):
        batch = x.size(0)
        lam_batch, use_cutmix = self._elem_params(batch)
        source = x.clone()
        for i in range(batch):
            j, lam = batch - 1 - i, lam_batch[i]
            if lam != 1.0:
                if use_cutmix[i]:
                    (y0, y1, x0, x1), lam_batch[i] = self.box(x.size(-2), x.size(-1), lam)
                    x[i][:, y0:y1, x0:x1] = source[j][:, y0:y1, x0:x1]
                else:
                    x[i] = x[i] * lam + source[j] * (1.0 - lam)
        return torch.tensor(lam_batch, device=x.device, dtype=x.dtype).unsqueeze(1)

    def _mix_pair(self, x: torch.Tensor):
        batch = x.size(0)
        lam_batch, use_cutmix = self._elem_params(batch // 2)
        source = x.clone()
        for i in range(batch // 2):
            j, lam = batch - 1 - i, lam_batch[i]
            if lam != 1.0:
                if use_cutmix[i]:
                    (y0, y1, x0, x1), lam_batch[i] = self.box(x.size(-2), x.size(-1), lam)
                    x[i][:, y0:y1, x0:x1] = source[j][:, y0:y1, x0:x1]
                    x[j][:, y0:y1, x0:x1] = source[i][:, y0:y1, x0:x1]
                else:
                    x[i] = x[i] * lam + source[j] * (1.0 - lam)
                    x[j] = x[j] * lam + source[i] * (1.0 - lam)
        lam_batch = np.concatenate((lam_batch, lam_batch[::-1]))
        return torch.tensor(lam_batch, device=x.device, dtype=x.dtype).unsqueeze(1)

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        """Mixes x IN PLACE (as timm does) and returns ``(x, mixed smoothed targets)``."""
        assert x.size(0) % 2 == 0, "Batch size should be even when using this"
        lam = {"elem": self._mix_elem, "pair": self._mix_pair}.get(self.mode, self._mix_batch)(x)
        return x, timm_target(target, self.classes, lam, self.smoothing)


class TimmLikeFastCollateMixup(TimmLikeMixup):
    """A copy of timm 1.0.16-1.0.28's ``FastCollateMixup`` (batch and elem modes) on (uint8 CHW numpy image, label)
    items."""

    def _paste_or_blend(self, own: np.ndarray, partner: np.ndarray, lam: float, use_cutmix: bool, box) -> np.ndarray:
        if use_cutmix:
            y0, y1, x0, x1 = box
            own = own.copy()
            own[:, y0:y1, x0:x1] = partner[:, y0:y1, x0:x1]
            return own
        mixed = own.astype(np.float32) * lam + partner.astype(np.float32) * (1.0 - lam)
        return np.rint(mixed, out=mixed).astype(np.uint8)

    def __call__(self, batch, _=None):
        size = len(batch)
        assert size % 2 == 0, "Batch size should be even when using this"
        images = [item[0] for item in batch]
        height, width = images[0].shape[-2:]
        output = torch.zeros((size, *images[0].shape), dtype=torch.uint8)
        if self.mode == "elem":
            lam_batch, use_cutmix = self._elem_params(size)
            for i in range(size):
                mixed = images[i]
                if lam_batch[i] != 1.0:
                    box = None
                    if use_cutmix[i]:
                        box, lam_batch[i] = self.box(height, width, lam_batch[i])
                    mixed = self._paste_or_blend(images[i], images[size - 1 - i], lam_batch[i], use_cutmix[i], box)
                output[i] += torch.from_numpy(mixed)
            lam = torch.tensor(lam_batch).unsqueeze(1)
        else:
            lam, use_cutmix = self._batch_params()
            box = None
            if use_cutmix:
                box, lam = self.box(height, width, lam)
            for i in range(size):
                mixed = images[i]
                if lam != 1.0:
                    mixed = self._paste_or_blend(images[i], images[size - 1 - i], lam, use_cutmix, box)
                output[i] += torch.from_numpy(mixed)
        target = torch.tensor([item[1] for item in batch], dtype=torch.int64)
        return output, timm_target(target, self.classes, lam, self.smoothing)


def torchvision_like_mixup(x: torch.Tensor, y: torch.Tensor, classes: int, alpha: float = 1.0):
    """torchvision v2 ``MixUp``: one lam per batch, partners ``roll(1, 0)``, written into the rolled copies."""
    labels = torch.nn.functional.one_hot(y, classes).float()
    lam = float(torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha])).sample())
    return (x.roll(1, 0).mul_(1.0 - lam).add_(x.mul(lam)),
            labels.roll(1, 0).mul_(1.0 - lam).add_(labels.mul(lam)))


def torchvision_like_cutmix(x: torch.Tensor, y: torch.Tensor, classes: int, alpha: float = 1.0):
    """torchvision v2 ``CutMix``: one lam and one box per batch (x centre drawn first, half sides
    ``int(0.5 sqrt(1 - lam) side)``, clamped), pasted into a clone from ``roll(1, 0)``; lam corrected to the area."""
    labels = torch.nn.functional.one_hot(y, classes).float()
    height, width = x.shape[-2:]
    lam = float(torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha])).sample())
    r_x, r_y = torch.randint(width, (1,)), torch.randint(height, (1,))
    half_w, half_h = int(0.5 * width * (1 - lam) ** 0.5), int(0.5 * height * (1 - lam) ** 0.5)
    x0, y0 = int(torch.clamp(r_x - half_w, min=0)), int(torch.clamp(r_y - half_h, min=0))
    x1, y1 = int(torch.clamp(r_x + half_w, max=width)), int(torch.clamp(r_y + half_h, max=height))
    out = x.clone()
    out[..., y0:y1, x0:x1] = x.roll(1, 0)[..., y0:y1, x0:x1]
    lam = 1.0 - (x1 - x0) * (y1 - y0) / (width * height)
    return out, labels.roll(1, 0).mul_(1.0 - lam).add_(labels.mul(lam))


def torchvision_mixer(kind: str, classes: int):
    """``(name, fn(x, y), note)`` for torchvision v2's MixUp or CutMix: the real one when it imports."""
    name, real = provider_name("torchvision", "torchvision.transforms.v2")
    if real:
        from torchvision.transforms import v2

        mixer = (v2.MixUp if kind == "mixup" else v2.CutMix)(num_classes=classes)
        return name, mixer, f"torchvision {versions()['torchvision']} v2.{'MixUp' if kind == 'mixup' else 'CutMix'}"
    fn = torchvision_like_mixup if kind == "mixup" else torchvision_like_cutmix
    return name, (lambda x, y: fn(x, y, classes)), (
        f"copy of torchvision {TORCHVISION_VERSION}'s {'MixUp' if kind == 'mixup' else 'CutMix'} code path "
        "(one lam per batch, roll(1, 0) partners, out of place)")


def kornia_mixer(kind: str):
    """``(name, fn(x, y), note)`` for kornia's RandomMixUpV2 / RandomCutMixV2, or None when kornia is missing."""
    augmentation = importable("kornia.augmentation")
    if augmentation is None:
        return None
    if kind == "mixup":
        mixer = augmentation.RandomMixUpV2(data_keys=["input", "class"])
    else:
        mixer = augmentation.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True)
    return "kornia", mixer, (f"kornia {versions()['kornia']} {type(mixer).__name__} (per-sample lam, randperm "
                             "partners, labels as (y, y[perm], lam) rows: no one-hot)")


def timm_mixup(**kwargs):
    """``(name, mixer, note)``: timm's Mixup when timm imports, else ``TimmLikeMixup``."""
    name, real = provider_name("timm", "timm.data")
    if real:
        from timm.data import Mixup

        return name, Mixup(**kwargs), f"timm {versions()['timm']} Mixup (mutates x in place)"
    return name, TimmLikeMixup(**kwargs), (f"copy of timm {TIMM_VERSION}'s Mixup code path (numpy draws on the "
                                           "host, mutates x in place; elem/pair: a Python loop over the samples)")


def timm_fast_collate(**kwargs):
    """``(name, collate_fn, note)``: timm's FastCollateMixup when timm imports, else ``TimmLikeFastCollateMixup``."""
    name, real = provider_name("timm", "timm.data")
    if real:
        from timm.data import FastCollateMixup

        return name, FastCollateMixup(**kwargs), f"timm {versions()['timm']} FastCollateMixup"
    return name, TimmLikeFastCollateMixup(**kwargs), (
        f"copy of timm {TIMM_VERSION}'s FastCollateMixup code path (numpy, one sample at a time, np.rint to uint8)")
