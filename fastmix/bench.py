"""``python -m fastmix bench``: every public op timed against its reference, its peers and a copy floor.

Method. The providers of one case (fastmix per backend, the pure-PyTorch reference, the paper's formula, the peer
libraries, and the floor: a copy of the bytes the op must move) are timed interleaved in one process: round r
takes one sample of every provider, in an order rotated by r, so that drift (clock boost, caches, other processes)
hits every provider alike. A sample is the mean time of enough back-to-back calls to last ``min_sample_s`` (CUDA
events on a GPU; ``perf_counter`` on a CPU, where the ops are synchronous), right after an untimed warm-up of the
same provider: as many calls as last ``warmup_s`` (at least one). Without it a sample pays for the provider timed
before it: on the 2-core VM of the committed reports the first vectorised call after a pause or after scalar work (a
pure-Python loop) stalls for a few ms, and on some days vectorised code ran several times slower for a few hundred
ms after it, so a provider timed right after a scalar one (the scikit-learn loop, the timm-like per-sample loops)
looked slower than it is and its ratios depended on the order of the providers. A provider whose call lasts over
``long_call_s`` (the scikit-learn loop and the reference GMM fit take seconds) gets no warm-up: the stall is a few
percent of such a call at most, and warming it would double the run's time. Per provider the report gives the
median time with its p20/p80 over the rounds, and the median (p20/p80) over the rounds of the PAIRED ratios: its
time over the floor's time in the same round, and the reference's time over its time in the same round (> 1:
faster than the reference). It also counts the ops one call dispatches (``DispatchCounter``), and on a GPU the host
time of one call (Python, dispatch, launch; no synchronisation). CPU cases run with 1 thread and with all threads,
on a steady heap (``steady_cpu_heap``) unless ``--system-heap``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import json
import math
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastmix import _backend
from fastmix._info import info

FLOOR = "floor"
REFERENCE = "reference"
DEFAULT_OUT_DIR = "fastmix-bench-results"

# What each provider name means; a case explains the names of its own providers (paper, peers) in Case.notes.
PROVIDER_NOTES = {
    FLOOR: "the copy floor: x.clone() of the bytes the op must move on a CPU, a device-to-device copy on a GPU",
    REFERENCE: "fastmix's pure-PyTorch oracle (backend='reference'), the column 'vs reference' compares with it",
    "fastmix": "the fastmix public call (the op has a single implementation)",
    "fastmix-cpu": "fastmix, C++ CPU kernel (backend='cpu')",
    "fastmix-cuda": "fastmix, CUDA kernel (backend='cuda')",
    "fastmix-triton": "fastmix, Triton kernel (backend='triton')",
}


@dataclasses.dataclass
class Case:
    """One benchmark point: an op at one shape and dtype, its providers, and the floor copy.

    ``notes`` explains provider names not in ``PROVIDER_NOTES`` (the paper's formula, the peers); ``extra`` goes
    into every row (e.g. ``mode``).
    """

    op: str
    shape: tuple
    dtype: torch.dtype
    providers: dict[str, Callable[[], object]]
    floor: Callable[[], object]
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long to time, and the problem sizes; ``--quick`` shrinks them (``describe`` says how)."""

    quick: bool
    min_rounds: int
    max_rounds: int
    case_budget_s: float
    min_sample_s: float
    warmup_s: float
    long_call_s: float
    image_side: int
    gmm_rows: int
    gmm_labels: int
    batches: tuple = (32, 128)
    gmm_groups_of: tuple = ()  # (groups, values each) of a second fit_gmm2 case with equal groups; () for none

    def sizes(self) -> str:
        return (f"batches {', '.join(map(str, self.batches))}; images 3 x {self.image_side} x {self.image_side}; "
                f"fit_gmm2 on {self.gmm_rows} rows x {self.gmm_labels} labels"
                + (" and on {} groups of {} values".format(*self.gmm_groups_of) if self.gmm_groups_of else "")
                + f"; {self.min_rounds}-{self.max_rounds} "
                f"interleaved rounds per case (more while under {self.case_budget_s:g} s); a sample lasts >= "
                f"{self.min_sample_s * 1e3:g} ms after >= {self.warmup_s * 1e3:g} ms of untimed calls of the same "
                f"provider (so that no sample pays for the provider timed before it; none where a call lasts over "
                f"{self.long_call_s:g} s)")


def describe(s: Settings, device: torch.device) -> str:
    """What the run timed; for a quick run, also what the full run times instead."""
    if not s.quick:
        return f"full run: {s.sizes()}"
    return f"quick run (--quick): {s.sizes()}. The full run: {settings(False, device).sizes()}"


def settings(quick: bool, device: torch.device) -> Settings:
    """The quick or the full run's settings on ``device`` (the full GMM fit has MS-COCO's size on a GPU; on a GPU
    both runs also fit 160 groups of 118,287 values, the GPU fit's size target)."""
    equal_groups = (160, 118_287) if device.type == "cuda" else ()
    if quick:
        return Settings(True, min_rounds=5, max_rounds=10, case_budget_s=0.2, min_sample_s=0.001, warmup_s=0.005,
                        long_call_s=1.0, image_side=64, gmm_rows=2_000, gmm_labels=16, gmm_groups_of=equal_groups)
    return Settings(False, min_rounds=10, max_rounds=50, case_budget_s=3.0, min_sample_s=0.01, warmup_s=0.02,
                    long_call_s=1.0, image_side=224, gmm_rows=118_287 if device.type == "cuda" else 20_000,
                    gmm_labels=80, gmm_groups_of=equal_groups)


def copy_floor(source: torch.Tensor) -> Callable[[], object]:
    """The floor of an op that reads ``source`` once and writes as many bytes: a clone on a CPU, a copy into a
    buffer allocated once on a GPU (a device-to-device copy, no allocator in the timing)."""
    if source.device.type != "cuda":
        return source.clone
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def bytes_floor(bytes_moved: int, device: torch.device) -> Callable[[], object]:
    """``copy_floor`` of a byte buffer whose copy moves ``bytes_moved`` bytes (half read, half written)."""
    return copy_floor(torch.empty(max(1, bytes_moved // 2), dtype=torch.uint8, device=device))


def timed_backends(device: torch.device, supported: tuple) -> list[str]:
    """The fastmix backends worth timing on ``device``: available ones, and not Triton's CPU interpreter (its
    timings measure the interpreter, not the kernel)."""
    return [b for b in supported if not _backend.unavailable_reason(b, device.type)
            and not (b == "triton" and device.type != "cuda")]


def backend_providers(call: Callable[[str], object], device: torch.device, supported: tuple
                      ) -> dict[str, Callable[[], object]]:
    """``{"fastmix-<backend>": ..., "reference": ...}``: ``call(backend)`` for each of the op's ``supported``
    backends timed on ``device``."""
    backends = sorted(timed_backends(device, supported), key=lambda b: b == REFERENCE)  # fastmix's first
    return {(REFERENCE if b == REFERENCE else f"fastmix-{b}"): (lambda b=b: call(b)) for b in backends}


def spread(values) -> tuple[float, float, float]:
    """(median, p20, p80) with linear interpolation between order statistics."""
    p50, p20, p80 = np.percentile(np.asarray(values, dtype=np.float64), [50, 20, 80])
    return float(p50), float(p20), float(p80)


def summarise(samples: dict[str, list[float]]) -> dict[str, dict]:
    """Per provider: time median/p20/p80 (ms), and the same of the paired per-round ratios ``t / t_floor`` and
    ``t_reference / t`` (None without a floor or reference). ``samples[name][r]`` is round r's time."""
    out = {}
    for name, times in samples.items():
        row = dict(zip(("median_ms", "p20_ms", "p80_ms"), spread(times)))
        for key, other, ratio in (("x_floor", FLOOR, lambda t, o: t / o),
                                  ("vs_reference", REFERENCE, lambda t, o: o / t)):
            stats = spread([ratio(t, o) for t, o in zip(times, samples[other])]) if other in samples else (None,) * 3
            row.update(zip((key, f"{key}_p20", f"{key}_p80"), stats))
        row["rounds"] = len(times)
        out[name] = row
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_sample(fn: Callable[[], object], calls: int, device: torch.device) -> tuple[float, float]:
    """(device ms per call, host ms per call) over ``calls`` back-to-back calls. On a CPU both are the same."""
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = (time.perf_counter() - start) * 1e3 / calls
        return elapsed, elapsed
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) * 1e3 / calls
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / calls, host


def call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """The time of one call of ``fn`` (ms), after one untimed call."""
    fn()
    _sync(device)
    return one_sample(fn, 1, device)[0]


def calls_lasting(once_ms: float, seconds: float) -> int:
    """The number of calls of ``once_ms`` each that lasts ``seconds``, at least one."""
    return max(1, math.ceil(seconds * 1e3 / max(once_ms, 1e-6)))


def interleaved_samples(providers: dict[str, Callable[[], object]], device: torch.device, s: Settings
                        ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Round-robin timing: per provider, one device-time and one host-time sample (ms per call) per round, each
    right after the provider's untimed warm-up calls (``s.warmup_s``; none for calls over ``s.long_call_s``)."""
    names = list(providers)
    once_ms = {name: call_ms(providers[name], device) for name in names}
    calls = {name: calls_lasting(once_ms[name], s.min_sample_s) for name in names}
    warmup_calls = {name: 0 if once_ms[name] > s.long_call_s * 1e3 else calls_lasting(once_ms[name], s.warmup_s)
                    for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    host: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < s.min_rounds or (rounds < s.max_rounds and time.perf_counter() - start < s.case_budget_s):
        for k in range(len(names)):
            name = names[(rounds + k) % len(names)]
            for _ in range(warmup_calls[name]):
                providers[name]()
            device_ms, host_ms = one_sample(providers[name], calls[name], device)
            times[name].append(device_ms)
            host[name].append(host_ms)
        rounds += 1
    return times, host


# Ops that launch no kernel: views and allocations.
_NO_KERNEL = {torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided, torch.ops.aten.lift_fresh}


class DispatchCounter(TorchDispatchMode):
    """Counts the ops that reach the dispatcher below autograd (forward and backward), views and allocations left
    out: on a GPU each is at least one kernel launch. A fastmix custom op counts once, whatever runs inside it;
    host-side numpy work (the timm-like and paper providers) is not counted."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (func.is_view or func.overloadpacket in _NO_KERNEL):
            self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_call(fn: Callable[[], object]) -> int:
    with DispatchCounter() as counter:
        fn()
    return counter.count


@contextlib.contextmanager
def thread_limit(threads: int):
    """torch's intra-op threads and, with threadpoolctl, every OpenMP runtime loaded (fastmix._C links its own)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=threads)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(previous)


def thread_counts(device: torch.device) -> list[int]:
    """1 thread and all threads on a CPU; the current setting on a GPU (the host threads do not do the work)."""
    return [torch.get_num_threads()] if device.type == "cuda" else sorted({1, torch.get_num_threads()})


def run_case(case: Case, device: torch.device, s: Settings, threads: int, counts: dict[str, int] | None = None
             ) -> list[dict]:
    """Times the case's providers and its floor interleaved; one row per provider, the floor first. ``counts``:
    the ops per call of each provider when already counted (they do not depend on the threads)."""
    providers = {FLOOR: case.floor, **case.providers}
    with thread_limit(threads):
        times, host = interleaved_samples(providers, device, s)
    counts = counts or {name: ops_per_call(fn) for name, fn in providers.items()}
    summary = summarise(times)
    return [{"op": case.op, "shape": list(case.shape), "dtype": str(case.dtype).removeprefix("torch."),
             "threads": threads, "provider": name, **summary[name], "ops_per_call": counts[name],
             "host_us": spread(host[name])[0] * 1e3 if device.type == "cuda" else None,
             "note": case.notes.get(name) or PROVIDER_NOTES.get(name, ""), **case.extra}
            for name in providers]


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_LIMIT = 1 << 30


def steady_cpu_heap() -> str:
    """Makes glibc serve allocations up to 1 GiB from its heap and keep freed memory there (``mallopt``: no mmap for
    large blocks, no trimming), so a call reuses the pages the previous call touched; returns the report's line.

    With glibc's defaults a tensor of tens of MB is mmapped when allocated and unmapped when freed, so a call pays
    the page faults of a fresh output (on the 2-core VM of the committed reports, 20 of the 32 ms of cloning a
    (128, 3, 224, 224) float32 batch), or does not, once glibc's dynamic thresholds have moved: the floor and every
    provider that allocates then flip between two times from round to round. On a steady heap the report times the
    work, not the kernel's page faults; ``--system-heap`` keeps glibc's defaults. Process-wide and not undone: for
    the ``python -m fastmix bench`` process only.
    """
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "system heap (no glibc mallopt here)"
    if not (mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT) and mallopt(_M_TRIM_THRESHOLD, _HEAP_LIMIT)):
        return "system heap (glibc refused the mallopt settings)"
    return (f"steady heap: glibc mallopt M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = {_HEAP_LIMIT} bytes, so outputs reuse "
            "memory the previous call touched (no per-call page faults; --system-heap times them)")


def all_cases(device: torch.device, s: Settings) -> list[Case]:
    from fastmix.benchcases import case_modules

    return [case for module in case_modules() for case in module.cases(device, s)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, s: Settings | None = None, heap: str | None = None) -> dict:
    """Where and with what the numbers were measured: device, CPU, versions, commit, peers, settings."""
    report = info()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    from fastmix.benchcases import peers

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_name()}",
        "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(), "fastmix": report["fastmix"],
        "torch": report["torch"], "triton": report["triton"], "cuda": report["torch_cuda"],
        "native": report["native"], "commit": commit, "peers": peers.versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": dataclasses.asdict(s) if s else None, "run": describe(s, device) if s else None,
        "cpu_heap": heap,
    }


def output_folder(out_dir: str | None) -> Path:
    """``--out``, else ``./fastmix-bench-results`` in the current directory (never the repository's committed
    ``benchmarks/results``, which holds reviewed runs)."""
    return Path(out_dir) if out_dir else Path.cwd() / DEFAULT_OUT_DIR


def output_stem(device_name: str, when: datetime.datetime, quick: bool) -> str:
    """``<device>-<YYYYmmdd-HHMMSS>[-quick]`` (the report's UTC date): file-name-safe, one per run."""
    device = re.sub(r"[^A-Za-z0-9.+-]+", "_", device_name).strip("_")
    return f"{device}-{when:%Y%m%d-%H%M%S}" + ("-quick" if quick else "")


def _interval(median, low, high, fmt: str) -> str:
    if median is None:
        return ""
    return f"{median:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def legend(rows: list[dict]) -> list[tuple[str, str]]:
    """(provider, what it is) for every provider in ``rows``; a name meaning different things per op is split."""
    notes: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        notes.setdefault(r["provider"], {}).setdefault(r["note"], [])
        if r["op"] not in notes[r["provider"]][r["note"]]:
            notes[r["provider"]][r["note"]].append(r["op"])
    out = []
    for provider, by_note in notes.items():
        for note, ops in by_note.items():
            out.append((provider if len(by_note) == 1 else f"{provider} ({', '.join(ops)})", note))
    return out


def markdown_table(meta: dict, rows: list[dict]) -> str:
    """The report: one row per (case, threads, provider) with the spread, a warning for a ratio to the floor < 1,
    the legend of every provider name and of the columns."""
    host = any(r["host_us"] is not None for r in rows)
    lines = [f"# fastmix benchmarks on {meta['device']} ({meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, fastmix {meta['fastmix']} "
             f"(commit {meta['commit']}); CPU {meta['cpu']}, {meta['cpu_threads']} threads; peers: "
             + ", ".join(f"{k} {v or 'not installed'}" for k, v in meta["peers"].items()), ""]
    if meta.get("run"):
        lines += [f"{meta['run']}.", ""]
    if meta.get("cpu_heap"):
        lines += [f"CPU memory: {meta['cpu_heap']}.", ""]
    header = ["op", "shape", "dtype", "threads", "provider", "median us [p20, p80]", "x floor [p20, p80]",
              "vs reference [p20, p80]", "ops/call"] + (["host us"] if host else [])
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    below_floor = False
    for r in rows:
        floor_cell = _interval(r["x_floor"], r["x_floor_p20"], r["x_floor_p80"], ".2f")
        if r["provider"] != FLOOR and r["x_floor"] is not None and r["x_floor"] < 1:
            floor_cell += " (!)"
            below_floor = True
        cells = [r["op"], "x".join(map(str, r["shape"])), r["dtype"], str(r["threads"]), r["provider"],
                 _interval(r["median_ms"] * 1e3, r["p20_ms"] * 1e3, r["p80_ms"] * 1e3, ".1f"), floor_cell,
                 "" if r["provider"] in (FLOOR, REFERENCE) else _interval(r["vs_reference"], r["vs_reference_p20"],
                                                                 r["vs_reference_p80"], ".2f"),
                 str(r["ops_per_call"])] + ([f"{r['host_us']:.1f}" if r["host_us"] is not None else ""] if host else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: median time per call and its p20/p80 over the interleaved rounds; 'x floor' = median "
              "over rounds of (time / the floor's time in the same round), >= 1 expected; 'vs reference' = median "
              "over rounds of (the reference's time / time) in the same round, > 1 = faster than fastmix's "
              "reference; 'ops/call' = ops dispatched per call below autograd, views and allocations left out (on "
              "a GPU each is at least one kernel launch; a fastmix custom op counts once)"
              + ("; 'host us' = host time of one call without synchronisation (Python, dispatch, launch)." if host
                 else "."), ""]
    if below_floor:
        lines += ["(!) ratio to the floor below 1: the provider moved fewer bytes than the floor copies (an "
                  "in-place update, a CutMix box paste, a lazy or cached result) or the difference is noise; "
                  "read its time, not the ratio.", ""]
    lines += ["Providers:", ""] + [f"- `{name}`: {note}" for name, note in legend(rows)]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """One panel per op: the cases (shape, dtype, threads) on a categorical axis, one marker per provider (one colour
    and shape per provider in every panel) with its p20-p80 error bar, no line between different cases. False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = list(dict.fromkeys(r["op"] for r in rows))
    palette, markers = plt.get_cmap("tab10").colors, "os^D"
    styles = {name: (palette[k % len(palette)], markers[k // len(palette) % len(markers)])
              for k, name in enumerate(dict.fromkeys(r["provider"] for r in rows))}
    columns = min(3, len(ops))
    height = -(-len(ops) // columns)
    fig, axes = plt.subplots(height, columns, figsize=(6 * columns, 4 * height), squeeze=False)
    for ax in axes.flat[len(ops):]:
        ax.set_visible(False)
    for ax, op in zip(axes.flat, ops):
        points = [r for r in rows if r["op"] == op]
        cases = list(dict.fromkeys(("x".join(map(str, r["shape"])), r["dtype"], r["threads"]) for r in points))
        providers = list(dict.fromkeys(r["provider"] for r in points))
        width = 0.8 / len(providers)
        for k, provider in enumerate(providers):
            mine = [r for r in points if r["provider"] == provider]
            xs = [cases.index(("x".join(map(str, r["shape"])), r["dtype"], r["threads"])) - 0.4 + (k + 0.5) * width
                  for r in mine]
            median = np.array([r["median_ms"] * 1e3 for r in mine])
            low = median - np.array([r["p20_ms"] * 1e3 for r in mine])
            high = np.array([r["p80_ms"] * 1e3 for r in mine]) - median
            colour, marker = styles[provider]
            ax.errorbar(xs, median, yerr=[low, high], fmt=marker, linestyle="none", capsize=2, label=provider,
                        color=colour)
        ax.set_xticks(range(len(cases)), [f"{shape}\n{dtype}, {threads} thr" for shape, dtype, threads in cases],
                      fontsize=7)
        ax.set(title=op, ylabel="median us (bars: p20-p80)", yscale="log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_report(meta: dict, rows: list[dict], folder: Path, stem: str) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and, with matplotlib, ``<stem>.png`` in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{stem}.json", folder / f"{stem}.md"]
    written[0].write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    written[1].write_text(markdown_table(meta, rows))
    if plot(rows, folder / f"{stem}.png"):
        written.append(folder / f"{stem}.png")
    return written


def select(cases: list[Case], ops: list[str]) -> list[Case]:
    """The cases of the named ops; a name also selects the ops it starts (``Mixup`` selects ``Mixup elem cutmix``)."""
    def chosen(case: Case, name: str) -> bool:
        return case.op == name or case.op.startswith(name + " ")

    unknown = [name for name in ops if not any(chosen(case, name) for case in cases)]
    if unknown:
        known = ", ".join(dict.fromkeys(case.op for case in cases))
        raise SystemExit(f"--ops: unknown {', '.join(unknown)}; the ops are {known}")
    return [case for case in cases if any(chosen(case, name) for name in ops)]


def main(quick: bool = False, out_dir: str | None = None, ops: list[str] | None = None, system_heap: bool = False
         ) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    heap = None if device.type == "cuda" else "system heap (--system-heap)" if system_heap else steady_cpu_heap()
    s = settings(quick, device)
    cases = all_cases(device, s)
    if ops:
        cases = select(cases, ops)
    print(describe(s, device), flush=True)
    rows = []
    threads = thread_counts(device)
    for index, case in enumerate(cases, 1):
        counts = None
        for count in threads:
            print(f"[{index}/{len(cases)}] {case.op} {tuple(case.shape)} {str(case.dtype).removeprefix('torch.')} "
                  f"{count} thread(s)", flush=True)
            rows.extend(run_case(case, device, s, count, counts))
            counts = {row["provider"]: row["ops_per_call"] for row in rows[-len(case.providers) - 1:]}
    meta = machine(device, s, heap)
    stem = output_stem(meta["device"], datetime.datetime.fromisoformat(meta["date"]), quick)
    written = write_report(meta, rows, output_folder(out_dir), stem)
    print(markdown_table(meta, rows))
    print("wrote " + ", ".join(map(str, written)) + ("" if len(written) == 3 else " (no plot: pip install matplotlib)"))
    return 0
