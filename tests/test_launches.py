"""Kernel launches and host syncs of every public op along its CUDA code path, counted on CPU tensors.

Each aten op that would be a kernel on a GPU, each Triton launch (the interpreter runs the kernels) and each call
into fastmix._C counts as one launch (tests/kernel_launches.py). The budget: a forward call at most 3 launches
(random draw, mix, labels), a backward at most 2, a GMM fit at most 10. Value checks take their GPU form
(``torch._assert_async``, itself a launch) as under torch.compile. Ops still over budget are strict xfails that
carry the measured count: they flip to a failure when an op meets its budget, and the entry is then removed.
"""

from __future__ import annotations

import os

import pytest
import torch

import triton
import triton.language as tl

from kernel_launches import count_launches
from op_cases import CASES

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="counts the Triton path: CPU tensors need TRITON_INTERPRET=1")
BACKWARD_BUDGET = 2
# (op, pass) -> launches measured on the commit that added the entry; update it when an op gets closer.
OVER_BUDGET = {
    ("zeta_mixup", "forward"): 12, ("mixup", "forward"): 32, ("mixup", "backward"): 14, ("cutmix", "forward"): 64,
    ("cutmix", "backward"): 12, ("Mixup-batch", "forward"): 92, ("Mixup-batch", "backward"): 10,
    ("Mixup-pair", "forward"): 93, ("Mixup-pair", "backward"): 10, ("Mixup-elem", "forward"): 87,
    ("Mixup-elem", "backward"): 10, ("flow_mix", "forward"): 14, ("flow_mix", "backward"): 3,
    ("lumix_lambda", "forward"): 38, ("lumix_loss", "forward"): 12, ("lumix_loss", "backward"): 4,
    ("lamix_inputs", "forward"): 7, ("lamix_inputs", "backward"): 14, ("lamix_loss", "forward"): 12,
    ("lamix_loss", "backward"): 4, ("balancemix_loss", "backward"): 3, ("fit_gmm2", "forward"): 125,
}
# (op, pass) -> the syncs found; same rule.
SYNCS = {
    ("cutmix", "forward"): "torch.tensor(<list>, device=) at fastmix/ops/mix.py:167",
    ("cutmix", "backward"): "torch.tensor(<list>, device=) at fastmix/ops/mix.py:167",
    **{(f"Mixup-{mode}", "forward"): "torch.tensor(<list>, device=) at fastmix/api/mix.py:124"
       for mode in ("batch", "pair", "elem")},
    ("fit_gmm2", "forward"): "bincount at fastmix/ops/gmm.py:52; torch.tensor(<list>, device=) at "
                             "fastmix/kernels/triton/gmm.py:123 and fastmix/api/gmm.py:179",
}


@pytest.fixture(autouse=True)
def gpu_value_checks(monkeypatch):
    """Value checks as on CUDA tensors: the device-side assert instead of a host read (fastmix._checks)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)


@triton.jit
def _store_kernel(out_ptr, value):
    tl.store(out_ptr, value)


def test_the_counter_counts_kernels_not_views_and_flags_syncs():
    x = torch.randn(4, 6)
    out = torch.empty(1)
    with count_launches() as launches:
        y = (x[1:] * 2).view(-1)  # a view, a launch, a view
        torch.empty(3)  # an allocation
        _store_kernel[(1,)](out, 2.0)
        bool(y.sum() > 0)  # two launches and a read back on the host
        x[x > 0]  # a mask: data-dependent size
    assert [str(op) for op in launches.aten] == ["aten.mul.Tensor", "aten.sum.default", "aten.gt.Scalar",
                                                 "aten.gt.Scalar"]
    assert [launch.kernel.__name__ for launch in launches.triton] == ["_store_kernel"]
    assert [sync.split(" at ")[0] for sync in launches.syncs] == ["aten._local_scalar_dense.default",
                                                                  "aten.index.Tensor"]
    assert launches.total == 5


def _backend(case) -> str | None:
    return "triton" if "triton" in case.backends else None  # lumix_lambda has no backend to choose


def _run(case):
    """(forward launches, backward launches or None) of one call on fresh inputs."""
    inputs = case.make_inputs(torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    with count_launches() as forward:
        out = case.call(inputs, _backend(case), generator)
    assert (out is not None and out.requires_grad) == case.differentiable
    if not case.differentiable:
        return forward, None
    grad = torch.randn_like(out)
    with count_launches() as backward:
        out.backward(grad)
    return forward, backward


def _params(kind: str):
    params = []
    for case in CASES:
        for which in ("forward", "backward") if case.differentiable else ("forward",):
            table = OVER_BUDGET if kind == "launches" else SYNCS
            found = table.get((case.name, which))
            what = f"{found} launches" if kind == "launches" else found
            marks = [pytest.mark.xfail(strict=True, reason=f"measured on the Triton path: {what}")] if found else []
            params.append(pytest.param(case, which, id=f"{case.name}-{which}", marks=marks))
    return params


@pytest.mark.parametrize("case,which", _params("launches"))
def test_launch_budget(case, which, record_property):
    forward, backward = _run(case)
    launches = forward if which == "forward" else backward
    budget = case.forward_budget if which == "forward" else BACKWARD_BUDGET
    record_property("launches", launches.summary())
    assert launches.total <= budget, f"{case.name} {which}: {launches.summary()}, budget {budget}"


@pytest.mark.parametrize("case,which", _params("syncs"))
def test_no_host_sync(case, which):
    forward, backward = _run(case)
    launches = forward if which == "forward" else backward
    assert not launches.syncs, f"{case.name} {which} would synchronise with the host: {launches.syncs}"
