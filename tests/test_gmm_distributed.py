"""fit_gmm2 with process_group=: values sharded over 2 gloo ranks on CPU give the fit of the full data."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastmix
from fastmix import _backend
from helpers import assert_close

WORLD = 2
TRITON_INITS = ("kmeans",)
"""The inits the Triton parametrisation fits (the interpreter is slow): "kmeans" runs the Triton pass kernels of a
distributed fit against the reference (the split statistics of the median's bisection, of the halves and of the
Lloyd steps, the E-step); the other inits add only the race kernel (its statistics are tested in test_gmm.py) and
backend-independent glue, which the CPU run covers."""


def full_data():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(400, 5, generator=g) < 0.3
    losses = torch.where(labels, torch.rand(400, 5, generator=g) * 3, torch.rand(400, 5, generator=g) ** 3).double()
    losses[3, 1] = float("nan")
    groups = fastmix.label_groups(labels)
    groups[:, 4] = 9  # class 4's negative group (8) is empty; its positive group holds every value of the column
    return losses, groups


def fit_fields(fit):
    return {name: getattr(fit, name) for name in fit._fields}


def worker(rank: int, port: int, results, backend: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        losses, groups = full_data()
        shard = slice(rank * 250, (rank + 1) * 250)  # unequal shards: 250 and 150 rows
        init = (torch.full((10, 2), 0.5, dtype=torch.float64), torch.tensor([[0.1, 0.7]]).expand(10, 2).double(),
                torch.full((10, 2), 0.04, dtype=torch.float64))
        out = {}
        inits = {"kmeans": {}, "quantile": {"init": "quantile"}, "explicit": {"init": init},
                 "kmeans++": {"init": "kmeans++"}}
        for name, options in inits.items():
            if backend == "triton" and name not in TRITON_INITS:
                continue
            fit = fastmix.fit_gmm2(losses[shard], groups[shard], n_groups=10, nan_policy="omit",
                                   process_group=dist.group.WORLD, generator=torch.Generator().manual_seed(rank),
                                   backend=backend, **options)
            out[name] = fit_fields(fit)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("backend", [pytest.param(name, marks=[pytest.mark.skip(reason=reason)] if reason else [])
                                     for name in ("cpu", "triton")
                                     for reason in [_backend.unavailable_reason(name, "cpu")]])
def test_sharded_fit_equals_single_process_fit(backend):
    """The ranks' passes are the backend's kernels ("triton": the Triton passes under the interpreter)."""
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(free_port(), results, backend), nprocs=WORLD, join=True)
    losses, groups = full_data()
    init = (torch.full((10, 2), 0.5, dtype=torch.float64), torch.tensor([[0.1, 0.7]]).expand(10, 2).double(),
            torch.full((10, 2), 0.04, dtype=torch.float64))
    expected = {
        "kmeans": fit_fields(fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", backend="reference")),
        "quantile": fit_fields(fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", init="quantile",
                                                backend="reference")),
        "explicit": fit_fields(fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", init=init,
                                                backend="reference")),
    }
    for name, fields in expected.items():
        if backend == "triton" and name not in TRITON_INITS:
            continue
        for rank in range(WORLD):
            for field, value in fields.items():
                got = results[rank][name][field]
                if value.is_floating_point():
                    assert torch.equal(got.isnan(), value.isnan()), (name, field)
                    assert_close(got.nan_to_num(), value.nan_to_num(), torch.float64, f"{name} {field} rank {rank}")
                else:
                    assert torch.equal(got, value), (name, field, rank)
    assert expected["quantile"]["degenerate"].tolist() == [False] * 8 + [True, False]
    for field, value in results[0].get("kmeans++", {}).items():  # the ranks draw different numbers, agree on the fit
        assert torch.equal(results[1]["kmeans++"][field].nan_to_num(), value.nan_to_num()), field


def failing_worker(rank: int, port: int, results):
    """Calls in which one rank differs from the other: each rank records the exception it got, then both fit
    together once more (the group is still in step: no collective was left unmatched)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        losses, groups = full_data()
        shard = slice(rank * 250, (rank + 1) * 250)
        losses, groups = losses[shard], groups[shard]
        with_nan = losses.clone()
        with_nan[0, 0] = float("nan") if rank == 1 else with_nan[0, 0]
        out_of_range = groups.clone()
        out_of_range[0, 0] = 10 if rank == 0 else out_of_range[0, 0]
        calls = {
            "n_groups": lambda: fastmix.fit_gmm2(losses, groups, n_groups=10 + rank, nan_policy="omit",
                                                 process_group=dist.group.WORLD),
            "dtype": lambda: fastmix.fit_gmm2(losses.float() if rank else losses, groups, n_groups=10,
                                              nan_policy="omit", process_group=dist.group.WORLD),
            "tol": lambda: fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", tol=0.01 + rank,
                                            process_group=dist.group.WORLD),
            "nan": lambda: fastmix.fit_gmm2(with_nan.nan_to_num(0.5) if rank == 0 else with_nan, groups,
                                            n_groups=10, process_group=dist.group.WORLD),
            "groups": lambda: fastmix.fit_gmm2(losses.nan_to_num(0.5), out_of_range, n_groups=10,
                                               process_group=dist.group.WORLD),
        }
        out = {}
        for name, call in calls.items():
            try:
                call()
                out[name] = None
            except Exception as error:  # noqa: BLE001 - recorded for the parent to compare across ranks
                out[name] = (type(error).__name__, str(error))
        fit = fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", process_group=dist.group.WORLD)
        out["after"] = fit_fields(fit)
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_rank_that_differs_raises_the_same_error_on_every_rank():
    """Ranks that disagree on the problem, or one rank's NaN or out-of-range group, give every rank the same
    ValueError before any statistics are all-reduced: no rank hangs, and the group stays usable."""
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(failing_worker, args=(free_port(), results), nprocs=WORLD, join=True)
    expected_messages = {"n_groups": "disagree on n_groups", "dtype": "disagree on values dtype",
                         "tol": "disagree on tol", "nan": "NaN or infinity on a rank", "groups": "outside"}
    for name, message in expected_messages.items():
        first, second = results[0][name], results[1][name]
        assert first is not None and first == second, (name, first, second)
        assert first[0] == "ValueError" and message in first[1], (name, first)
    losses, groups = full_data()
    expected = fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", backend="reference")
    for rank in range(WORLD):
        assert_close(results[rank]["after"]["means"], expected.means, torch.float64, f"rank {rank}")
