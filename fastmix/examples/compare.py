"""Train a small CNN on digits with every fastmix method and compare them on the same budget.

    python -m fastmix.examples.compare [--task single|multi] [--noise 0.0..0.6] [--epochs N] [--device cpu|cuda]
                                       [--seeds 3] [--methods none,mixup,...] [--limit N] [--threads N] [--out DIR]

Prints a table: test accuracy (single-label) or mAP (multi-label) as mean and spread over seeds, time per epoch,
and the share of the training time spent inside fastmix calls; for BalanceMix, also the AUROC with which the
GMM's clean probability separates the injected noisy labels from the clean ones, per epoch. Writes
``compare-<task>-<noise>.json`` and, with matplotlib, a PNG. Every method uses the same data, split, noise,
initialisation, optimiser, batch size and number of epochs for a given seed. Softmax methods (LUMix, LaMix) run on
the single-label task only and BalanceMix (a multi-label method) on the multi-label task only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import fastmix
from fastmix.examples import harness

METHODS = ("none", "mixup", "cutmix", "lumix", "zeta", "flow", "flow-op-false", "flow-2", "balancemix", "lamix")
METHOD_HELP = {
    "none": "plain training, no mixing (the baseline)",
    "mixup": "fastmix.mixup: one lam ~ Beta(1, 1) per sample, random partners",
    "cutmix": "fastmix.cutmix: one box per sample, random partners, lam = kept area",
    "lumix": "CutMix with LUMix's label weight (lumix_lambda) and loss (lumix_loss); single-label only",
    "zeta": "fastmix.zeta_mixup: every output a convex mix of the whole batch (gamma = 2.8)",
    "flow": "Flow-Mixup: one Mixing module after the first conv block, keeping the original flow (Op=True)",
    "flow-op-false": "the same module without the original flow (Op=False: manifold mixup)",
    "flow-2": "two chained Mixing modules, after the first and the second conv block",
    "balancemix": "BalanceMix: GMM relabeling each epoch, minority sampling, the eq. 10 loss; multi-label only",
    "lamix": "LaMix: 0.5/0.5 input averages and a learned target head (lamix_loss); single-label only",
}
SINGLE_ONLY = {"lumix", "lamix"}
MULTI_ONLY = {"balancemix"}


def supports(method: str, task: str) -> bool:
    return not ((method in SINGLE_ONLY and task == "multi") or (method in MULTI_ONLY and task == "single"))


class Run:
    """One method, one seed: the model, its optimiser and the per-step logic, through fastmix's public API."""

    def __init__(self, method: str, task: harness.Task, seed: int, device: torch.device, timer: harness.OpTimer):
        self.method, self.task, self.device, self.timed = method, task, device, timer
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        slots = None
        if method.startswith("flow"):
            first = fastmix.FlowMixup(alpha=3.0, keep_original=method != "flow-op-false")
            second = fastmix.FlowMixup(alpha=3.0, previous=first) if method == "flow-2" else nn.Identity()
            slots = (first, second)
            self.last_flow = second if method == "flow-2" else first
            for module in (first, second):
                if isinstance(module, fastmix.FlowMixup):  # time the mixing inside the forward pass
                    module.register_forward_pre_hook(lambda *_: self._start())
                    module.register_forward_hook(lambda *_: self._stop())
        self.model = harness.SmallCNN(slots=slots).to(device)
        if method == "lamix":
            self.head = fastmix.LaMixHead(64, harness.NUM_CLASSES).to(device)
            self.model.classifier = self.head.classifier  # evaluation reads W_l; W_t trains through the loss
            self.model.target_head = self.head.target
            self.lamix = fastmix.LaMix(alpha=1.0, beta=0.5)
        if method == "balancemix":
            self.balancemix = fastmix.BalanceMix(len(task.train_y), harness.NUM_CLASSES, warmup_epochs=1, seed=seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self._t0 = 0.0

    def _start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t0 = time.perf_counter()

    def _stop(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timed.seconds += time.perf_counter() - self._t0

    def criterion(self, logits, target):
        if self.task.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target)
        return harness.soft_cross_entropy(logits, harness.dense_labels(target))

    def begin_epoch(self) -> float | None:
        """BalanceMix refits its GMMs on the whole training set; returns the clean-vs-noisy AUROC when it did."""
        if self.method != "balancemix":
            return None
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.task.train_x)
        self.model.train()
        with self.timed():
            fit = self.balancemix.begin_epoch(logits, self.task.train_y)
        self._minority = itertools.cycle(list(self.balancemix.sampler))  # this epoch's minority draws
        if fit is None:
            return None
        truly_clean = (self.task.train_y == self.task.train_y_clean).flatten()
        return harness.auroc(self.balancemix.clean_probability.flatten().cpu(), truly_clean.cpu())

    def step(self, index: torch.Tensor) -> torch.Tensor:
        x, y = self.task.train_x[index], self.task.train_y[index]
        g, K, m = self.generator, harness.NUM_CLASSES, self.method
        if m in ("none",) or m.startswith("flow"):
            logits = self.model(x)
            target = self.last_flow.targets(y, num_classes=K) if m.startswith("flow") else y
            return self.criterion(logits, target)
        if m in ("mixup", "cutmix", "zeta"):
            with self.timed():
                if m == "zeta":
                    x_mixed, y_mixed = fastmix.zeta_mixup(x, y, num_classes=K, generator=g)
                else:
                    x_mixed, y_mixed, _ = getattr(fastmix, m)(x, y, num_classes=K, generator=g)
            return self.criterion(self.model(x_mixed), y_mixed)
        if m == "lumix":
            with self.timed():
                x_mixed, _, params = fastmix.cutmix(x, y, num_classes=K, generator=g)
            logits = self.model(x_mixed)
            with self.timed():
                y_partner = y[params.partner]
                lam = fastmix.lumix_lambda(params.lam, logits, y, y_partner, generator=g)
                return fastmix.lumix_loss(logits, y, y_partner, lam)
        if m == "lamix":
            with self.timed():
                x_in, batch = self.lamix(x, y, generator=g)
            logits, target_logits = self.head(self.model.embed(x_in))
            with self.timed():
                return self.lamix.loss(logits, target_logits, batch)
        if m == "balancemix":
            minority = torch.tensor([next(self._minority) for _ in range(len(index))], device=self.device)
            with self.timed():
                x_mix, y_mix, state = self.balancemix.mix((x, y, index), (self.task.train_x[minority],
                                                                            self.task.train_y[minority], minority),
                                                          generator=g)
            logits = self.model(x_mix)
            with self.timed():
                return self.balancemix.loss(logits, y_mix, state)
        raise ValueError(f"unknown method {m!r}")

    def train_epoch(self, batch_size: int) -> float:
        order = torch.randperm(len(self.task.train_y), generator=self.generator, device=self.device)
        losses = []
        for begin in range(0, len(order) - batch_size + 1, batch_size):  # full batches only
            loss = self.step(order[begin:begin + batch_size])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses).mean().item()


def run_method(method: str, task: harness.Task, seed: int, epochs: int, batch_size: int, device) -> dict:
    timer = harness.OpTimer(device)
    run = Run(method, task, seed, device, timer)
    aurocs, losses = [], []
    start = time.perf_counter()
    for _ in range(epochs):
        aurocs.append(run.begin_epoch())
        losses.append(run.train_epoch(batch_size))
    elapsed = time.perf_counter() - start
    return {"metric": harness.evaluate(run.model, task), "seconds_per_epoch": elapsed / epochs,
            "fastmix_share": timer.seconds / elapsed, "losses": losses,
            "auroc_per_epoch": [a for a in aurocs if a is not None]}


def summarise(results: dict) -> list[dict]:
    rows = []
    for method, runs in results.items():
        metrics = [r["metric"] for r in runs]
        aurocs = [r["auroc_per_epoch"][-1] for r in runs if r["auroc_per_epoch"]]
        rows.append({"method": method, "mean": statistics.mean(metrics),
                     "spread": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
                     "seconds_per_epoch": statistics.mean(r["seconds_per_epoch"] for r in runs),
                     "fastmix_share": statistics.mean(r["fastmix_share"] for r in runs),
                     "gmm_auroc_last_epoch": statistics.mean(aurocs) if aurocs else None})
    return rows


def table(rows: list[dict], task: str) -> str:
    metric = "mAP" if task == "multi" else "accuracy"
    lines = [f"| method | test {metric} (mean ± sd) | s / epoch | in fastmix | GMM AUROC |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        auroc = f"{r['gmm_auroc_last_epoch']:.3f}" if r["gmm_auroc_last_epoch"] is not None else ""
        lines.append(f"| {r['method']} | {r['mean']:.4f} ± {r['spread']:.4f} | {r['seconds_per_epoch']:.2f} | "
                     f"{100 * r['fastmix_share']:.1f}% | {auroc} |")
    return "\n".join(lines)


def plot(rows: list[dict], task: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(rows), 3.5))
    ax.bar([r["method"] for r in rows], [r["mean"] for r in rows], yerr=[r["spread"] for r in rows], capsize=3)
    ax.set_ylabel("test mAP" if task == "multi" else "test accuracy")
    ax.set_ylim(min(r["mean"] for r in rows) - 0.05, 1.0)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    methods_help = "\n".join(f"  {name:<14} {text}" for name, text in METHOD_HELP.items())
    parser = argparse.ArgumentParser(
        prog="python -m fastmix.examples.compare", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"methods:\n{methods_help}\n\nThe default run trains every method that fits the task (9 for single, "
               "8 for multi) for 15 epochs on each of 3 seeds: 27 or 24 runs of 15 epochs of 20 batches of 64 "
               "images (1,297 training images); --epochs, --seeds, --methods and --limit "
               "shorten it.")
    parser.add_argument("--task", choices=("single", "multi"), default="single",
                        help="single: scikit-learn's digits at 16x16, 10 classes, accuracy; multi: 2x2 mosaics of "
                             "digits, multi-hot labels of the digits present, mAP (default: single)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="label-noise rate in [0, 0.6] injected into the training labels only (the test labels "
                             "stay clean), fixed by the seed: single: that fraction of the labels changed to another "
                             "class drawn uniformly; multi: that fraction of the present labels each moved to a class "
                             "the image lacks (default: 0)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per run (default: 15)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="runs per method, seeds 0..N-1; each seed fixes the split, the noise and the "
                             "initialisation for every method alike; the table shows the mean and the spread "
                             "(default: 3)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated method names (see below; default: all, those that do not fit the "
                             "task are skipped)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="folder (created) for compare-<task>-<noise>.json and, with matplotlib, the .png plot "
                             "(default: the current directory)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 <= args.noise <= 0.6:
        parser.error("--noise must be in [0, 0.6]")
    device = torch.device(args.device)
    methods = [m for m in args.methods.split(",") if supports(m, args.task)]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    total, done = len(methods) * args.seeds, 0
    for seed in range(args.seeds):
        task = harness.load_task(args.task, args.noise, seed, args.limit).to(device)
        for method in methods:
            harness.progress(done, total, f"seed {seed} {method}")
            results[method].append(run_method(method, task, seed, args.epochs, args.batch_size, device))
            done += 1
    harness.progress(done, total, "done")
    rows = summarise(results)
    print(table(rows, args.task))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare-{args.task}-{args.noise:g}"
    (out / f"{stem}.json").write_text(json.dumps({"args": vars(args), "summary": rows, "runs": results}, indent=1))
    plotted = plot(rows, args.task, out / f"{stem}.png")
    print(f"wrote {out / stem}.json" + (" and .png" if plotted else " (no plot: pip install matplotlib)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
