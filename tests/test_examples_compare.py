"""Smoke test of `python -m fastmix.examples.compare`: every method trains, its loss is finite and falls."""

import pytest
import torch

pytest.importorskip("sklearn")
from fastmix.examples import compare, harness  # noqa: E402


@pytest.fixture(scope="module")
def tasks():
    return {name: harness.load_task(name, 0.0, seed=0, limit=96) for name in ("single", "multi")}


@pytest.mark.parametrize("method", compare.METHODS)
def test_every_method_learns_on_the_clean_task(method, tasks):
    task = tasks["multi" if method in compare.MULTI_ONLY else "single"]
    run = compare.Run(method, task, seed=0, device=torch.device("cpu"), timer=harness.OpTimer(torch.device("cpu")))
    run.begin_epoch()
    batch = torch.arange(32)
    losses = []
    for _ in range(12):
        loss = run.step(batch)
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < losses[0], f"{method}: loss did not fall: {losses}"


def test_command_writes_a_table_and_json(tmp_path, capsys):
    compare.main(["--epochs", "1", "--seeds", "1", "--limit", "64", "--methods", "none,zeta", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| zeta |" in printed and (tmp_path / "compare-single-0.json").exists()
