"""An event model, on paper, of the fused GMM fit's work queue (``_gmm2_fit_kernel``, launch 7 of ``fit_gmm2`` on
CUDA tensors) on an H100 SXM: ``python benchmarks/gmm_gpu_model.py`` prints its tables in markdown.

No GPU runs here and none has: every time below is the model's, from the rules of docs/gmm_gpu.md ("The fused fit
(launch 7): a model of the work queue"), with its low and high costs. The passes each group makes come from a
float64 numpy model of the k-means init's decisions (``kmeans`` and ``LloydBand`` in csrc/gmm_cpu.cpp) on the
benchmark's data, ``synthetic_losses(118287, 80)``. Deterministic: the same tables on every run.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from fastmix.benchcases.gmm import synthetic_losses
from fastmix.kernels.triton.gmm import fit_chunk

SMS = 132
GRID_BITS = 8  # the median split's grid: 2^8 steps
MAX_LLOYD_STEPS = 30
EM_PASSES = 10  # max_iter=10, tol=0, as the benchmark fits
BLOCK = 1024  # values per step of a program (float32 values)


@dataclass(frozen=True)
class PassCosts:
    """A pass's cost per value read on one SM (ns): the larger of its memory time (4 B at 3.0 TB/s over 132 SMs:
    0.176 ns) and its busiest pipe, from the sm_90 PTX counts of the float32 specialisation (docs/gmm_gpu.md); and
    the grouping's launches 1-6 on paper (ms, low and high), added to the fit kernel for the totals."""

    histogram: float
    split: float
    band: float  # a Lloyd step under the band: its zones, sums and the band's copy-out
    estep: float
    grouping_ms: dict[str, tuple[float, float]]


EARLIER = PassCosts(0.218, 0.178, 0.178 + 0.05, 0.238, {"benchmark": (0.10, 0.17), "uniform": (0.18, 0.29)})
"""The kernel before the band: E-step 53.5 PTX instructions per value (0.238 ns), the count kernel's atomics. Its
band row assumed the split pass's cost plus 0.05 ns for the copy-out."""
TODAY = PassCosts(0.218, 0.178, 69 / 128 / 1.755, 43.75 / 128 / 1.755,
                  {"benchmark": (0.10, 0.14), "uniform": (0.18, 0.22)})
"""Today's kernel: the band loop 69 and the E-step 43.75 PTX instructions per value (128 per clock at 1.755 GHz),
the count kernel's per-program histogram (no count atomics: 29-34 us on the benchmark's data, 57-68 us at 18.9 M)."""
CHUNKS = (8192, 16384, 32768, 65536)


@dataclass(frozen=True)
class Costs:
    """One end of the model's range: per-item and per-pass latencies in microseconds."""

    item_overhead: float  # every claimed item, skipped or not: the claim and its dependent L2 round trips
    step_latency: float  # per BLOCK of values in flight
    reduction: float  # the last chunk of a group's pass: the step after the rows' sum
    reduction_per_row: float  # per chunk row summed


LOW = Costs(1.5, 0.5, 1.0, 0.15)
HIGH = Costs(2.5, 0.65, 2.0, 0.25)
NO_OVERHEADS = Costs(0.0, 0.5, 0.0, 0.0)


@dataclass(frozen=True)
class KMeansProfile:
    """One group's k-means init as the fit runs it: its value count, the values each Lloyd step reads under the
    CPU's LloydBand rule (the whole group when the band does not hold the split), and whether a final split pass
    follows the Lloyd steps (the last step moved the centres)."""

    count: int
    lloyd_reads: tuple[float, ...]
    final_split: bool

    @property
    def lloyd_steps(self) -> int:
        return len(self.lloyd_reads)


def kmeans_profile(x: np.ndarray, stop_on_repeat: bool = True) -> KMeansProfile:
    """The median split over the 2^GRID_BITS-step grid of [0, 1], the halves, then Lloyd steps until the centres
    stop moving or (``stop_on_repeat``) a step's split leaves as many values below it as the previous step's (at
    most MAX_LLOYD_STEPS), in float64 on the group's min-max normalised values x; each step's band as LloydBand
    keeps it."""
    n = x.size
    ordered = np.sort(x)

    def below(split: float) -> int:
        return int(np.searchsorted(ordered, split, side="left"))

    def step(split: float, c0: float, c1: float) -> tuple[int, float, float]:
        lower = x < split
        n0 = int(lower.sum())
        s0, s1 = float(np.sum(x[lower] - c0)), float(np.sum(x[~lower] - c1))
        return n0, (c0 + s0 / n0 if n0 > 0 else c0), (c1 + s1 / (n - n0) if n - n0 > 0 else c1)

    grid = np.arange(1, 2**GRID_BITS + 1, dtype=np.float64) * 2.0**-GRID_BITS  # low 0, high 1
    enough = [j for j in range(2**GRID_BITS - 1) if below(grid[j]) >= n / 2.0]
    split = float(grid[enough[0] if enough else -1])
    _, c0, c1 = step(split, 0.5 * split, 0.5 * (split + 1.0))  # the halves
    previous_split, previous_below = split, -1
    band_low, band_high, band_size = math.inf, -math.inf, 0
    reads, moved = [], True
    for _ in range(MAX_LLOYD_STEPS):
        split = (c0 + c1) / 2.0
        inside = band_low <= split <= band_high
        reads.append(float(band_size if inside else n))
        reach, band_from, band_to = 2.0 * (split - previous_split), split, split
        if math.isfinite(split + reach) and reach > 0.0:
            band_to = min(split + reach, band_high) if inside else split + reach
        if math.isfinite(split + reach) and reach < 0.0:
            band_from = max(split + reach, band_low) if inside else split + reach
        band_low, band_high, band_size = band_from, band_to, below(band_to) - below(band_from)
        n0, new0, new1 = step(split, c0, c1)
        moved = new0 != c0 or new1 != c1
        c0, c1, previous_split = new0, new1, split
        if not moved or (stop_on_repeat and n0 == previous_below):
            break
        previous_below = n0
    return KMeansProfile(n, tuple(reads), moved)


def benchmark_profiles(stop_on_repeat: bool = True) -> list[KMeansProfile]:
    """Every group's profile on ``synthetic_losses(118287, 80)``: 160 groups, group 2k the negatives of class k,
    2k + 1 its positives, in the order the grouping lays them out."""
    losses, groups = synthetic_losses(118287, 80, "cpu")
    values, ids = losses.numpy().ravel(), groups.numpy().ravel()
    order = np.argsort(ids, kind="stable")
    counts = np.bincount(ids, minlength=160)
    profiles = []
    for segment in np.split(values[order], np.cumsum(counts)[:-1]):
        v = segment.astype(np.float64)
        lo, scale = v.min(), v.max() - v.min()
        profiles.append(kmeans_profile((v - lo) * (1.0 / scale), stop_on_repeat))
    return profiles


def uniform_profiles(negatives: list[KMeansProfile], groups: int = 160, count: int = 118287) -> list[KMeansProfile]:
    """``groups`` groups of ``count`` values, each with the Lloyd steps of a negative group of the benchmark's
    data (cycling through them), its band sizes scaled to ``count``."""
    profiles = []
    for g in range(groups):
        negative = negatives[g % len(negatives)]
        reads = tuple(r * count / negative.count for r in negative.lloyd_reads)
        profiles.append(KMeansProfile(count, reads, negative.final_split))
    return profiles


def group_passes(profile: KMeansProfile, band: bool, costs: PassCosts) -> list[tuple[float, float]]:
    """A group's passes as (ns per value, values read in all): the histogram, the halves, the Lloyd steps, the
    final split (without the band only after a step that moved the centres; with it always, a full pass), EM."""
    n = float(profile.count)
    if band:
        lloyd = [(costs.band, r) for r in profile.lloyd_reads] + [(costs.split, n)]
    else:
        lloyd = [(costs.split, n)] * (profile.lloyd_steps + profile.final_split)
    return [(costs.histogram, n), (costs.split, n)] + lloyd + [(costs.estep, n)] * EM_PASSES


@dataclass(frozen=True)
class QueueRun:
    time_us: float
    claims: int
    items_with_values: int  # claimed items of a group's chunk in one of its passes (the rest are skipped)


def simulate(passes: list[list[tuple[float, float]]], counts: list[int], chunk: int, programs_per_sm: int,
             costs: Costs, sms: int = SMS) -> QueueRun:
    """The fused fit's queue: programs claim items in order from one counter; item i is pass i // S, slot i % S
    (S = cdiv(n, chunk) + G), group g's chunks being slots offsets[g] // chunk + g onwards. A claimed item costs
    the overhead; a slot of no chunk, or of a group whose passes are done, is skipped (if the group's last pass is
    still running, the item waits for it, as the kernel's spin does); any other item waits, holding its program,
    for its group's pass to be released, then runs its chunk; the last of the pass's chunks to finish adds the
    reduction and releases the next pass."""
    groups = len(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    slots = -(-int(offsets[-1]) // chunk) + groups
    slot_group, slot_chunk = np.full(slots, -1), np.zeros(slots, dtype=np.int64)
    n_chunks = [max(-(-c // chunk), 1) for c in counts]
    for g in range(groups):
        first = int(offsets[g]) // chunk + g
        slot_group[first:first + n_chunks[g]] = g
        slot_chunk[first:first + n_chunks[g]] = np.arange(n_chunks[g])
    released = [0.0] * groups  # when the group's current pass was released
    finished = [math.inf] * groups
    arrived, latest_end, reducer = [0] * groups, [0.0] * groups, [0] * groups
    programs = programs_per_sm * sms
    free_at = [0.0] * programs
    heap = [(0.0, p) for p in range(programs)]
    items = max(len(p) for p in passes) * slots
    worked = 0
    for item in range(items):
        while True:  # the earliest free program claims (an entry whose program got a reduction since is stale)
            t, program = heapq.heappop(heap)
            if t == free_at[program]:
                break
        pass_index, slot = divmod(item, slots)
        g = int(slot_group[slot])
        claimed = t + costs.item_overhead
        if g < 0 or pass_index >= len(passes[g]):
            end = claimed if g < 0 else max(claimed, finished[g])
            free_at[program] = end
            heapq.heappush(heap, (end, program))
            continue
        worked += 1
        ns_per_value, reads = passes[g][pass_index]
        k = int(slot_chunk[slot])
        values = reads * min(chunk, counts[g] - k * chunk) / counts[g]
        work = max(values * ns_per_value * programs_per_sm * 1e-3, math.ceil(values / BLOCK) * costs.step_latency)
        end = max(claimed, released[g]) + work
        free_at[program] = end
        if end >= latest_end[g]:
            latest_end[g], reducer[g] = end, program
        arrived[g] += 1
        if arrived[g] == n_chunks[g]:  # the pass's last claim: its last chunk to finish reduces
            release = latest_end[g] + costs.reduction + costs.reduction_per_row * n_chunks[g]
            free_at[reducer[g]] = release
            if reducer[g] != program:
                heapq.heappush(heap, (release, reducer[g]))
            released[g], arrived[g], latest_end[g] = release, 0, 0.0
            if pass_index == len(passes[g]) - 1:
                finished[g] = release
        heapq.heappush(heap, (free_at[program], program))
    return QueueRun(max(free_at), items, worked)


def fit_time(profiles: list[KMeansProfile], chunk: int, programs_per_sm: int, costs: Costs,
             band: bool = False, kernel: PassCosts = EARLIER) -> QueueRun:
    """The queue's run over the groups' passes (with or without the Lloyd band)."""
    return simulate([group_passes(p, band, kernel) for p in profiles], [p.count for p in profiles], chunk,
                    programs_per_sm, costs)


def span(low: float, high: float, digits: int = 0) -> str:
    return f"{low:,.{digits}f}-{high:,.{digits}f}"


def fit_span(profiles: list[KMeansProfile], chunk: int, programs_per_sm: int, band: bool = False,
             kernel: PassCosts = EARLIER) -> str:
    return span(*(fit_time(profiles, chunk, programs_per_sm, costs, band, kernel).time_us for costs in (LOW, HIGH)))


def passes_table(sizes: dict[str, list[KMeansProfile]]) -> None:
    print("| groups | values per group | Lloyd steps (min / median / max) | with a final split pass | group passes "
          "(band: final split always) | Lloyd step values read per value (band) | split passes per value (band) |")
    print("|---|---|---|---|---|---|---|")
    for name, profiles in sizes.items():
        n = sum(p.count for p in profiles)
        counts, steps = [p.count for p in profiles], [p.lloyd_steps for p in profiles]
        passes = [sum(len(group_passes(p, band, EARLIER)) for p in profiles) for band in (False, True)]
        full_reads = sum(p.lloyd_steps * p.count for p in profiles) / n
        band_reads = sum(sum(p.lloyd_reads) for p in profiles) / n
        split_passes = sum((p.lloyd_steps + 1 + p.final_split) * p.count for p in profiles) / n
        print(f"| {name} | {span(min(counts), max(counts))} | {min(steps)} / {np.median(steps):g} / {max(steps)} | "
              f"{sum(p.final_split for p in profiles)} | {passes[0]:,} ({passes[1]:,}) | {full_reads:.2f} "
              f"({band_reads:.2f}) | {split_passes:.2f} ({2.0 + band_reads:.2f}) |")


def reproduction_table(benchmark: list[KMeansProfile], uniform: list[KMeansProfile]) -> None:
    """docs/gmm_gpu.md's rows (no band) next to the model's."""
    without_stop_rule = benchmark_profiles(stop_on_repeat=False)
    ten_steps = [KMeansProfile(p.count, (float(p.count),) * 10, False) for p in benchmark]
    uniform_ten = [KMeansProfile(p.count, (float(p.count),) * 10, False) for p in uniform]
    rows = [("benchmark data, its passes", benchmark, 8192, "541-691", "694-1,001"),
            ("benchmark data, without the stop rule", without_stop_rule, 8192, "627-813", ""),
            ("benchmark data, L = 10 for every group", ten_steps, 8192, "460-579", "584-836"),
            ("benchmark data, its passes", benchmark, 16384, "500-603", ""),
            ("benchmark data, its passes", benchmark, 32768, "476-556", ""),
            ("160 x 118,287, L = 10 for every group", uniform_ten, 8192, "892-1,109", "1,130-1,604"),
            ("160 x 118,287, the negatives' Lloyd steps", uniform, 8192, "1,054-1,339", "1,360-1,947")]
    print("| fit kernel (us) | CHUNK | model 3/SM | page 3/SM | model 2/SM | page 2/SM |")
    print("|---|---|---|---|---|---|")
    for name, profiles, chunk, page3, page2 in rows:
        print(f"| {name} | {chunk:,} | {fit_span(profiles, chunk, 3)} | {page3} | {fit_span(profiles, chunk, 2)} | "
              f"{page2} |")
    for chunk, page in ((8192, 376), (16384, 405), (32768, 413)):
        bare = fit_time(benchmark, chunk, 3, NO_OVERHEADS).time_us
        print(f"| benchmark data, no overheads, no reduction | {chunk:,} | {bare:,.0f} | {page} | | |")


VARIANTS = (("earlier kernel, no band", EARLIER, False), ("earlier kernel + band", EARLIER, True),
            ("today", TODAY, True))
"""The kernels modelled: before the band (the page's rows), the band alone, and today's (band, E-step, count)."""


def variants_table(name: str, profiles: list[KMeansProfile], size: str) -> None:
    print(f"{name}: fit kernel (us, low-high), total with the grouping (ms)")
    print()
    print("| CHUNK | kernel | fit 3/SM | no overheads, no reduction 3/SM | total 3/SM (ms) | items claimed / with "
          "values | fit 2/SM |")
    print("|---|---|---|---|---|---|---|")
    for chunk in CHUNKS:
        for label, kernel, band in VARIANTS:
            low, high = (fit_time(profiles, chunk, 3, costs, band, kernel) for costs in (LOW, HIGH))
            bare = fit_time(profiles, chunk, 3, NO_OVERHEADS, band, kernel).time_us
            grouping = kernel.grouping_ms[size]
            total = span(grouping[0] + low.time_us / 1000, grouping[1] + high.time_us / 1000, 2)
            print(f"| {chunk:,} | {label} | {span(low.time_us, high.time_us)} | {bare:,.0f} | {total} | "
                  f"{low.claims:,} / {low.items_with_values:,} | {fit_span(profiles, chunk, 2, band, kernel)} |")
    chunk = fit_chunk(sum(p.count for p in profiles), 3 * SMS)
    low, high = (fit_time(profiles, chunk, 3, costs, True, TODAY) for costs in (LOW, HIGH))
    grouping = TODAY.grouping_ms[size]
    print(f"\nToday's launch (`fit_chunk`: {chunk:,} values per item at 3 programs per SM): fit kernel "
          f"{span(low.time_us, high.time_us)} us, with the grouping "
          f"**{span(grouping[0] + low.time_us / 1000, grouping[1] + high.time_us / 1000, 2)} ms**.")


def main() -> None:
    benchmark = benchmark_profiles()
    uniform = uniform_profiles(benchmark[0::2])
    print("## The passes (float64 model of the k-means decisions)\n")
    passes_table({"benchmark data: 80 negatives": benchmark[0::2], "benchmark data: 80 positives": benchmark[1::2],
                  "160 x 118,287 (the negatives' Lloyd steps)": uniform})
    print("\n## The page's rows against this model (no band)\n")
    reproduction_table(benchmark, uniform)
    for title, profiles, size in (("Benchmark data", benchmark, "benchmark"), ("160 x 118,287", uniform, "uniform")):
        print(f"\n## {title}: CHUNK and the kernels (model, not measured)\n")
        variants_table(title, profiles, size)


if __name__ == "__main__":
    main()
