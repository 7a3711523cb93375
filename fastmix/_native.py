"""Loading fastmix._C, the torch-free native core, and the facts the dispatcher needs from it."""

from __future__ import annotations

import torch

try:
    from fastmix import _C
except ImportError as error:  # a source tree that was never built
    _C = None
    _IMPORT_ERROR = str(error)
else:
    _IMPORT_ERROR = ""

# Dtype codes shared with csrc/common.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3, torch.uint8: 4}


def cuda_unavailable_reason_for(
    built_with_cuda: bool, build_version: int, driver_version: int, device_count: int
) -> str:
    """Why the CUDA backend cannot run given these facts, or ``""`` when it can.

    Versions are CUDA's integers (13000 for 13.0). A driver older than the toolkit that built the
    kernels cannot load them, so that is reported instead of failing at the first launch.
    """
    if not built_with_cuda:
        return "fastmix._C was built without CUDA (no nvcc at build time, or FASTMIX_BUILD_CUDA=0)"
    if driver_version == 0:
        return "no CUDA driver is installed"
    if driver_version < build_version:
        return (
            f"the CUDA driver supports CUDA {format_cuda_version(driver_version)}, older than the CUDA "
            f"{format_cuda_version(build_version)} these kernels were built with: update the driver or "
            "install a wheel built for an older CUDA"
        )
    if device_count == 0:
        return "no CUDA device is visible"
    return ""


def format_cuda_version(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def native_unavailable_reason() -> str:
    return "" if _C is not None else f"fastmix._C is not importable ({_IMPORT_ERROR})"


def cuda_unavailable_reason() -> str:
    reason = native_unavailable_reason()
    if reason:
        return reason
    if not _C.built_with_cuda:
        return cuda_unavailable_reason_for(False, 0, 0, 0)
    return cuda_unavailable_reason_for(True, _C.cuda_build_version, _C.cuda_driver_version(), _C.cuda_device_count())


def native():
    """The fastmix._C module; raises if it is not built."""
    if _C is None:
        raise RuntimeError(native_unavailable_reason())
    return _C


def stream_handle(device: torch.device) -> int:
    """The raw handle of the caller's current CUDA stream on ``device`` (never the default stream)."""
    return torch.cuda.current_stream(device).cuda_stream


def pointer(name: str, tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> int:
    """The data pointer of ``tensor`` for a native kernel, which reads it as rows (any stride between rows, the
    rest dense) of ``dtype`` on ``device``; a ValueError naming ``name`` otherwise. Keep ``tensor`` alive (in a
    named local) until the kernel returns."""
    if tensor.dtype != dtype or tensor.device != device:
        raise ValueError(f"{name} must be a {dtype} tensor on {device} for the native kernel, got {tensor.dtype} on "
                         f"{tensor.device}")
    expected = 1
    for size, stride in zip(reversed(tensor.shape[1:]), reversed(tensor.stride()[1:])):
        if size > 1 and stride != expected:
            raise ValueError(f"{name} must be dense after its first dim for the native kernel, got strides "
                             f"{tensor.stride()} for shape {tuple(tensor.shape)}")
        expected *= size
    return tensor.data_ptr()
