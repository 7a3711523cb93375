"""Mixup/CutMix cases: ``fastmix.mixup``, ``fastmix.cutmix``, ``fastmix.Mixup`` in every mode and mixer, and
``fastmix.FastCollateMixup`` on uint8 batches, against the reference and the peers (timm, torchvision, kornia).

The timm providers mutate x in place, as timm does: they run on a work copy made once, so the timing has no clone
that timm would not do. fastmix returns new tensors (its default); the ``Mixup`` cases also time
``fastmix.Mixup(inplace=True)`` on its own work copy, the like-for-like comparison with timm.
"""

from __future__ import annotations

import numpy as np
import torch

import fastmix
from fastmix.bench import Case, backend_providers, copy_floor, timed_backends
from fastmix.benchcases import image_batch, peers
from fastmix.ops.mix import BACKENDS

CLASSES = 1000
MIXERS = {"mixup": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
          "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
          "mixup+cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}  # timm's ImageNet recipe


def labels(batch: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, CLASSES, (batch,), device=device, generator=torch.Generator(device=device).manual_seed(1))


def function_case(op: str, batch: int, device: torch.device, image_side: int) -> Case:
    """``fastmix.mixup`` / ``fastmix.cutmix`` (per-sample lam, random partners) vs torchvision, kornia, timm elem."""
    fn = {"mixup": fastmix.mixup, "cutmix": fastmix.cutmix}[op]
    x, y = image_batch(batch, image_side, device), labels(batch, device)
    generator = torch.Generator(device=device).manual_seed(0)
    providers = backend_providers(lambda b: fn(x, y, num_classes=CLASSES, generator=generator, backend=b), device,
                                  BACKENDS)
    notes = {}
    torchvision_name, torchvision, notes[torchvision_name] = peers.torchvision_mixer(op, CLASSES)
    providers[torchvision_name] = lambda: torchvision(x, y)
    kornia = peers.kornia_mixer(op)
    if kornia is not None:
        kornia_name, kornia_mixer, notes[kornia_name] = kornia
        providers[kornia_name] = lambda: kornia_mixer(x, y)
    timm_name, timm, note = peers.timm_mixup(mode="elem", label_smoothing=0.0, num_classes=CLASSES, **MIXERS[op])
    work = x.clone()
    providers[f"{timm_name}-elem"] = lambda: timm(work, y)
    notes[f"{timm_name}-elem"] = note + ", mode='elem' (one lam per sample, like fastmix's default)"
    return Case(op, tuple(x.shape), x.dtype, providers, copy_floor(x), notes)


def mixup_class_case(mode: str, mixer: str, batch: int, device: torch.device, image_side: int) -> Case:
    """``fastmix.Mixup`` in one mode with one mixer vs timm's Mixup with the same arguments."""
    alphas = MIXERS[mixer]
    x, y = image_batch(batch, image_side, device), labels(batch, device)
    generator = torch.Generator(device=device).manual_seed(0)
    mixers = {b: fastmix.Mixup(mode=mode, num_classes=CLASSES, generator=generator, backend=b, **alphas)
              for b in timed_backends(device, BACKENDS)}
    providers = backend_providers(lambda b: mixers[b](x, y), device, BACKENDS)
    in_place = fastmix.Mixup(mode=mode, num_classes=CLASSES, generator=generator, inplace=True, **alphas)
    in_place_work = x.clone()
    providers["fastmix-inplace"] = lambda: in_place(in_place_work, y)
    timm_name, timm, note = peers.timm_mixup(mode=mode, num_classes=CLASSES, **alphas)
    work = x.clone()
    providers[timm_name] = lambda: timm(work, y)
    notes = {timm_name: note,
             "fastmix-inplace": "fastmix.Mixup(inplace=True), default backend, mixing a work copy in place as timm "
                                "does (the batch mode's CutMix touches only the box)"}
    return Case(f"Mixup {mode} {mixer}", tuple(x.shape), x.dtype, providers, copy_floor(x), notes,
                extra={"mode": mode, "mixer": mixer})


def collate_case(mode: str, batch: int, image_side: int) -> Case:
    """``fastmix.FastCollateMixup`` on a DataLoader batch of (uint8 CHW numpy image, int label) vs timm's, on the
    CPU (a collate_fn runs in the loader's workers)."""
    cpu = torch.device("cpu")
    x = image_batch(batch, image_side, cpu, torch.uint8)
    items = [(image, int(label)) for image, label in zip(x.numpy(), labels(batch, cpu))]
    kwargs = dict(mode=mode, num_classes=CLASSES, **MIXERS["mixup+cutmix"])
    generator = torch.Generator().manual_seed(0)
    collates = {b: fastmix.FastCollateMixup(generator=generator, backend=b, **kwargs)
                for b in timed_backends(cpu, ("cpu", "reference"))}
    providers = backend_providers(lambda b: collates[b](items), cpu, ("cpu", "reference"))
    timm_name, timm, note = peers.timm_fast_collate(**kwargs)
    providers[timm_name] = lambda: timm(items)
    stacked = torch.from_numpy(np.stack([image for image, _ in items]))
    return Case(f"FastCollateMixup {mode}", tuple(x.shape), torch.uint8, providers, copy_floor(stacked),
                {timm_name: note}, extra={"mode": mode})


def cases(device: torch.device, s) -> list[Case]:
    side = s.image_side
    return [*(function_case(op, batch, device, side) for op in ("mixup", "cutmix") for batch in s.batches),
            *(mixup_class_case(mode, mixer, batch, device, side)
              for mode in ("batch", "pair", "elem") for mixer in MIXERS for batch in s.batches),
            *(collate_case(mode, batch, side) for mode in ("batch", "elem") for batch in s.batches)]
