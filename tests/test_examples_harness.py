"""The examples' harness: the noise injection changes exactly the requested fraction, and the metrics are right."""

import pytest
import torch

pytest.importorskip("sklearn")
from fastmix.examples import harness  # noqa: E402


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_single_label_noise_changes_exactly_the_rate(rate):
    task = harness.load_task("single", rate, seed=0, limit=300)
    changed = (task.train_y != task.train_y_clean).sum().item()
    assert changed == round(rate * 300)
    assert task.train_x.shape == (300, 1, 16, 16) and task.test_x.shape == (500, 1, 16, 16)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.6])
def test_multi_label_noise_moves_exactly_the_rate_of_present_labels(rate):
    task = harness.load_task("multi", rate, seed=1, limit=300)
    present = task.train_y_clean.sum().item()
    dropped = ((task.train_y_clean == 1) & (task.train_y == 0)).sum().item()
    added = ((task.train_y_clean == 0) & (task.train_y == 1)).sum().item()
    assert dropped == added == round(rate * present)
    assert torch.equal(task.train_y.sum(1), task.train_y_clean.sum(1)), "every sample keeps its number of labels"


def test_mosaic_labels_are_the_digits_present():
    task = harness.load_task("multi", 0.0, seed=2, limit=50)
    assert task.train_x.shape == (50, 1, 16, 16)
    counts = task.train_y.sum(1)
    assert ((counts >= 1) & (counts <= 4)).all()


def test_same_seed_same_task_and_noise():
    a = harness.load_task("single", 0.3, seed=5, limit=100)
    b = harness.load_task("single", 0.3, seed=5, limit=100)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)


def test_metrics_on_hand_made_cases():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    assert harness.auroc(scores, torch.tensor([1, 1, 0, 0])) == 1.0
    assert harness.auroc(scores, torch.tensor([0, 0, 1, 1])) == 0.0
    assert harness.auroc(scores, torch.tensor([1, 0, 1, 0])) == 0.75
    # the positive ties one negative (counts 1/2) and beats the other: (1/2 + 1) / 2
    assert harness.auroc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([True, False, False])) == 0.75
    # positives at ranks 1 and 3: precisions 1/1 and 2/3
    assert harness.average_precision(scores, torch.tensor([1, 0, 1, 0]).bool()) == pytest.approx((1 + 2 / 3) / 2)
    logits = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.3]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # class 1: one positive, ranked first
    assert harness.mean_average_precision(logits, labels) == pytest.approx((5 / 6 + 1.0) / 2)


def test_bad_task_arguments():
    with pytest.raises(ValueError, match="task must be"):
        harness.load_task("pairs", 0.0, seed=0)
    with pytest.raises(ValueError, match="noise must be"):
        harness.load_task("single", 1.0, seed=0)
