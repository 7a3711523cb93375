"""``python -m fastmix bench``: time every op against its reference, the peers and the memory floor.

GPU timings use ``triton.testing.do_bench`` (CUDA events, median and p20/p80); CPU timings use a synchronous
perf_counter loop (CPU ops are synchronous). Every row records the ratio to the reference and to the floor: the
time of a device-to-device copy of the same bytes, measured in the same run. Results go to
``benchmarks/results/<device>-<date>.json`` with a Markdown table beside it and, with matplotlib, a PNG plot.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from fastmix._info import info


@dataclasses.dataclass
class Case:
    """One benchmark point: an op at one size, its providers, and the copy that sets the memory floor."""

    op: str
    shape: tuple
    dtype: torch.dtype
    providers: dict[str, Callable[[], object]]
    floor: Callable[[], object]
    bytes_moved: int
    baseline: str = "reference"
    extra: dict = dataclasses.field(default_factory=dict)


def time_call(fn: Callable[[], object], device: torch.device, quick: bool) -> tuple[float, float, float]:
    """(median, p20, p80) in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        p50, p20, p80 = triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 100,
                                                quantiles=[0.5, 0.2, 0.8])
        return p50, p20, p80
    fn()
    samples = []
    budget = 0.3 if quick else 1.0
    start = time.perf_counter()
    while len(samples) < 3 or (time.perf_counter() - start < budget and len(samples) < 50):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    quantiles = statistics.quantiles(samples, n=10) if len(samples) >= 2 else samples * 9
    return statistics.median(samples), quantiles[1], quantiles[7]


def host_overhead_us(fn: Callable[[], object], device: torch.device, calls: int = 50) -> float | None:
    """Host time per call with no synchronisation (Python, dispatch, launch): meaningful on a GPU only."""
    if device.type != "cuda":
        return None
    fn()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize(device)
    return elapsed / calls * 1e6


def run_case(case: Case, device: torch.device, quick: bool) -> list[dict]:
    floor_ms = time_call(case.floor, device, quick)[0]
    timings = {name: time_call(fn, device, quick) for name, fn in case.providers.items()}
    baseline_ms = timings[case.baseline][0] if case.baseline in timings else None
    rows = []
    for name, (p50, p20, p80) in timings.items():
        rows.append({
            "op": case.op, "provider": name, "shape": list(case.shape), "dtype": str(case.dtype).replace("torch.", ""),
            "median_ms": p50, "p20_ms": p20, "p80_ms": p80, "floor_ms": floor_ms, "ratio_to_floor": p50 / floor_ms,
            "speedup_vs_reference": (baseline_ms / p50) if baseline_ms else None, "bytes_moved": case.bytes_moved,
            "host_overhead_us": host_overhead_us(case.providers[name], device) if name.startswith("fastmix") else None,
            **case.extra,
        })
    return rows


def all_cases(device: torch.device, quick: bool) -> list[Case]:
    from fastmix.benchcases import balancemix, flow, gmm, lamix, lumix, mix, zeta

    return [*zeta.cases(device, quick), *lamix.cases(device, quick), *gmm.cases(device, quick),
            *lumix.cases(device, quick), *flow.cases(device, quick), *mix.cases(device, quick),
            *balancemix.cases(device, quick)]


def machine(device: torch.device) -> dict:
    report = info()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.processor() or platform.machine()}",
        "cpu_threads": torch.get_num_threads(), "fastmix": report["fastmix"], "torch": report["torch"],
        "triton": report["triton"], "cuda": report["torch_cuda"], "native": report["native"], "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def markdown_table(meta: dict, rows: list[dict]) -> str:
    lines = [f"# fastmix benchmarks on {meta['device']} ({meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, fastmix {meta['fastmix']} "
             f"(commit {meta['commit']})", "",
             "| op | shape | dtype | provider | median | x floor | vs reference | host us |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        speedup = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else ""
        host = f"{r['host_overhead_us']:.1f}" if r["host_overhead_us"] is not None else ""
        lines.append(f"| {r['op']} | {tuple(r['shape'])} | {r['dtype']} | {r['provider']} | {r['median_ms'] * 1e3:.1f} us "
                     f"| {r['ratio_to_floor']:.2f} | {speedup} | {host} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["op"], r["dtype"], r["provider"]), []).append(r)
    ops = sorted({(r["op"], r["dtype"]) for r in rows})
    columns = min(4, len(ops))
    rows_of_plots = -(-len(ops) // columns)
    fig, axes = plt.subplots(rows_of_plots, columns, figsize=(4.5 * columns, 3.5 * rows_of_plots), squeeze=False)
    for ax in axes.flat[len(ops):]:
        ax.set_visible(False)
    for ax, (op, dtype) in zip(axes.flat, ops):
        for (g_op, g_dtype, provider), points in groups.items():
            if (g_op, g_dtype) == (op, dtype):
                ax.plot([p["shape"][0] for p in points], [p["median_ms"] * 1e3 for p in points], marker="o", label=provider)
        ax.set(title=f"{op} {dtype}", xlabel="first dimension (batch or rows)", ylabel="median us", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(quick: bool = False, out_dir: str | None = None, ops: list[str] | None = None) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = all_cases(device, quick)
    if ops:
        known = sorted({case.op for case in cases})
        unknown = [op for op in ops if op not in known]
        if unknown:
            raise SystemExit(f"--ops: unknown {', '.join(unknown)}; the ops are {', '.join(known)}")
        cases = [case for case in cases if case.op in ops]
    rows = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.op} {tuple(case.shape)} {str(case.dtype).replace('torch.', '')}", flush=True)
        rows.extend(run_case(case, device, quick))
    meta = machine(device)
    folder = Path(out_dir) if out_dir else Path.cwd() / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{meta['device'].replace(' ', '_').replace('/', '_')}-{meta['date'][:10]}"
    stem += "".join(f"-{op}" for op in ops or [])
    (folder / f"{stem}.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    table = markdown_table(meta, rows)
    (folder / f"{stem}.md").write_text(table)
    plotted = plot(rows, folder / f"{stem}.png")
    print(table)
    print(f"wrote {folder / stem}.json, .md" + (", .png" if plotted else " (no plot: pip install matplotlib)"))
    return 0
