"""Backend selection: ``backend=`` per call (strict), else ``FASTMIX_BACKEND`` where it applies, else the op's default.

An unavailable backend asked for by ``backend=`` raises; there is no silent fallback from an explicit choice.
"""

from __future__ import annotations

import os

import torch

from fastmix import _native

BACKENDS = ("cuda", "triton", "reference", "cpu")
# The backends of an op unless it says otherwise: "cpu" (C++ CPU kernels) only for ops that have one.
DEFAULT_SUPPORTED = ("cuda", "triton", "reference")


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


@torch.compiler.assume_constant_result
def unavailable_reason(backend: str, device_type: str) -> str:
    """Why ``backend`` cannot run on tensors of ``device_type``, or ``""`` when it can.

    torch.compile runs this eagerly while tracing and keeps the answer as a constant: the lookup calls into
    fastmix._C (driver version, device count) and imports triton, none of which can be traced, and even the first
    call of a process may happen inside a compiled region.
    """
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


def preferred_backend() -> str | None:
    """The process-wide preference ``FASTMIX_BACKEND`` (None when unset); a name outside BACKENDS raises."""
    name = os.environ.get("FASTMIX_BACKEND") or None
    if name is not None and name not in BACKENDS:
        raise ValueError(f"FASTMIX_BACKEND must be one of {BACKENDS} or unset, got {name!r}")
    return name


def check_name(backend, supported: tuple, *, default_allowed: bool = True) -> str | None:
    """``backend`` if it is one of ``supported`` (an op's backends) or, where ``default_allowed``, None (the op's
    default), else a ValueError: checked where a backend is given (a module's constructor, a custom op's launcher),
    not first where it is used."""
    if backend is None and default_allowed:
        return None
    if backend not in supported:
        allowed = f"{supported} or None" if default_allowed else f"{supported}"
        raise ValueError(f"backend must be one of {allowed}, got {backend!r}")
    return backend


def resolve(backend: str | None, device: torch.device, cuda_default: str = "cuda", cpu_default: str = "reference",
            supported: tuple = DEFAULT_SUPPORTED) -> str:
    """The backend that runs an op on ``device``.

    ``backend`` (per call) is strict: a name outside ``supported`` (the op's backends) raises a ValueError, an
    unavailable one a RuntimeError. Without it, ``FASTMIX_BACKEND`` is a preference, taken where the op supports
    that backend and it is available for ``device``, so one setting serves a whole program; elsewhere the op's
    default runs. The default on CUDA tensors is ``cuda_default``, the op's fastest backend per the benchmarks,
    or, when that is not available (e.g. a wheel without CUDA kernels), the next available of ``supported``; on
    other tensors ``cpu_default`` ("cpu" for an op with a C++ kernel, when fastmix._C is built), else the
    reference (vectorised PyTorch).
    """
    device_type = device.type  # read once: torch.device.type builds a new str each time
    if check_name(backend, supported) is not None:
        reason = unavailable_reason(backend, device_type)
        if reason:
            raise RuntimeError(f"fastmix backend {backend!r} is not available for {device_type} tensors: {reason}")
        return backend
    preferred = preferred_backend()
    if preferred in supported and not unavailable_reason(preferred, device_type):
        return preferred
    if device_type != "cuda":
        return cpu_default if not unavailable_reason(cpu_default, device_type) else "reference"
    preference = (cuda_default, *(b for b in supported if b != cuda_default))
    return next(b for b in preference if not unavailable_reason(b, "cuda"))
