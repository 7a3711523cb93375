"""The benchmark harness: paired ratios, interleaving, op counts, output folder and names, the report's legend and
warnings, and every benchmark case's providers running once at toy sizes."""

import dataclasses
import datetime
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastmix import bench
from fastmix.benchcases import case_modules

TINY = dataclasses.replace(bench.settings(True, torch.device("cpu")), min_rounds=3, max_rounds=3, case_budget_s=0.0,
                           min_sample_s=0.0, warmup_s=0.0, image_side=8, gmm_rows=64, gmm_labels=2, batches=(2, 4),
                           gmm_groups_of=(3, 50))


def test_summary_pairs_each_provider_with_the_floor_and_reference_of_the_same_round():
    # Round 4 is slow for everyone (drift): paired ratios stay exact, while the times spread.
    samples = {"floor": [1.0, 1.0, 1.0, 1.0, 10.0], "reference": [6.0, 6.0, 6.0, 6.0, 60.0],
               "fastmix-cpu": [2.0, 3.0, 2.0, 4.0, 20.0]}
    summary = bench.summarise(samples)
    fast = summary["fastmix-cpu"]
    # times sorted 2, 2, 3, 4, 20: median 3; p20 at rank 0.8 -> 2; p80 at rank 3.2 -> 4 + 0.2 * 16
    assert (fast["median_ms"], fast["p20_ms"], fast["p80_ms"]) == pytest.approx((3.0, 2.0, 7.2))
    # paired t / floor: 2, 3, 2, 4, 2 -> sorted 2, 2, 2, 3, 4: median 2, p20 2, p80 3 + 0.2 * 1
    assert (fast["x_floor"], fast["x_floor_p20"], fast["x_floor_p80"]) == pytest.approx((2.0, 2.0, 3.2))
    # paired reference / t: 3, 2, 3, 1.5, 3 -> sorted 1.5, 2, 3, 3, 3: median 3, p20 1.5 + 0.8 * 0.5, p80 3
    assert (fast["vs_reference"], fast["vs_reference_p20"], fast["vs_reference_p80"]) == pytest.approx((3.0, 1.9, 3.0))
    assert summary["reference"]["x_floor"] == pytest.approx(6.0)
    assert summary["reference"]["vs_reference"] == 1.0
    assert summary["floor"]["x_floor"] == 1.0
    assert fast["rounds"] == 5


def test_summary_without_a_reference_leaves_the_column_empty():
    summary = bench.summarise({"floor": [1.0, 2.0], "fastmix": [2.0, 4.0]})
    assert summary["fastmix"]["vs_reference"] is None
    assert summary["fastmix"]["x_floor"] == 2.0


def test_providers_are_timed_interleaved_in_rotating_order_each_sample_after_its_own_warm_up(monkeypatch):
    log = []

    def provider(name):
        def call():
            log.append(name)
            time.sleep(0.001)
        return call

    def logged_sample(fn, calls, device):
        log.append("|")  # where the timing starts
        return timed_sample(fn, calls, device)

    providers = {n: provider(n) for n in "abc"}
    calibrated_ms = {providers["a"]: 1.0, providers["b"]: 1.0, providers["c"]: 2000.0}  # c: a call over long_call_s
    timed_sample = bench.one_sample
    monkeypatch.setattr(bench, "one_sample", logged_sample)
    monkeypatch.setattr(bench, "call_ms", lambda fn, device: calibrated_ms[fn])
    # a and b: 2 timed calls after 3 untimed ones; c: 1 timed call and no warm-up
    settings = dataclasses.replace(TINY, min_sample_s=0.002, warmup_s=0.003, long_call_s=1.0)
    times, host = bench.interleaved_samples(providers, torch.device("cpu"), settings)
    samples = "".join(log).split("|")  # what ran before each timing started, then the last sample's calls
    timed = {"a": "aa", "b": "bb", "c": "c"}
    warm_up = {"a": "aaa", "b": "bbb", "c": ""}
    order = "abc" "bca" "cab"  # rounds rotate the order
    assert samples == [warm_up[order[0]]] + [timed[order[k]] + warm_up[order[k + 1]] for k in range(8)] + ["bb"]
    assert all(len(t) == 3 and min(t) >= 1.0 for t in times.values())  # ms per call, each call sleeps 1 ms
    assert host == times  # on a CPU the host time is the time


def test_warm_up_and_sample_call_counts_last_the_requested_time():
    assert bench.calls_lasting(2.0, 0.01) == 5
    assert bench.calls_lasting(3.0, 0.01) == 4  # rounded up
    assert bench.calls_lasting(50.0, 0.01) == 1  # a slow provider: one call
    assert bench.calls_lasting(1.0, 0.0) == 1  # never zero


def test_dispatch_counter_counts_kernels_not_views_or_allocations():
    x = torch.randn(4, 4, requires_grad=True)
    assert bench.ops_per_call(lambda: x.detach().view(-1).t()) == 0
    assert bench.ops_per_call(lambda: torch.empty(8)) == 0
    assert bench.ops_per_call(lambda: x.detach().add(1).mul(2)) == 2
    # forward mul + sum, backward: expand of the ones gradient is a view, mul by the other factor
    backward = bench.ops_per_call(lambda: torch.autograd.grad((x * 3).sum(), x))
    assert backward >= 3


def test_run_case_rows_have_the_floor_first_and_every_column():
    x = torch.randn(64, 64)
    case = bench.Case("toy", (64, 64), torch.float32, {"fastmix-cpu": lambda: x + 1, "reference": lambda: x * 2 + 1},
                      bench.copy_floor(x))
    rows = bench.run_case(case, torch.device("cpu"), TINY, threads=1)
    assert [r["provider"] for r in rows] == ["floor", "fastmix-cpu", "reference"]
    floor, fast, reference = rows
    assert floor["x_floor"] == 1.0 and reference["vs_reference"] == 1.0
    assert (fast["ops_per_call"], reference["ops_per_call"], floor["ops_per_call"]) == (1, 2, 1)
    assert all(r["threads"] == 1 and r["host_us"] is None and r["note"] for r in rows)


def test_thread_limit_restores_torch_threads():
    before = torch.get_num_threads()
    with bench.thread_limit(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert bench.thread_counts(torch.device("cpu"))[0] == 1


def test_output_goes_to_the_named_folder_or_outside_the_committed_results(tmp_path, monkeypatch):
    assert bench.output_folder(str(tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    default = bench.output_folder(None)
    assert default == tmp_path / "fastmix-bench-results"
    assert "benchmarks" not in default.parts


def test_output_names_carry_the_device_and_a_timestamp_to_the_second():
    when = datetime.datetime(2026, 12, 1, 15, 4, 5)
    assert bench.output_stem("NVIDIA H200", when, quick=False) == "NVIDIA_H200-20261201-150405"
    assert bench.output_stem("CPU Intel(R) Xeon(R) 8375C @ 2.90GHz", when, quick=True) == \
        "CPU_Intel_R_Xeon_R_8375C_2.90GHz-20261201-150405-quick"
    later = bench.output_stem("NVIDIA H200", when + datetime.timedelta(seconds=1), quick=False)
    assert later != bench.output_stem("NVIDIA H200", when, quick=False)


def row(op, provider, median, x_floor, note, vs_reference=None):
    return {"op": op, "shape": [2, 3], "dtype": "float32", "threads": 1, "provider": provider,
            "median_ms": median, "p20_ms": median * 0.9, "p80_ms": median * 1.1, "x_floor": x_floor,
            "x_floor_p20": x_floor * 0.9, "x_floor_p80": x_floor * 1.1, "vs_reference": vs_reference,
            "vs_reference_p20": vs_reference, "vs_reference_p80": vs_reference, "rounds": 5, "ops_per_call": 1,
            "host_us": None, "note": note}


META = {"device": "CPU toy", "date": "2026-12-01T15:04:05+00:00", "torch": "2.13", "triton": "3.9", "cuda": None,
        "fastmix": "0.1", "commit": "abc1234", "cpu": "toy", "cpu_threads": 2, "peers": {"timm": None},
        "run": "quick run"}


def test_report_shows_spread_warns_below_the_floor_and_explains_every_provider(tmp_path):
    rows = [row("a", "floor", 1.0, 1.0, "the floor"), row("a", "reference", 2.0, 2.0, "the oracle", 1.0),
            row("a", "paper", 0.5, 0.5, "formula A", 4.0), row("b", "floor", 1.0, 1.0, "the floor"),
            row("b", "paper", 3.0, 3.0, "formula B")]
    table = bench.markdown_table(META, rows)
    assert "| a | 2x3 | float32 | 1 | paper | 500.0 [450.0, 550.0] | 0.50 [0.45, 0.55] (!) | 4.00 [4.00, 4.00] |" \
        in table
    assert table.count("(!)") == 2  # the row and the note under the table
    assert "host us" not in table  # no provider has a host time (CPU run)
    for line in ("- `floor`: the floor", "- `reference`: the oracle", "- `paper (a)`: formula A",
                 "- `paper (b)`: formula B"):
        assert line in table
    written = bench.write_report(META, rows, tmp_path / "out", "stem")
    assert [p.name for p in written[:2]] == ["stem.json", "stem.md"]
    assert json.loads(written[0].read_text())["rows"] == rows


def test_plot_draws_error_bars_on_a_categorical_axis(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [row("a", "floor", 1.0, 1.0, "f"), row("a", "fastmix-cpu", 2.0, 2.0, "k"),
            {**row("a", "fastmix-cpu", 4.0, 2.0, "k"), "shape": [4, 3]}]
    assert bench.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("module", case_modules(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_case_runs_its_providers_and_explains_them(module):
    device = torch.device("cpu")
    for case in module.cases(device, TINY):
        assert case.shape[0] in TINY.batches or case.op.startswith("fit_gmm2")
        case.floor()
        for name, provider in case.providers.items():
            provider()
            assert case.notes.get(name) or bench.PROVIDER_NOTES.get(name), f"{case.op}: {name} has no legend"


def test_ops_are_selected_by_name_or_by_the_family_they_start():
    def case(op):
        return bench.Case(op, (1,), torch.float32, {}, lambda: None)

    cases = [case("mixup"), case("Mixup batch mixup"), case("Mixup elem cutmix"), case("fit_gmm2")]
    assert [c.op for c in bench.select(cases, ["Mixup"])] == ["Mixup batch mixup", "Mixup elem cutmix"]
    assert [c.op for c in bench.select(cases, ["mixup", "fit_gmm2"])] == ["mixup", "fit_gmm2"]
    with pytest.raises(SystemExit, match="unknown Mix"):
        bench.select(cases, ["Mix"])


def test_a_quick_run_says_what_it_changed():
    device = torch.device("cpu")
    quick, full = bench.settings(True, device), bench.settings(False, device)
    text = bench.describe(quick, device)
    assert text.startswith("quick run")
    for side in (quick.image_side, full.image_side):
        assert f"3 x {side} x {side}" in text
    assert f"{full.gmm_rows} rows" in text and quick.image_side < full.image_side
    assert bench.describe(full, device).startswith("full run")


def test_timm_like_batch_mixup_follows_timm_draw_order_and_mixes_in_place():
    from fastmix.benchcases.peers import TimmLikeMixup

    x, y = torch.rand(4, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    original = x.clone()
    np.random.seed(3)
    np.random.random_sample()  # the prob gate
    lam = np.random.beta(1.0, 1.0)
    np.random.seed(3)
    out, target = TimmLikeMixup(mode="batch", label_smoothing=0.0, num_classes=4)(x, y)
    assert out is x  # in place, as timm
    torch.testing.assert_close(out, lam * original + (1 - lam) * original.flip(0))
    assert target[0, 0] == pytest.approx(lam) and target[0, 3] == pytest.approx(1 - lam)


def test_timm_like_pair_cutmix_swaps_one_box_both_ways_and_targets_sum_to_one():
    from fastmix.benchcases.peers import TimmLikeMixup

    x = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 8, 8).contiguous()
    np.random.seed(0)
    out, target = TimmLikeMixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="pair", num_classes=6)(
        x.clone(), torch.arange(6))
    for i in range(3):
        j = 5 - i
        from_partner = out[i] == j
        assert torch.equal(from_partner, out[j] == i)  # the same box both ways
        assert torch.all((out[i] == i) | from_partner)
        kept = 1 - from_partner[0].float().mean()
        own = target[i, i] - 0.1 / 6  # label smoothing 0.1: on = 1 - 0.1 + 0.1/K, off = 0.1/K
        assert own / 0.9 == pytest.approx(float(kept))
    torch.testing.assert_close(target.sum(1), torch.ones(6))


def test_timm_like_fast_collate_returns_uint8_pixels_of_the_pair():
    from fastmix.benchcases.peers import TimmLikeFastCollateMixup

    images = [np.full((3, 6, 6), 10 * k, dtype=np.uint8) for k in range(4)]
    np.random.seed(1)
    out, target = TimmLikeFastCollateMixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=4)(
        [(image, k) for k, image in enumerate(images)])
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 6, 6)
    for i in range(4):
        assert set(out[i].unique().tolist()) <= {10 * i, 10 * (3 - i)}
    torch.testing.assert_close(target.sum(1), torch.ones(4))


HEAP_PROBE = """
import resource, sys, torch
from fastmix import bench
line = bench.steady_cpu_heap() if sys.argv[1] == "steady" else "system"
x = torch.ones(16 << 20)  # 64 MB: glibc mmaps it by default
for _ in range(10):  # a steady heap settles once the first outputs' freed chunks coalesce
    x.clone()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x.clone()
print(line)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and Linux page faults")
def test_steady_heap_reuses_touched_pages_where_the_system_heap_faults_them_in():
    def faults_per_clone(mode):
        run = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        line, faults = run.stdout.strip().splitlines()
        return line, float(faults)

    line, steady = faults_per_clone("steady")
    _, system = faults_per_clone("system")
    pages = (64 << 20) // 4096
    assert line.startswith("steady heap")
    assert system > pages / 2  # every clone's fresh mapping faults its pages in
    assert steady < pages / 100
