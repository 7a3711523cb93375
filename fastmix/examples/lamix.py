"""LaMix vs mixup vs plain training on scikit-learn's digits, on the CPU (LaMix paper, section 2).

    python -m fastmix.examples.lamix              # 3 seeds x 60 epochs, a few minutes on 2 cores
    python -m fastmix.examples.lamix --quick      # 1 seed x 3 epochs, a smoke run

Needs scikit-learn (``pip install scikit-learn``) for the data only; data and model come from the examples'
shared harness (``fastmix/examples/harness.py``: digits upsampled to 16x16, 500 test images, optional label
noise, a small CNN). The three methods train the same CNN with the same optimiser, batch size and number of steps;
each seed fixes the split, the noise and the initialisation for all three. LaMix alternates original and averaged
mini-batches (section 2.4) with lam ~ Beta(1, 1) and beta = 0.5, the paper's settings, and reads the CNN's
embedding with its two heads (``LaMixHead``); mixup uses one lam ~ Beta(1, 1) per batch, as in the mixup authors'
code. Test accuracy uses the classifier head only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import fastmix
from fastmix import _random
from fastmix.examples import harness

METHODS = ("plain", "mixup", "lamix")


def train(method: str, task: harness.Task, epochs: int, seed: int, batch_size: int = 64, lr: float = 1e-3) -> dict:
    """Trains one model and returns its test accuracy, last epoch's mean training loss and wall time."""
    torch.manual_seed(seed)
    model = harness.SmallCNN()
    head = fastmix.LaMixHead(64, harness.NUM_CLASSES)  # LaMix's W_l and W_t; the others use model.classifier
    classifier = head.classifier if method == "lamix" else model.classifier
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr)
    lamix = fastmix.LaMix(alpha=1.0, beta=0.5)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = task.train_x, task.train_y
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(x_train.size(0), generator=generator)
        losses = []
        for begin in range(0, x_train.size(0), batch_size):
            index = order[begin:begin + batch_size]
            x, y = x_train[index], y_train[index]
            if method == "lamix":
                x_in, batch = lamix(x, y, generator=generator)
                logits, target_logits = head(model.embed(x_in))
                loss = lamix.loss(logits, target_logits, batch)
            elif method == "mixup":
                lam = _random.sample_beta(1.0, 1, x.device, generator)  # one lam per batch, broadcast
                perm = torch.randperm(x.size(0), generator=generator)
                logits = classifier(model.embed(lam * x + (1 - lam) * x[perm]))
                loss = (lam * nn.functional.cross_entropy(logits, y)
                        + (1 - lam) * nn.functional.cross_entropy(logits, y[perm]))
            else:
                loss = nn.functional.cross_entropy(classifier(model.embed(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = harness.accuracy(classifier(model.embed(task.test_x)), task.test_y)
    return {"accuracy": accuracy, "train_loss": statistics.fmean(losses), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run, the same for every method "
                        "(default 60, 3 with --quick)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per method, seeds 0..N-1")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs unless --epochs is given")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--noise", type=float, default=0.0, help="rate of flipped training labels (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the model is tiny; 2 threads ran 20-40x slower on a busy "
                        "2-core machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    if args.epochs is None:
        args.epochs = 3 if args.quick else 60
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {method: [] for method in METHODS}
    for seed in range(args.seeds):
        task = harness.load_task("single", args.noise, seed, args.limit)
        for method in METHODS:
            run = train(method, task, args.epochs, seed)
            results[method].append(run)
            print(f"seed {seed} {method:6s} test accuracy {run['accuracy']:.4f}  last-epoch train loss "
                  f"{run['train_loss']:.4f}  {run['seconds']:.1f} s", flush=True)
    print(f"\n{args.epochs} epochs, {args.seeds} seed(s), {task.train_x.size(0)} training / {task.test_x.size(0)} test "
          f"images, label noise {args.noise}")
    print("| method | test accuracy (mean +- std over seeds) | seconds per run |")
    print("| --- | --- | --- |")
    for method, runs in results.items():
        accuracies = [run["accuracy"] for run in runs]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"| {method} | {statistics.fmean(accuracies):.4f} +- {spread:.4f} | "
              f"{statistics.fmean(run['seconds'] for run in runs):.1f} |")
    return results


if __name__ == "__main__":
    main()
