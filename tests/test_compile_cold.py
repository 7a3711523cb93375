"""``torch.compile(fullgraph=True)`` as the FIRST fastmix call of a process.

Backend resolution runs inside the traced region on that first call, before any eager call has filled its cache.
On a CUDA build it calls into fastmix._C (driver version, device count), which Dynamo cannot trace; on CPU this is
simulated by making the lookup call a pybind function of fastmix._C as well.
"""

import subprocess
import sys

import pytest

from helpers import HAS_GPU

SCRIPT = """
import sys
import torch
import fastmix
from fastmix import _backend, _native

op, backend, device = sys.argv[1], None if sys.argv[2] == "None" else sys.argv[2], sys.argv[3]
if _native._C is not None and not _native._C.built_with_cuda:  # a lookup as untraceable as a CUDA build's
    find = _backend._find_unavailable_reason
    _backend._find_unavailable_reason = lambda *args: (_native._C.gmm2_cpu_isas(), find(*args))[1]
x = torch.randn(4, 3, 8, 8, device=device)
y = torch.randint(0, 5, (4,), device=device)
call = getattr(fastmix, op)
step = torch.compile(lambda x, y: call(x, y, num_classes=5, backend=backend)[:2], fullgraph=True,
                     backend="aot_eager" if device == "cpu" else "inductor")
x_mixed, y_mixed = step(x, y)
assert x_mixed.shape == x.shape and y_mixed.shape == (4, 5) and bool(torch.isfinite(x_mixed).all())
print("ok")
"""


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_GPU,
                                                                                       reason="no GPU visible"))])
@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("op", ["mixup", "zeta_mixup"])
def test_compile_fullgraph_as_the_first_call(op, backend, device):
    result = subprocess.run([sys.executable, "-c", SCRIPT, op, str(backend), device], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
