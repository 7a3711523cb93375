"""Backend resolution: per-call argument, FASTMIX_BACKEND, per-op defaults, and no silent fallback."""

import pytest
import torch

from fastmix import _backend


def test_cpu_tensors_default_to_the_reference(monkeypatch):
    monkeypatch.delenv("FASTMIX_BACKEND", raising=False)
    assert _backend.resolve(None, torch.device("cpu")) == "reference"


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setenv("FASTMIX_BACKEND", "reference")
    assert _backend.resolve(None, torch.device("cpu")) == "reference"
    monkeypatch.setenv("FASTMIX_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="'cuda' is not available for cpu tensors"):
        _backend.resolve(None, torch.device("cpu"))
    monkeypatch.setenv("FASTMIX_BACKEND", "quantum")
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.resolve(None, torch.device("cpu"))


def test_the_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FASTMIX_BACKEND", "cuda")
    assert _backend.resolve("reference", torch.device("cpu")) == "reference"


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
