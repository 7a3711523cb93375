"""Backend selection: ``backend=`` per call, else ``FASTMIX_BACKEND``, else the per-op default.

An unavailable backend asked for by name raises; there is no silent fallback.
"""

from __future__ import annotations

import os

import torch

from fastmix import _native

BACKENDS = ("cuda", "triton", "reference", "cpu")
# The backends of an op unless it says otherwise: "cpu" (C++ CPU kernels) only for ops that have one.
DEFAULT_SUPPORTED = ("cuda", "triton", "reference")
NO_NATIVE_KERNEL = ("triton", "reference")  # ops with a Triton kernel only (the fused losses)


def _triton_unavailable_reason(device_type: str) -> str:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not importable ({error})"
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton runs on CPU tensors only under its interpreter (TRITON_INTERPRET=1)"
        return ""
    if device_type != "cuda":
        return f"Triton has no {device_type} target here"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return ""


# Availability never changes within a process; a plain dict (not functools.cache, which torch.compile warns about
# and traces through) remembers each answer.
_REASONS: dict[tuple[str, str], str] = {}


def unavailable_reason(backend: str, device_type: str) -> str:
    """Why ``backend`` cannot run on tensors of ``device_type``, or ``""`` when it can."""
    key = (backend, device_type)
    if key not in _REASONS:
        _REASONS[key] = _find_unavailable_reason(backend, device_type)
    return _REASONS[key]


def _find_unavailable_reason(backend: str, device_type: str) -> str:
    if backend == "reference":
        return ""
    if backend == "triton":
        return _triton_unavailable_reason(device_type)
    if backend == "cpu":
        if device_type != "cpu":
            return f"the C++ CPU kernels need CPU tensors, got {device_type} tensors"
        return _native.native_unavailable_reason()
    if backend == "cuda":
        if device_type != "cuda":
            return f"the CUDA kernels need CUDA tensors, got {device_type} tensors"
        return _native.cuda_unavailable_reason()
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(backend: str | None, device: torch.device, cuda_default: str = "cuda", cpu_default: str = "reference",
            supported: tuple = DEFAULT_SUPPORTED) -> str:
    """The backend that runs an op on ``device``.

    ``cuda_default`` is the op's fastest backend on CUDA tensors per the benchmarks; when it is not
    available there (e.g. a wheel without CUDA kernels), the next available of BACKENDS runs. CPU tensors
    run ``cpu_default`` ("cpu" for an op with a C++ kernel, when fastmix._C is built), else the reference
    (vectorised PyTorch). ``supported`` lists the op's backends.
    """
    name = backend if backend is not None else os.environ.get("FASTMIX_BACKEND") or None
    if name is None:
        if device.type != "cuda":
            return cpu_default if not unavailable_reason(cpu_default, device.type) else "reference"
        preference = (cuda_default, *(b for b in supported if b != cuda_default))
        return next(b for b in preference if not unavailable_reason(b, "cuda"))
    if name not in supported:
        raise ValueError(f"backend must be one of {supported} or None, got {name!r}")
    reason = unavailable_reason(name, device.type)
    if reason:
        raise RuntimeError(f"fastmix backend {name!r} is not available for {device.type} tensors: {reason}")
    return name
