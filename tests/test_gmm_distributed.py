"""fit_gmm2 with process_group=: values sharded over 2 gloo ranks on CPU give the fit of the full data."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastmix
from helpers import assert_close

WORLD = 2


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


def worker(rank: int, port: int, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        losses, groups = full_data()
        shard = slice(rank * 250, (rank + 1) * 250)  # unequal shards: 250 and 150 rows
        init = (torch.full((10, 2), 0.5, dtype=torch.float64), torch.tensor([[0.1, 0.7]]).expand(10, 2).double(),
                torch.full((10, 2), 0.04, dtype=torch.float64))
        out = {}
        for name, options in {"quantile": {}, "explicit": {"init": init}, "kmeans": {"init": "kmeans"}}.items():
            fit = fastmix.fit_gmm2(losses[shard], groups[shard], n_groups=10, nan_policy="omit",
                                   process_group=dist.group.WORLD, generator=torch.Generator().manual_seed(rank),
                                   **options)
            out[name] = fit_fields(fit)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_sharded_fit_equals_single_process_fit():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=WORLD, join=True)
    losses, groups = full_data()
    init = (torch.full((10, 2), 0.5, dtype=torch.float64), torch.tensor([[0.1, 0.7]]).expand(10, 2).double(),
            torch.full((10, 2), 0.04, dtype=torch.float64))
    expected = {
        "quantile": fit_fields(fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", backend="reference")),
        "explicit": fit_fields(fastmix.fit_gmm2(losses, groups, n_groups=10, nan_policy="omit", init=init,
                                                backend="reference")),
    }
    for name, fields in expected.items():
        for rank in range(WORLD):
            for field, value in fields.items():
                got = results[rank][name][field]
                if value.is_floating_point():
                    assert torch.equal(got.isnan(), value.isnan()), (name, field)
                    assert_close(got.nan_to_num(), value.nan_to_num(), torch.float64, f"{name} {field} rank {rank}")
                else:
                    assert torch.equal(got, value), (name, field, rank)
    assert expected["quantile"]["degenerate"].tolist() == [False] * 8 + [True, False]
    for field, value in results[0]["kmeans"].items():  # the ranks draw different numbers, yet agree on the fit
        assert torch.equal(results[1]["kmeans"][field].nan_to_num(), value.nan_to_num()), field
