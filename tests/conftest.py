import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("FASTMIX_INTERPRET_GPU_FLOATS") == "1" and os.environ.get("TRITON_INTERPRET") == "1":
    import gpu_floats  # float arguments reach interpreted Triton kernels as fp32, as on a GPU

    gpu_floats.enable()
