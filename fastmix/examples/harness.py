"""The shared harness of the examples: digits data (single- and multi-label, with injected label noise), a small
CNN with slots for Flow-Mixup modules, a training loop that times fastmix's share of each step, and metrics.

Data ships with scikit-learn (``load_digits``: 1,797 8x8 images), so nothing is downloaded. The split, the noise
and the initialisation are fixed by the seed, and identical for every method trained with that seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

NUM_CLASSES = 10


@dataclasses.dataclass
class Task:
    """Train/test tensors. ``train_y`` holds the (possibly noisy) training labels, ``train_y_clean`` the truth."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    train_y_clean: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    multi_label: bool

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def to(self, device) -> "Task":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return torch.tensor(images / 16.0, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(labels)


def flip_labels(y: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Single-label noise: exactly ``round(rate * N)`` labels changed, each to a different class drawn uniformly."""
    y = y.clone()
    count = round(rate * y.numel())
    chosen = torch.randperm(y.numel(), generator=generator)[:count]
    shift = torch.randint(1, NUM_CLASSES, (count,), generator=generator)
    y[chosen] = (y[chosen] + shift) % NUM_CLASSES
    return y


def mislabel_multi_hot(y: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Multi-label noise (mislabeling, as in BalanceMix's protocol): exactly ``round(rate * P)`` of the P present
    labels are each moved to a class absent from that sample in the clean labels (one label dropped and one added
    per move), so every sample keeps its number of labels; fewer only if not enough absent classes exist."""
    noisy = y.clone()
    positives = y.nonzero()
    count = round(rate * len(positives))
    moved = 0
    for row, col in positives[torch.randperm(len(positives), generator=generator)].tolist():
        if moved == count:
            break
        absent = ((y[row] == 0) & (noisy[row] == 0)).nonzero().flatten()
        if len(absent) == 0:
            continue
        noisy[row, col] = 0
        noisy[row, absent[torch.randint(len(absent), (1,), generator=generator)]] = 1
        moved += 1
    return noisy


def load_task(task: str, noise: float, seed: int, limit: int | None = None) -> Task:
    """``single``: the digits upsampled to 16x16, 10 classes. ``multi``: 2x2 mosaics of digits (16x16), labels the
    multi-hot set of digits present. 500 test images; the rest (or ``limit`` of them) for training."""
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    images, labels = _digits()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    images, labels = images[order], labels[order]
    if task == "single":
        x = F.interpolate(images, size=16, mode="bilinear", align_corners=False)
        y = labels
    elif task == "multi":
        picks = torch.randint(len(labels), (len(labels), 4), generator=generator)
        tiles = images[picks]  # (N, 4, 1, 8, 8)
        x = torch.cat([torch.cat([tiles[:, 0], tiles[:, 1]], 3), torch.cat([tiles[:, 2], tiles[:, 3]], 3)], 2)
        y = torch.zeros(len(labels), NUM_CLASSES).scatter_(1, labels[picks], 1.0)
    else:
        raise ValueError(f"task must be 'single' or 'multi', got {task!r}")
    x = (x - x.mean()) / x.std()
    test, train = slice(0, 500), slice(500, None if limit is None else 500 + limit)
    clean = y[train]
    noisy = mislabel_multi_hot(clean, noise, generator) if task == "multi" else flip_labels(clean, noise, generator)
    return Task(task, x[train], noisy, clean, x[test], y[test], multi_label=task == "multi")


class SmallCNN(nn.Module):
    """conv-relu, [slot], conv-relu-pool, [slot], linear -> embedding, linear -> logits.

    The slots hold Flow-Mixup modules (or nothing); ``embed`` returns the embedding LaMix's heads read."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 64, slots: tuple[nn.Module, nn.Module] | None = None):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.slot1, self.slot2 = slots if slots is not None else (nn.Identity(), nn.Identity())
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, width), nn.ReLU())
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.slot2(self.conv2(self.slot1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class OpTimer:
    """Accumulates the time spent inside fastmix calls (synchronising the device around each)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    @contextlib.contextmanager
    def __call__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def dense_labels(y: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    return F.one_hot(y, num_classes).float() if not y.is_floating_point() else y


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP of one ranking: the mean over the positives of the precision at their rank (ties by the sort order)."""
    if positive.sum() == 0:
        return float("nan")
    ranked = positive[scores.argsort(descending=True)].float()
    precision = ranked.cumsum(0) / torch.arange(1, len(ranked) + 1)
    return (precision * ranked).sum().item() / ranked.sum().item()


def mean_average_precision(logits: torch.Tensor, y: torch.Tensor) -> float:
    values = [average_precision(logits[:, k], y[:, k] > 0.5) for k in range(y.size(1))]
    values = [v for v in values if v == v]
    return sum(values) / len(values)


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U with average ranks)."""
    positive = positive.bool()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    average_rank = counts.cumsum(0) - (counts - 1) / 2.0
    return float((average_rank[inverse][positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(model: nn.Module, task: Task) -> float:
    """Test accuracy (single-label) or mAP (multi-label)."""
    model.eval()
    with torch.no_grad():
        logits = model(task.test_x)
    model.train()
    return mean_average_precision(logits.cpu(), task.test_y.cpu()) if task.multi_label else accuracy(logits, task.test_y)


def progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
