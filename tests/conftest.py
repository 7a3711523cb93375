import os
import sys
from pathlib import Path

import pytest

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
