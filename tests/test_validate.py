"""``python -m fastmix validate``: what it plans with and without a GPU, how it runs steps, what it writes."""

import json
import sys

import pytest
import torch

from fastmix import validate

PYTHON = sys.executable


def test_without_a_gpu_only_the_cpu_checks_run(tmp_path):
    tests = validate.tests_folder()
    steps = validate.plan(False, tests, tmp_path)
    assert [step.name for step in steps] == ["info", "cpu-checks"]
    cpu_checks = steps[1]
    assert sum(step.timeout_s for step in steps) <= validate.TOTAL_BUDGET_S
    assert dict(cpu_checks.env) == {"TRITON_INTERPRET": "1"}
    for name in validate.CPU_CHECKS:  # every check it names exists
        assert str(tests / name) in cpu_checks.argv and (tests / name).is_file()


def test_with_a_gpu_the_gpu_tests_and_the_benchmarks_run_too(tmp_path):
    steps = validate.plan(True, validate.tests_folder(), tmp_path)
    assert [step.name for step in steps] == ["info", "gpu-tests", "bench", "cpu-checks"]
    assert sum(step.timeout_s for step in steps) <= validate.TOTAL_BUDGET_S
    assert not dict(steps[1].env)  # the GPU tests run Triton on the GPU, not in the interpreter


def test_an_installed_wheel_without_tests_runs_the_report_only(tmp_path):
    assert [step.name for step in validate.plan(False, None, tmp_path)] == ["info"]


def test_steps_run_with_logs_timeouts_and_the_time_budget(tmp_path):
    steps = [validate.Step("ok", (PYTHON, "-c", "print('hello')"), 60),
             validate.Step("fails", (PYTHON, "-c", "raise SystemExit(3)"), 60),
             validate.Step("slow", (PYTHON, "-c", "import time; time.sleep(30)"), 1),
             validate.Step("env", (PYTHON, "-c", "import os; print(os.environ['FASTMIX_X'])"), 60,
                           (("FASTMIX_X", "seen"),))]
    results = validate.run_steps(steps, tmp_path)
    assert [r["status"] for r in results] == ["passed", "failed (exit 3)", "timed out", "passed"]
    assert (tmp_path / "ok.log").read_text() == "hello\n" and (tmp_path / "env.log").read_text() == "seen\n"
    late = validate.run_steps(steps[:1], tmp_path, budget_s=5)
    assert late[0]["status"] == "not run (time budget spent)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's behaviour")
def test_main_on_a_cpu_machine_says_so_and_writes_a_summary(tmp_path, monkeypatch, capsys):
    planned = []

    def fake_run(steps, folder, budget_s=validate.TOTAL_BUDGET_S):
        planned.extend(step.name for step in steps)
        return [{"step": step.name, "status": "passed"} for step in steps]

    monkeypatch.setattr(validate, "run_steps", fake_run)
    assert validate.main(out_dir=str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "No GPU is visible" in out and str(tmp_path / "out") in out
    assert planned == ["info", "cpu-checks"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gpu"] is None and [s["step"] for s in summary["steps"]] == planned
    monkeypatch.setattr(validate, "run_steps", lambda steps, folder: [{"step": "info", "status": "timed out"}])
    assert validate.main(out_dir=str(tmp_path / "again")) == 1
