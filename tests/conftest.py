import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("FASTMIX_INTERPRET_GPU_FLOATS") == "1" and os.environ.get("TRITON_INTERPRET") == "1":
    import gpu_floats  # float arguments reach interpreted Triton kernels as fp32, as on a GPU

    gpu_floats.enable()


@pytest.fixture
def gpu_float_arguments():
    """For one test: float arguments reach interpreted Triton kernels as fp32, as a GPU launch passes them."""
    import gpu_floats

    with gpu_floats.gpu_float_arguments():
        yield


@pytest.fixture
def device_asserts(monkeypatch):
    """For one test: the GPU's value checks under the interpreter. Ops skip the host-side checks they make for CPU
    tensors (as for CUDA tensors) and the kernels' ``tl.device_assert`` runs, which the interpreter otherwise
    compiles out (it ignores the DEVICE_ASSERTS launch option); a failing one raises from the launch."""
    import dataclasses

    from triton.runtime import interpreter

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the Triton kernels' asserts under the interpreter (TRITON_INTERPRET=1)")
    builder = interpreter.interpreter_builder
    monkeypatch.setattr(builder, "options", dataclasses.replace(builder.options, debug=True, sanitize_overflow=False))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
