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
    """``call(inputs, backend, generator)`` runs the public call on ``make_inputs(device, dtype, batch, classes)``
    and returns the tensor whose backward is counted (None for an op without gradients, ``differentiable=False``).
    ``backends``: the backends it can be forced to."""

    name: str
    make_inputs: Callable[[torch.device], dict]
    call: Callable[[dict, str | None, torch.Generator | None], torch.Tensor | None]
    backends: tuple[str, ...]
    forward_budget: int = 3
    differentiable: bool = True


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(device: torch.device, dtype=torch.float32, batch: int = BATCH, classes: int = CLASSES) -> dict:
    g = _generator(0)
    x = torch.randn(batch, 3, 8, 10, generator=g).to(device, dtype).requires_grad_()
    return {"x": x, "y": torch.randint(0, classes, (batch,), generator=g).to(device), "classes": classes}


def _features(device: torch.device, dtype=torch.float32, batch: int = BATCH, classes: int = CLASSES) -> dict:
    return {"z": torch.randn(batch, 16, generator=_generator(1)).to(device, dtype).requires_grad_()}


def _logits(device: torch.device, dtype=torch.float32, batch: int = BATCH, classes: int = CLASSES) -> dict:
    g = _generator(2)
    return {
        "logits": torch.randn(batch, classes, generator=g).to(device, dtype).requires_grad_(),
        "target_logits": torch.randn(batch, classes, generator=g).to(device, dtype).requires_grad_(),
        "y_a": torch.randint(0, classes, (batch,), generator=g).to(device),
        "y_b": torch.randint(0, classes, (batch,), generator=g).to(device),
        "lam": torch.rand(batch, generator=g).to(device),
        "partner": torch.randperm(batch, generator=g).to(device),
        "targets": (torch.rand(batch, classes, generator=g) < 0.3).float().to(device),
        "weights": torch.rand(batch, classes, generator=g).to(device),
    }


def _gmm_values(device: torch.device, dtype=torch.float64, batch: int = 80, classes: int = 3) -> dict:
    """``batch`` values in ``classes`` groups, two well-separated clusters."""
    g = _generator(3)
    half = batch // 2
    values = torch.cat([torch.randn(half, generator=g) * 0.1, torch.randn(batch - half, generator=g) * 0.1 + 1])
    groups = torch.randint(0, classes, (batch,), generator=g).to(device)
    return {"values": values.to(device, dtype), "groups": groups, "classes": classes}


def _gmm_posterior_inputs(device: torch.device, dtype=torch.float64, batch: int = 80, classes: int = 3) -> dict:
    """``_gmm_values`` and the reference's fit of them."""
    inputs = _gmm_values(device, dtype, batch, classes)
    inputs["fit"] = fastmix.fit_gmm2(inputs["values"], inputs["groups"], n_groups=classes, backend="reference")
    return inputs


def _timm_mixup(mode: str) -> Callable:
    def call(inputs, backend, generator):
        mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, num_classes=inputs["classes"],
                              generator=generator, backend=backend)
        return mixer(inputs["x"], inputs["y"])[0]

    return call


def _fit_gmm2(inputs, backend, generator):
    fastmix.fit_gmm2(inputs["values"], inputs["groups"], n_groups=inputs["classes"], generator=generator,
                     backend=backend)
    return None  # no gradients


MIX_BACKENDS = ("cuda", "triton", "reference", "cpu")
LOSS_BACKENDS = ("triton", "reference")
CASES = (
    OpCase("zeta_mixup", _images, lambda i, b, g: fastmix.zeta_mixup(i["x"], i["y"], num_classes=i["classes"],
                                                                       generator=g, backend=b)[0],
           ("cuda", "triton", "reference")),
    OpCase("mixup", _images, lambda i, b, g: fastmix.mixup(i["x"], i["y"], num_classes=i["classes"], generator=g,
                                                           backend=b)[0], MIX_BACKENDS),
    OpCase("cutmix", _images, lambda i, b, g: fastmix.cutmix(i["x"], i["y"], num_classes=i["classes"], generator=g,
                                                             backend=b)[0], MIX_BACKENDS),
    *(OpCase(f"Mixup-{mode}", _images, _timm_mixup(mode), MIX_BACKENDS) for mode in ("batch", "pair", "elem")),
    OpCase("flow_mix", _features, lambda i, b, g: fastmix.flow_mix(i["z"], generator=g, backend=b)[0],
           ("cuda", "triton", "reference")),
    OpCase("lumix_lambda", _logits, lambda i, b, g: fastmix.lumix_lambda(0.7, i["logits"], i["y_a"], i["y_b"],
                                                                         generator=g, backend=b),
           LOSS_BACKENDS, differentiable=False),
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
    OpCase("fit_gmm2", _gmm_values, _fit_gmm2, ("cuda", "triton", "reference", "cpu"), forward_budget=7,
           differentiable=False),
    OpCase("gmm_posterior", _gmm_posterior_inputs,
           lambda i, b, g: fastmix.gmm_posterior(i["values"], i["groups"], i["fit"], backend=b),
           ("triton", "reference"), differentiable=False),
)
