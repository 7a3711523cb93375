"""Shared test helpers: backends to run, a verbose mismatch assert, input makers."""

from __future__ import annotations

import pytest
import torch

from fastmix import _backend
from tolerances import tolerance

HAS_GPU = torch.cuda.is_available()


def backend_params(names=("reference", "triton", "cuda")):
    """(backend, device) pairs as pytest params; unavailable ones are skipped with the reason."""
    params = []
    for name in names:
        devices = ["cuda"] if name == "cuda" else (["cpu", "cuda"] if name == "reference" else ["cuda" if HAS_GPU else "cpu"])
        devices = ["cpu"] if name == "cpu" else devices  # the C++ CPU kernels
        for device in devices:
            reason = "no GPU visible" if device == "cuda" and not HAS_GPU else _backend.unavailable_reason(name, device)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(name, device, id=f"{name}-{device}", marks=marks))
    return params


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, msg: str = ""):
    """Values within the tolerance table's entry for ``dtype``; on failure, prints the worst mismatches."""
    tol = tolerance(dtype or actual.dtype)
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert a.shape == e.shape, f"{msg} shape {tuple(a.shape)} != {tuple(e.shape)}"
    bad = ~torch.isclose(a, e, **tol, equal_nan=False)
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        rows = [f"  at {tuple(i)}: got {a[tuple(i)].item()!r}, expected {e[tuple(i)].item()!r}" for i in idx]
        raise AssertionError(f"{msg} {int(bad.sum())} of {a.numel()} elements differ beyond {tol}:\n" + "\n".join(rows))


def make_batch(kind: str, batch: int, dtype: torch.dtype, device: str, seed: int = 0) -> torch.Tensor:
    """Batch-first inputs in the layouts every parity test covers."""
    g = torch.Generator().manual_seed(seed)
    if kind == "nchw":
        x = torch.randn(batch, 3, 12, 10, generator=g)
    elif kind == "channels_last":
        x = torch.randn(batch, 3, 12, 10, generator=g).to(memory_format=torch.channels_last)
    elif kind == "channel_slice":  # rows strided inside a wider tensor
        x = torch.randn(batch, 5, 12, 10, generator=g)[:, 1:4]
    elif kind == "spatial_slice":  # not a dense block per sample
        x = torch.randn(batch, 3, 12, 16, generator=g)[:, :, :, 3:13]
    elif kind == "sequence":
        x = torch.randn(batch, 9, 17, generator=g)
    elif kind == "features":
        x = torch.randn(batch, 33, generator=g)
    else:
        raise ValueError(kind)
    return x.to(device=device, dtype=dtype)


LAYOUTS = ("nchw", "channels_last", "channel_slice", "spatial_slice", "sequence", "features")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def make_labels(kind: str, batch: int, classes: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, classes, (batch,), generator=g)
    if kind == "int":
        return index.to(device)
    if kind == "one_hot":
        return torch.nn.functional.one_hot(index, classes).float().to(device)
    if kind == "soft":
        return torch.softmax(torch.randn(batch, classes, generator=g), dim=1).to(device)
    if kind == "multi_hot":
        return (torch.rand(batch, classes, generator=g) < 0.3).float().to(device)
    raise ValueError(kind)


LABEL_KINDS = ("int", "one_hot", "soft", "multi_hot")


def compile_fullgraph(fn, device: str):
    """``torch.compile(fullgraph=True)``: aot_eager on CPU (traces through Dynamo and AOTAutograd without
    generating C++), inductor on CUDA."""
    return torch.compile(fn, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")


def assert_compiled_matches_eager(step, args, device: str, seed: int = 5):
    """``step(*args)`` compiled and eager, each after ``torch.manual_seed(seed)``, give the same outputs (float32
    tolerance). Dynamo cannot take a torch.Generator as a graph input, so compiled steps use the default RNG."""
    torch._dynamo.reset()
    compiled = compile_fullgraph(step, device)
    torch.manual_seed(seed)
    got = compiled(*args)
    torch.manual_seed(seed)
    want = step(*args)
    for g, w in zip(got, want):
        assert_close(g, w, torch.float32)


def assert_rejected_untouched(call, error, match: str, *inputs: torch.Tensor):
    """``call(*inputs)`` raises ``error`` matching ``match`` and leaves every input as it was."""
    before = [tensor.detach().clone() for tensor in inputs]
    with pytest.raises(error, match=match):
        call(*inputs)
    for tensor, saved in zip(inputs, before):
        assert torch.equal(tensor.detach(), saved)


def gradcheck_input(layout: str, device: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Tiny float64 input for gradcheck (which evaluates the op twice per element), requiring grad, as a dense
    "nchw" tensor, "channels_last", or a "spatial_slice" (the last dimension's [1:3])."""
    base = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if layout == "channels_last":
        base = base.to(memory_format=torch.channels_last)
    elif layout == "spatial_slice":
        base = base[:, :, :, 1:3]
    return base.to(device).requires_grad_()


def seeded(device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def with_cpu_kernel(params):
    """``params`` plus the "cpu" backend (the C++ CPU kernels), skipped when fastmix._C is not built."""
    reason = _backend.unavailable_reason("cpu", "cpu")
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return [*params, pytest.param("cpu", "cpu", id="cpu-cpu", marks=marks)]


# The mix family's parameter samplers: torch's (the "reference" backend) and the parameter kernel (the Triton kernel
# on the kernel backends, here "triton", and its C++ twin on "cpu").
SAMPLERS = with_cpu_kernel(backend_params(("reference", "triton")))


def weighted_sum_ieee(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_i W[p, i] x[i]`` over the batch dim in float64 with IEEE's non-finite rules, from the finite sum and
    masks: +-inf where an infinity has nonzero weight, NaN where a NaN does or +inf meets -inf."""
    w = weights.detach().double().cpu()
    v = x.detach().double().cpu().flatten(1)
    out = w @ torch.where(v.isfinite(), v, 0.0)

    def weighted(mask):
        return ((w != 0).double() @ mask.double()) > 0

    pos, neg = weighted(v == float("inf")), weighted(v == float("-inf"))
    out[pos] = float("inf")
    out[neg] = float("-inf")
    out[weighted(v.isnan()) | (pos & neg)] = float("nan")
    return out.view(w.size(0), *x.shape[1:])


def assert_close_nonfinite(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, msg: str = ""):
    """NaN exactly where expected, the same infinities, the finite values within the tolerance table."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert torch.equal(a.isnan(), e.isnan()), f"{msg} NaN at {(a.isnan() != e.isnan()).nonzero()[:5].tolist()}"
    assert_close(a.nan_to_num(0.0, float("inf"), float("-inf")), e.nan_to_num(0.0, float("inf"), float("-inf")),
                 dtype, msg)
