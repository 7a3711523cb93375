"""Every public op as a case the GPU-readiness tests share: inputs made apart from the call, so a test can count
what the call alone launches, and a backward where the op has one."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

import fastmix

BATCH, CLASSES = 6, 10


@dataclasses.dataclass(frozen=True)
class OpCase:
    """``call(inputs, backend, generator)`` runs the public call on ``make_inputs(device)`` and returns the tensor
    whose backward is counted (None for an op without gradients). ``backends``: the backends it can be forced to."""

    name: str
    make_inputs: Callable[[torch.device], dict]
    call: Callable[[dict, str | None, torch.Generator | None], torch.Tensor | None]
    backends: tuple[str, ...]
    forward_budget: int = 3


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(device: torch.device) -> dict:
    g = _generator(0)
    x = torch.randn(BATCH, 3, 8, 10, generator=g).to(device).requires_grad_()
    return {"x": x, "y": torch.randint(0, CLASSES, (BATCH,), generator=g).to(device)}


def _features(device: torch.device) -> dict:
    return {"z": torch.randn(BATCH, 16, generator=_generator(1)).to(device).requires_grad_()}


def _logits(device: torch.device) -> dict:
    g = _generator(2)
    logits = torch.randn(BATCH, CLASSES, generator=g).to(device).requires_grad_()
    return {
        "logits": logits,
        "target_logits": torch.randn(BATCH, CLASSES, generator=g).to(device).requires_grad_(),
        "y_a": torch.randint(0, CLASSES, (BATCH,), generator=g).to(device),
        "y_b": torch.randint(0, CLASSES, (BATCH,), generator=g).to(device),
        "lam": torch.rand(BATCH, generator=g).to(device),
        "partner": torch.randperm(BATCH, generator=g).to(device),
        "targets": (torch.rand(BATCH, CLASSES, generator=g) < 0.3).float().to(device),
        "weights": torch.rand(BATCH, CLASSES, generator=g).to(device),
    }


def _gmm_values(device: torch.device) -> dict:
    g = _generator(3)
    values = torch.cat([torch.randn(40, generator=g) * 0.1, torch.randn(40, generator=g) * 0.1 + 1])
    return {"values": values.to(device), "groups": torch.randint(0, 3, (80,), generator=g).to(device)}


def _timm_mixup(mode: str) -> Callable:
    def call(inputs, backend, generator):
        mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, num_classes=CLASSES, generator=generator,
                              backend=backend)
        return mixer(inputs["x"], inputs["y"])[0]

    return call


MIX_BACKENDS = ("cuda", "triton", "reference", "cpu")
LOSS_BACKENDS = ("triton", "reference")
CASES = (
    OpCase("zeta_mixup", _images, lambda i, b, g: fastmix.zeta_mixup(i["x"], i["y"], num_classes=CLASSES,
                                                                       generator=g, backend=b)[0],
           ("cuda", "triton", "reference")),
    OpCase("mixup", _images, lambda i, b, g: fastmix.mixup(i["x"], i["y"], num_classes=CLASSES, generator=g,
                                                           backend=b)[0], MIX_BACKENDS),
    OpCase("cutmix", _images, lambda i, b, g: fastmix.cutmix(i["x"], i["y"], num_classes=CLASSES, generator=g,
                                                             backend=b)[0], MIX_BACKENDS),
    *(OpCase(f"Mixup-{mode}", _images, _timm_mixup(mode), MIX_BACKENDS) for mode in ("batch", "pair", "elem")),
    OpCase("flow_mix", _features, lambda i, b, g: fastmix.flow_mix(i["z"], generator=g, backend=b)[0],
           ("cuda", "triton", "reference")),
    OpCase("lumix_lambda", _logits, lambda i, b, g: fastmix.lumix_lambda(0.7, i["logits"], i["y_a"], i["y_b"],
                                                                         generator=g), ("reference",)),
    OpCase("lumix_loss", _logits, lambda i, b, g: fastmix.lumix_loss(i["logits"], i["y_a"], i["y_b"], i["lam"],
                                                                     backend=b), LOSS_BACKENDS),
    OpCase("lamix_inputs", _images, lambda i, b, g: fastmix.lamix_inputs(i["x"], generator=g, backend=b)[0],
           MIX_BACKENDS),
    OpCase("lamix_loss", _logits, lambda i, b, g: fastmix.lamix_loss(i["logits"], i["target_logits"], i["y_a"],
                                                                     i["lam"], i["partner"], backend=b),
           LOSS_BACKENDS),
    OpCase("balancemix_loss", _logits, lambda i, b, g: fastmix.balancemix_loss(i["logits"], i["targets"],
                                                                               i["weights"], backend=b),
           LOSS_BACKENDS),
    OpCase("fit_gmm2", _gmm_values, lambda i, b, g: fastmix.fit_gmm2(i["values"], i["groups"], n_groups=3,
                                                                     generator=g, backend=b) and None,
           ("cuda", "triton", "reference", "cpu"), forward_budget=10),
)
