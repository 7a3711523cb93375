"""The interpreter mode with the GPU's float-argument semantics (tests/gpu_floats.py) does what it says."""

import os

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from gpu_floats import gpu_float_arguments

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")
VALUE = 1.00000001  # 1.0 in fp32


@triton.jit
def _float_argument_kernel(out_ptr, value):
    """Stores ``(value - 1) * 1e8`` and ``value`` widened to fp64: what an fp64 kernel does with a float argument."""
    tl.store(out_ptr, (value - 1.0) * 100000000.0)
    tl.store(out_ptr + 1 + tl.arange(0, 1), tl.full((1,), value, tl.float64))


def _stored(value: float) -> list[float]:
    out = torch.zeros(2, dtype=torch.float64)
    _float_argument_kernel[(1,)](out, value)
    return out.tolist()


def test_float_arguments_are_fp32_in_the_mode():
    assert np.float32(VALUE) == 1.0
    with gpu_float_arguments():
        assert _stored(VALUE) == [0.0, 1.0]  # as on a GPU: the argument is fp32, so is the arithmetic on it


def test_the_run_wide_setting_decides_outside_the_block():
    difference, widened = _stored(VALUE)
    if os.environ.get("FASTMIX_INTERPRET_GPU_FLOATS") == "1":  # tests/conftest.py turned the mode on
        assert [difference, widened] == [0.0, 1.0]
    else:  # the interpreter alone: float64 arithmetic, the 1e-8 survives (about 1 after scaling) where a GPU gives 0
        assert difference > 0.5 and widened == VALUE
