"""``python -m fastmix info``'s per-op table says what each public call really asks ``_backend.resolve`` for."""

import inspect
import subprocess
import sys

import pytest
import torch

import fastmix
from fastmix import _backend
from fastmix._info import info, op_backends


def x_y():
    return torch.rand(2, 3, 4, 4), torch.tensor([0, 2])


def logits():
    return torch.randn(2, 3, requires_grad=True)


def gmm_data():
    return torch.rand(8, 1), torch.zeros(8, 1, dtype=torch.long)


CALLS = {
    "zeta_mixup": lambda: fastmix.zeta_mixup(*x_y(), num_classes=3),
    "mixup": lambda: fastmix.mixup(*x_y(), num_classes=3),
    "cutmix": lambda: fastmix.cutmix(*x_y(), num_classes=3),
    "Mixup, FastCollateMixup": lambda: (fastmix.Mixup(num_classes=3)(*x_y()), fastmix.FastCollateMixup(num_classes=3)(
        [(torch.zeros(3, 4, 4, dtype=torch.uint8), 0), (torch.ones(3, 4, 4, dtype=torch.uint8), 1)])),
    "lamix_inputs": lambda: fastmix.lamix_inputs(x_y()[0]),
    "flow_mix": lambda: fastmix.flow_mix(torch.rand(2, 3)),
    "lumix_lambda": lambda: fastmix.lumix_lambda(0.5, logits(), torch.tensor([0, 1]), torch.tensor([1, 2])),
    "lumix_loss": lambda: fastmix.lumix_loss(logits(), torch.tensor([0, 1]), torch.tensor([1, 2]), 0.5),
    "lamix_loss": lambda: fastmix.lamix_loss(logits(), logits(), torch.tensor([0, 1]), torch.rand(2),
                                             torch.tensor([1, 0])),
    "balancemix_loss": lambda: fastmix.balancemix_loss(logits(), torch.rand(2, 3)),
    "fit_gmm2": lambda: fastmix.fit_gmm2(*gmm_data(), n_groups=1),
    "gmm_posterior": lambda: fastmix.gmm_posterior(*gmm_data(),
                                                   fastmix.fit_gmm2(*gmm_data(), n_groups=1, backend="reference")),
}


def test_every_op_of_the_table_is_checked():
    assert set(CALLS) == set(op_backends())


@pytest.mark.parametrize("op", list(CALLS))
def test_table_matches_what_the_call_asks_resolve_for(op, monkeypatch):
    monkeypatch.delenv("FASTMIX_BACKEND", raising=False)
    asked, resolve = [], _backend.resolve
    signature = inspect.signature(resolve)

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        result = resolve(*args, **kwargs)
        if bound.arguments["backend"] is None:
            asked.append((tuple(bound.arguments["supported"]), bound.arguments["cuda_default"],
                          bound.arguments["cpu_default"], result))
        return result

    monkeypatch.setattr(_backend, "resolve", spy)
    CALLS[op]()
    supported, cuda_default, cpu_default = op_backends()[op]
    if not supported:
        assert asked == []
        return
    assert asked and {entry[:3] for entry in asked} == {(supported, cuda_default, cpu_default)}
    ran_on_cpu = asked[0][3]
    assert info()["ops"][op]["default_cpu"] == ran_on_cpu


def test_info_command_prints_the_op_table_and_its_notation():
    result = subprocess.run([sys.executable, "-m", "fastmix", "info"], capture_output=True, text=True, check=True)
    assert "ops: backends | default on CPU tensors | default on CUDA tensors" in result.stdout
    for op in op_backends():
        assert f"  {op} " in result.stdout
    assert "reference = pure PyTorch" in result.stdout
