"""Backend resolution: the per-call argument (strict), FASTMIX_BACKEND (a preference), per-op defaults."""

import pytest
import torch

from fastmix import _backend
from op_cases import CASES

CPU = torch.device("cpu")


def test_cpu_tensors_default_to_the_reference(monkeypatch):
    monkeypatch.delenv("FASTMIX_BACKEND", raising=False)
    assert _backend.resolve(None, CPU) == "reference"


def test_environment_variable_is_a_preference_where_it_applies(monkeypatch):
    monkeypatch.setenv("FASTMIX_BACKEND", "reference")
    assert _backend.resolve(None, CPU, cpu_default="cpu", supported=_backend.BACKENDS) == "reference"
    monkeypatch.setenv("FASTMIX_BACKEND", "cuda")  # not available for CPU tensors: the op's default runs
    assert _backend.resolve(None, CPU) == "reference"
    monkeypatch.setenv("FASTMIX_BACKEND", "cpu")  # not one of the op's backends: the op's default runs
    assert _backend.resolve(None, CPU, supported=("triton", "reference")) == "reference"


def test_environment_variable_outside_the_backends_raises(monkeypatch):
    monkeypatch.setenv("FASTMIX_BACKEND", "quantum")
    with pytest.raises(ValueError, match="FASTMIX_BACKEND must be one of"):
        _backend.resolve(None, CPU)


def test_the_argument_is_strict_and_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FASTMIX_BACKEND", "cuda")
    assert _backend.resolve("reference", CPU) == "reference"
    with pytest.raises(RuntimeError, match="'cuda' is not available for cpu tensors"):
        _backend.resolve("cuda", CPU)
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.resolve("cpu", CPU, supported=("triton", "reference"))


@pytest.mark.parametrize(
    "available,cuda_default,expected",
    [
        ({"cuda", "triton", "reference"}, "cuda", "cuda"),
        ({"cuda", "triton", "reference"}, "triton", "triton"),
        ({"triton", "reference"}, "cuda", "triton"),
        ({"cuda", "reference"}, "triton", "cuda"),
        ({"reference"}, "triton", "reference"),
    ],
)
def test_cuda_default_falls_to_the_next_available(monkeypatch, available, cuda_default, expected):
    monkeypatch.delenv("FASTMIX_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "unavailable_reason", lambda name, device: "" if name in available else "absent")
    assert _backend.resolve(None, torch.device("cuda"), cuda_default=cuda_default) == expected


@pytest.mark.parametrize("preferred,expected", [("cuda", "cuda"), ("triton", "triton"), ("cpu", "triton")])
def test_the_preference_applies_on_cuda_tensors_where_available(monkeypatch, preferred, expected):
    monkeypatch.setenv("FASTMIX_BACKEND", preferred)
    monkeypatch.setattr(_backend, "unavailable_reason", lambda name, device: "" if name != "cpu" else "CPU only")
    assert _backend.resolve(None, torch.device("cuda"), cuda_default="triton", supported=_backend.BACKENDS) == expected


def _backends_resolved(monkeypatch, case, preferred):
    """Runs ``case`` on CPU tensors with FASTMIX_BACKEND=preferred; returns the backends its op calls resolved."""
    if preferred is None:
        monkeypatch.delenv("FASTMIX_BACKEND", raising=False)
    else:
        monkeypatch.setenv("FASTMIX_BACKEND", preferred)
    resolved = []
    resolve = _backend.resolve

    def spy(*args, **kwargs):
        resolved.append(resolve(*args, **kwargs))
        return resolved[-1]

    inputs = case.make_inputs(CPU)  # outside the spy: making them may call other ops (gmm_posterior's fit)
    with monkeypatch.context() as patch:
        patch.setattr(_backend, "resolve", spy)  # every op resolves through the module attribute
        case.call(inputs, None, torch.Generator().manual_seed(0))
    return resolved


@pytest.mark.parametrize("preferred", _backend.BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_op_takes_the_preference_where_it_can_and_runs_its_default_elsewhere(monkeypatch, case, preferred):
    defaults = _backends_resolved(monkeypatch, case, None)
    resolved = _backends_resolved(monkeypatch, case, preferred)
    applies = preferred in case.backends and not _backend.unavailable_reason(preferred, "cpu")
    assert len(defaults) == 1  # every public call resolves its backend through _backend.resolve, once
    assert resolved == ([preferred] * len(defaults) if applies else defaults)
