"""The GPU's float-argument semantics under the Triton interpreter.

On a GPU, Triton passes a Python float argument to a kernel as fp32; the interpreter keeps it a Python float
(float64), so a kernel that needs more than fp32 precision from a float argument passes under the interpreter and
loses it on a GPU. ``gpu_float_arguments()`` makes the interpreter hand such arguments to the kernel as fp32
scalars, as a GPU would. ``FASTMIX_INTERPRET_GPU_FLOATS=1`` turns it on for a whole test run (tests/conftest.py).
"""

from __future__ import annotations

import contextlib

import numpy as np


def _fp32_scalar(value: float):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    return tl.tensor(TensorHandle(np.array([value], dtype=np.float32), tl.float32), tl.float32)


def enable() -> None:
    """Float (not bool, not int) arguments of every interpreted launch become fp32 scalars from now on."""
    from triton.runtime import interpreter

    convert = interpreter._implicit_cvt
    if getattr(convert, "gpu_floats", False):
        return

    def implicit_cvt(arg):
        return _fp32_scalar(arg) if type(arg) is float else convert(arg)

    implicit_cvt.gpu_floats = True
    implicit_cvt.original = convert
    interpreter._implicit_cvt = implicit_cvt


def disable() -> None:
    from triton.runtime import interpreter

    interpreter._implicit_cvt = getattr(interpreter._implicit_cvt, "original", interpreter._implicit_cvt)


@contextlib.contextmanager
def gpu_float_arguments():
    """Within the block, float arguments reach interpreted kernels as fp32 (module docstring)."""
    from triton.runtime import interpreter

    was_enabled = getattr(interpreter._implicit_cvt, "gpu_floats", False)
    enable()
    try:
        yield
    finally:
        if not was_enabled:
            disable()
