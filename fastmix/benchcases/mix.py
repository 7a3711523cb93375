"""Per-sample Mixup/CutMix benchmark cases: fastmix per backend vs the reference vs the peers' loops.

The peers are written from their documented behaviour (timm and torchvision do not install beside this torch):
timm's "elem" mode (numpy draws on the host, a Python loop over the samples, flip partners) and torchvision v2
(one lam per batch, ``roll(1, 0)`` partners, a copy).
"""

from __future__ import annotations

import numpy as np
import torch

import fastmix
from fastmix import _backend
from fastmix.bench import Case


def timm_elem_mixup(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """timm ``_mix_elem`` for Mixup: host Beta draws, then ``x[i] = x[i] lam_i + x_orig[j] (1 - lam_i)`` per i."""
    batch = x.size(0)
    lam = np.random.beta(alpha, alpha, size=batch).astype(np.float32)
    x_orig = x.clone()
    for i in range(batch):
        j = batch - 1 - i
        if lam[i] != 1.0:
            x[i] = x[i] * lam[i] + x_orig[j] * (1 - lam[i])
    return x


def timm_elem_cutmix(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """timm ``_mix_elem`` for CutMix: host Beta draw and ``rand_bbox`` per sample, then a per-sample paste."""
    batch, height, width = x.size(0), x.size(-2), x.size(-1)
    x_orig = x.clone()
    for i in range(batch):
        j = batch - 1 - i
        ratio = np.sqrt(1 - np.random.beta(alpha, alpha))
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = np.random.randint(0, height), np.random.randint(0, width)
        y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
        x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
        x[i][:, y0:y1, x0:x1] = x_orig[j][:, y0:y1, x0:x1]
    return x


def torchvision_mixup(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """torchvision v2 MixUp: one lam per batch, partner ``roll(1, 0)``, written into the rolled copy."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return x.roll(1, 0).mul_(1.0 - lam).add_(x.mul(lam))


def torchvision_cutmix(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """torchvision v2 CutMix: one lam and one box per batch, pasted into a clone from ``roll(1, 0)``."""
    height, width = x.shape[-2:]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    r_x, r_y = torch.randint(width, (1,)), torch.randint(height, (1,))
    half_w, half_h = int(0.5 * width * (1 - lam) ** 0.5), int(0.5 * height * (1 - lam) ** 0.5)
    x0, y0 = int(torch.clamp(r_x - half_w, min=0)), int(torch.clamp(r_y - half_h, min=0))
    x1, y1 = int(torch.clamp(r_x + half_w, max=width)), int(torch.clamp(r_y + half_h, max=height))
    out = x.clone()
    out[..., y0:y1, x0:x1] = x.roll(1, 0)[..., y0:y1, x0:x1]
    return out


def cases(device: torch.device, quick: bool) -> list[Case]:
    batches = ((32,) if quick else (32, 256)) if device.type == "cuda" else ((4,) if quick else (4, 16))
    out = []
    for op, fn, timm_loop, torchvision_fn in (("mixup", fastmix.mixup, timm_elem_mixup, torchvision_mixup),
                                              ("cutmix", fastmix.cutmix, timm_elem_cutmix, torchvision_cutmix)):
        for batch in batches:
            for dtype in (torch.float32, torch.uint8):
                x = torch.randn(batch, 3, 224, 224, device=device).mul(60).add(128).clamp(0, 255).to(dtype)
                y = torch.randint(0, 1000, (batch,), device=device)
                generator = torch.Generator(device=device).manual_seed(0)
                providers = {}
                for backend in ("cuda", "triton", "cpu", "reference"):
                    if not _backend.unavailable_reason(backend, device.type):
                        name = "reference" if backend == "reference" else f"fastmix-{backend}"
                        providers[name] = (lambda b=backend, f=fn, x=x, y=y, g=generator: f(
                            x, y, num_classes=1000, generator=g, backend=b))
                providers["timm-elem"] = lambda t=timm_loop, x=x: t(x.clone())
                if not (op == "mixup" and dtype == torch.uint8):  # torchvision's MixUp fails on uint8
                    providers["torchvision"] = lambda t=torchvision_fn, x=x: t(x)
                copy_target = torch.empty_like(x)
                out.append(Case(op, tuple(x.shape), dtype, providers, floor=lambda d=copy_target, s=x: d.copy_(s),
                                bytes_moved=2 * x.numel() * x.element_size()))
    return out
