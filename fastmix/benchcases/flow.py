"""Flow-Mixup cases: forward + backward of one Mixing module at a hidden state of a CNN block, per backend, vs the
naive autograd module (cat, lerp, a halving hook: the paper's Mixing module as written) vs the memory floor.

z is a feature map that requires grad, as a conv layer's output does; the backward takes the next layer's
gradient. Only the module is timed, not the convolutions around it. The floor moves what the module must:
the forward reads z and writes [z, z_mixed], the backward reads their gradient and writes z's, 6 |z| bytes.
"""

from __future__ import annotations

import torch

import fastmix
from fastmix import _backend, _random
from fastmix.bench import Case
from fastmix.reference import flow as reference

GPU_SHAPES = ((64, 256, 56, 56), (256, 512, 28, 28))
CPU_SHAPES = ((8, 32, 14, 14), (16, 64, 14, 14))


def naive_module(z: torch.Tensor, generator: torch.Generator, alpha: float = 3.0) -> torch.Tensor:
    """The Mixing module in plain autograd, drawing p and the shuffle on the device like fastmix does."""
    lam = _random.sample_beta(alpha, 1, z.device, generator).expand(z.size(0))
    perm = torch.randperm(z.size(0), generator=generator, device=z.device)
    return reference.flow_mix(z, lam, perm, 1, True)


def cases(device: torch.device, quick: bool) -> list[Case]:
    shapes = GPU_SHAPES if device.type == "cuda" else CPU_SHAPES
    out = []
    for shape in shapes[:1] if quick else shapes:
        for dtype in (torch.float32, torch.bfloat16):
            z = torch.randn(shape, device=device, dtype=dtype).requires_grad_()
            grad = torch.randn((2 * shape[0], *shape[1:]), device=device, dtype=dtype)
            generator = torch.Generator(device=device).manual_seed(0)

            def fastmix_step(backend, z=z, grad=grad, generator=generator):
                z_out, _ = fastmix.flow_mix(z, generator=generator, backend=backend)
                return torch.autograd.grad(z_out, z, grad)

            providers = {}
            for backend in ("cuda", "triton", "reference"):
                if not _backend.unavailable_reason(backend, device.type):
                    providers[f"fastmix-{backend}"] = lambda b=backend: fastmix_step(b)
            providers["naive"] = lambda z=z, grad=grad, g=generator: torch.autograd.grad(naive_module(z, g), z, grad)
            source = torch.empty(3 * z.numel(), device=device, dtype=dtype)
            target = torch.empty_like(source)
            out.append(Case("flow_mix fwd+bwd", tuple(shape), dtype, providers, baseline="naive",
                            floor=lambda d=target, s=source: d.copy_(s), bytes_moved=6 * z.numel() * z.element_size()))
    return out
