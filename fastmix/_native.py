"""Loading fastmix._C, the torch-free native core, and the facts the dispatcher needs from it."""

from __future__ import annotations

from typing import NamedTuple

import torch

try:
    from fastmix import _C
except ImportError as error:  # a source tree that was never built
    _C = None
    _IMPORT_ERROR = str(error)
else:
    _IMPORT_ERROR = ""

_CPU = torch.device("cpu")
# Dtype codes shared with csrc/common.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3, torch.uint8: 4}


def cuda_unavailable_reason_for(
    built_with_cuda: bool, build_version: int, driver_version: int, device_count: int
) -> str:
    """Why the CUDA backend cannot run given these facts, or ``""`` when it can.

    Versions are CUDA's integers (13000 for 13.0). A driver of an older major version than the toolkit
    that built the kernels cannot load them, so that is reported instead of failing at the first launch;
    any driver of the same major version can (CUDA's minor version compatibility: the static runtime
    and SASS for each listed architecture).
    """
    if not built_with_cuda:
        return "fastmix._C was built without CUDA (no nvcc at build time, or FASTMIX_BUILD_CUDA=0)"
    if driver_version == 0:
        return "no CUDA driver is installed"
    if driver_version // 1000 < build_version // 1000:
        return (
            f"the CUDA driver supports CUDA {format_cuda_version(driver_version)}, older than the CUDA "
            f"{format_cuda_version(build_version)} these kernels were built with: update the driver or "
            f"install a wheel built for CUDA {driver_version // 1000}.x"
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


class Buffer(NamedTuple):
    """A tensor handed to a native kernel by ``launch``, with what the kernel assumes about it.

    ``dtype``: the dtype the kernel reads or writes (None: any). ``numel``: the element count it accesses
    (None: not checked). ``rows``: a 2-D view with unit column stride (``_layout.rows_view``), passed as two
    arguments, pointer and row stride; otherwise the tensor must be contiguous and is passed as its pointer.
    A named tuple rather than a frozen dataclass: as immutable, and built in half the time (a loss call builds
    several per launch).
    """

    tensor: torch.Tensor
    dtype: torch.dtype | None = None
    numel: int | None = None
    rows: bool = False


def launch(kernel: str, device: torch.device, *args):
    """Call ``fastmix._C.<kernel>`` with ``args``, every tensor in them replaced by its checked data pointer.

    The one path from a tensor to a native kernel: a plain tensor or a ``Buffer`` must be on ``device``, of its
    stated dtype and size, and contiguous (or rows, passed with their row stride); a failed check raises before
    anything runs. ``args`` keeps every tensor alive until the call returns, so no pointer outlives its memory
    while the kernel is queued (later frees are ordered after it on the stream by torch's allocator). On a CUDA
    device the call runs with that device current and gets the caller's current stream as its last argument.
    Every op's call passes its tensors through here (a loss call five), so the loop reads each tensor property once
    and formats a message only when a check fails (``_buffer_error``).
    """
    native_args = []
    append = native_args.append
    for argument, value in enumerate(args):
        if type(value) is Buffer:
            tensor, dtype, numel, rows = value
        elif isinstance(value, torch.Tensor):
            tensor, dtype, numel, rows = value, None, None, False
        else:
            append(value)
            continue
        if (tensor.device != device or (dtype is not None and tensor.dtype != dtype)
                or (numel is not None and tensor.numel() != numel)):
            raise _buffer_error(kernel, device, argument, value)
        if rows:
            strides = tensor.stride()
            if len(strides) != 2 or (strides[1] != 1 and tensor.size(1) > 1):
                raise _buffer_error(kernel, device, argument, value)
            append(tensor.data_ptr())
            append(strides[0])
        elif tensor.is_contiguous():
            append(tensor.data_ptr())
        else:
            raise _buffer_error(kernel, device, argument, value)
    function = getattr(native(), kernel)
    if device == _CPU or device.type != "cuda":  # torch.device.type builds a str (~0.3 us); == does not
        return function(*native_args)
    with torch.cuda.device(device):
        return function(*native_args, stream_handle(device))


def _buffer_error(kernel: str, device: torch.device, argument: int, value) -> Exception:
    """The error for the first check ``launch`` found failing on ``value`` (a tensor or a ``Buffer``), in the order
    device, dtype, size, layout."""
    tensor, dtype, numel, rows = value if type(value) is Buffer else Buffer(value)
    where = f"fastmix._C.{kernel} argument {argument}"
    if tensor.device != device:
        return ValueError(f"{where} is on {tensor.device}, the kernel runs on {device}")
    if dtype is not None and tensor.dtype != dtype:
        return TypeError(f"{where} must be {dtype}, got {tensor.dtype}")
    if numel is not None and tensor.numel() != numel:
        return ValueError(f"{where} must hold {numel} elements, got {tensor.numel()}")
    if rows:
        return ValueError(f"{where} must be 2-D rows with unit column stride, got shape {tuple(tensor.shape)} "
                          f"strides {tensor.stride()}")
    return ValueError(f"{where} must be contiguous, got shape {tuple(tensor.shape)} strides {tensor.stride()}")


def stream_handle(device: torch.device) -> int:
    """The raw handle of the caller's current CUDA stream on ``device`` (never the default stream)."""
    return torch.cuda.current_stream(device).cuda_stream
