"""Flow-Mixup cases: forward + backward of one Mixing module at a hidden state of a CNN block, per backend, vs the
reference vs the paper's module in plain autograd (cat, lerp, a halving hook) vs the floor.

z is a feature map that requires grad, as a conv layer's output does; the backward takes the next layer's
gradient. Only the module is timed, not the convolutions around it. The floor moves what the module must:
the forward reads z and writes [z, z_mixed], the backward reads their gradient and writes z's, 6 |z| bytes.
"""

from __future__ import annotations

import torch

import fastmix
from fastmix import _random
from fastmix.bench import Case, backend_providers, bytes_floor
from fastmix.ops import flow as flow_ops
from fastmix.reference import flow as reference

CHANNELS, SIDE = 64, 14  # a ResNet block's hidden state, at CPU-friendly width


def paper_module(z: torch.Tensor, generator: torch.Generator, alpha: float = 3.0) -> torch.Tensor:
    """The Mixing module in plain autograd, drawing p and the shuffle on the device like fastmix does."""
    lam = _random.sample_beta(alpha, 1, z.device, generator).expand(z.size(0))
    perm = torch.randperm(z.size(0), generator=generator, device=z.device)
    return reference.flow_mix(z, lam, perm, 1, True)


def batch_case(batch: int, device: torch.device) -> Case:
    shape = (batch, CHANNELS, SIDE, SIDE)
    z = torch.randn(shape, device=device).requires_grad_()
    grad = torch.randn((2 * batch, *shape[1:]), device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def fastmix_step(backend):
        z_out, _ = fastmix.flow_mix(z, generator=generator, backend=backend)
        return torch.autograd.grad(z_out, z, grad)

    providers = backend_providers(fastmix_step, device, flow_ops.BACKENDS)
    providers["paper"] = lambda: torch.autograd.grad(paper_module(z, generator), z, grad)
    return Case("flow_mix fwd+bwd", shape, z.dtype, providers, bytes_floor(6 * z.numel() * z.element_size(), device),
                {"paper": "the paper's Mixing module (section III.C) in plain autograd: cat, lerp, a gradient-halving "
                          "hook"}, extra={"mode": "forward+backward"})


def cases(device: torch.device, s) -> list[Case]:
    return [batch_case(batch, device) for batch in s.batches]
