"""``python -m fastmix validate``: everything to run on the first machine with a GPU, in one command.

With a GPU: the test suite on the GPU (CUDA and Triton backends against the references, CUDA-graph capture,
``torch.cuda.set_sync_debug_mode("error")``, torch.compile), the CPU-side launch-count and compile checks, and the
benchmark report (``python -m fastmix bench --quick``), within about 8 minutes. Each step's log, and a summary,
go to a folder it prints: ``benchmarks/results/<gpu>-<timestamp>/`` by default, to be committed. Without a GPU it
says so and runs only the checks a CPU can do (launch counts and syncs, ahead-of-time GPU compiles, backend
resolution, the GPU float semantics), writing to a temporary folder by default. The checks live in the source
tree's tests/; without it only the report runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TOTAL_BUDGET_S = 8 * 60
# The checks a CPU can run (with the Triton interpreter), on any machine.
CPU_CHECKS = ("test_launches.py", "test_gpu_compile.py", "test_compile_cold.py", "test_backend.py",
              "test_pointers.py", "test_gpu_floats.py")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    timeout_s: int
    env: tuple[tuple[str, str], ...] = ()


def tests_folder() -> Path | None:
    """The source tree's tests/ beside the fastmix package, or None for an installed wheel."""
    folder = Path(__file__).resolve().parent.parent / "tests"
    return folder if folder.is_dir() else None


def plan(has_gpu: bool, tests: Path | None, folder: Path) -> list[Step]:
    """The steps to run, in order."""
    python = sys.executable
    steps = [Step("info", (python, "-m", "fastmix", "info"), 30)]
    if tests is not None and has_gpu:
        steps.append(Step("gpu-tests", (python, "-m", "pytest", "-q", "-rfEs", str(tests),
                                        f"--junitxml={folder / 'gpu-tests.xml'}"), 240))
    if has_gpu:
        steps.append(Step("bench", (python, "-m", "fastmix", "bench", "--quick", "--out", str(folder / "bench")), 150))
    if tests is not None:  # last on a GPU machine: these run on any machine
        cpu_checks = tuple(str(tests / name) for name in CPU_CHECKS)
        steps.append(Step("cpu-checks", (python, "-m", "pytest", "-q", "-rfEsx", *cpu_checks,
                                         f"--junitxml={folder / 'cpu-checks.xml'}"), 60 if has_gpu else 450,
                          (("TRITON_INTERPRET", "1"),)))
    return steps


def default_folder(has_gpu: bool) -> Path:
    if not has_gpu:
        return Path(tempfile.mkdtemp(prefix="fastmix-validate-"))
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-").lower()
    return Path("benchmarks") / "results" / f"{gpu}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def run_steps(steps: list[Step], folder: Path, budget_s: float = TOTAL_BUDGET_S) -> list[dict]:
    """Runs each step with its log in ``folder``, each within its timeout and what is left of ``budget_s``."""
    results, deadline = [], time.monotonic() + budget_s
    for step in steps:
        left = deadline - time.monotonic()
        log = folder / f"{step.name}.log"
        if left < 10:
            results.append({"step": step.name, "status": "not run (time budget spent)", "log": None})
            continue
        start = time.monotonic()
        with open(log, "w") as out:
            try:
                rc = subprocess.run(step.argv, stdout=out, stderr=subprocess.STDOUT, timeout=min(step.timeout_s, left),
                                    env={**os.environ, **dict(step.env)}).returncode
                status = "passed" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = "timed out"
        results.append({"step": step.name, "status": status, "seconds": round(time.monotonic() - start, 1),
                        "log": str(log)})
        print(f"  {step.name:12s} {status:24s} {results[-1]['seconds']:7.1f} s  {log}", flush=True)
    return results


def main(out_dir: str | None = None) -> int:
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    else:
        print("No GPU is visible to torch: running only the checks a CPU can do (launch counts, syncs, ahead-of-time "
              "GPU compiles, backend resolution); the GPU tests and benchmarks need a GPU.")
    folder = Path(out_dir) if out_dir else default_folder(has_gpu)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"results: {folder}")
    tests = tests_folder()
    if tests is None:
        print("no tests/ beside the fastmix package (an installed wheel): only the report runs")
    results = run_steps(plan(has_gpu, tests, folder), folder)
    summary = {"gpu": torch.cuda.get_device_name(0) if has_gpu else None, "steps": results}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if all(result["status"] == "passed" for result in results) else 1
