"""zeta-mixup (paper 002_*): parity with the reference, the paper's invariants, autograd, custom ops, bad input."""

import math

import pytest
import torch

import fastmix
from fastmix.ops import zeta as zeta_ops
from fastmix.reference import zeta as reference
from helpers import (FLOAT_DTYPES, LABEL_KINDS, LAYOUTS, assert_close, assert_compiled_matches_eager,
                     assert_rejected_untouched, backend_params, gradcheck_input, make_batch, make_labels)

BATCHES = (1, 2, 3, 7, 32, 130)
BACKENDS = zeta_ops.BACKENDS


def seeded(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def reference_weights(batch, device, dtype=torch.float32, seed=0, gamma=2.8, self_dominant=True):
    keys = torch.rand((batch, batch), generator=seeded(device, seed), device=device, dtype=dtype)
    return reference.zeta_weights(keys, gamma, self_dominant)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_with_reference(backend, device, dtype, batch, layout):
    x = make_batch(layout, batch, dtype, device)
    y = make_labels("int", batch, 10, device)
    x_before = x.clone()
    x_mixed, y_mixed, weights = fastmix.zeta_mixup(
        x, y, num_classes=10, generator=seeded(device), backend=backend, return_weights=True)
    expected_weights = reference_weights(batch, device)
    assert_close(weights, expected_weights, torch.float32, "weights")
    assert_close(x_mixed, reference.zeta_mix(x, expected_weights), dtype, "x_mixed")
    assert x_mixed.dtype == dtype and x_mixed.shape == x.shape
    if layout == "channels_last":
        assert x_mixed.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x_before), "the caller's x was modified"
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    assert_close(y_mixed, expected_weights @ one_hot, torch.float32, "y_mixed")


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
def test_labels_are_mixed_with_the_same_weights(backend, device, label_kind):
    x = make_batch("features", 9, torch.float32, device)
    y = make_labels(label_kind, 9, 6, device)
    y_before = y.clone()
    _, y_mixed, weights = fastmix.zeta_mixup(x, y, num_classes=6, generator=seeded(device), backend=backend,
                                             return_weights=True)
    dense = torch.nn.functional.one_hot(y, 6).float() if label_kind == "int" else y
    assert y_mixed.dtype == torch.float32 and y_mixed.shape == (9, 6)
    assert_close(y_mixed, weights @ dense, torch.float32)
    assert torch.equal(y, y_before)
    if label_kind in ("int", "one_hot", "soft"):  # probability vectors stay probability vectors
        assert_close(y_mixed.sum(1), torch.ones(9), torch.float32)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("gamma", [1.0, 2.8, 6.0])
def test_rows_are_the_p_series(backend, device, gamma):
    batch = 17
    x = make_batch("features", batch, torch.float64, device)
    _, _, weights = fastmix.zeta_mixup(x, torch.zeros(batch, 3, dtype=torch.float64, device=device), gamma=gamma,
                                       generator=seeded(device), backend=backend, return_weights=True)
    series = torch.tensor([n ** -gamma for n in range(1, batch + 1)], dtype=torch.float64)
    series /= series.sum()
    rows = weights.cpu().sort(dim=1, descending=True).values
    assert_close(rows, series.expand(batch, batch), torch.float64, "each row is the p-series set (eq. 3)")
    assert_close(weights.sum(1), torch.ones(batch, dtype=torch.float64), torch.float64, "rows sum to 1")
    diagonal = weights.diagonal().cpu()
    assert_close(diagonal, series[0].expand(batch), torch.float64, "self-dominant diagonal is 1/C")
    assert torch.equal(weights.cpu().argmax(1), torch.arange(batch)), "the diagonal is each row's maximum"


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_free_permutations_move_the_top_weight(backend, device):
    batch = 16
    x = make_batch("features", batch, torch.float32, device)
    _, _, weights = fastmix.zeta_mixup(x, torch.zeros(batch, 2, device=device), self_dominant=False,
                                       generator=seeded(device), backend=backend, return_weights=True)
    top = weights.cpu().argmax(1)
    assert (top != torch.arange(batch)).sum() >= 8  # P(<8 of 16 rows off-diagonal) ~ 1e-9
    series = reference.p_series(batch, 2.8, torch.float32, "cpu")
    assert_close(weights.cpu().sort(dim=1, descending=True).values, series.expand(batch, batch), torch.float32)


def test_theorem_1_dominance_threshold():
    """For gamma >= 1.72865 the first weight exceeds the sum of the others, for every N (Theorem 1)."""
    for gamma in (1.72865, 2.0, 2.8):
        series = reference.p_series(4096, gamma, torch.float64, "cpu")
        assert series[0] > series[1:].sum()
    assert reference.p_series(4096, 1.6, torch.float64, "cpu")[0] < reference.p_series(4096, 1.6, torch.float64, "cpu")[1:].sum()


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("gamma", [0.5, 2.8, 4.0])
def test_theorem_2_two_samples_is_mixup(backend, device, gamma):
    x = make_batch("nchw", 2, torch.float64, device)
    y = torch.tensor([0, 1], device=device)
    x_mixed, y_mixed = fastmix.zeta_mixup(x, y, gamma=gamma, num_classes=2, generator=seeded(device), backend=backend)
    lam = 1.0 / (1.0 + 2.0 ** -gamma)
    assert math.isclose(math.log2(lam / (1 - lam)), gamma, rel_tol=1e-12)
    assert_close(x_mixed[0], lam * x[0] + (1 - lam) * x[1], torch.float64)
    assert_close(x_mixed[1], lam * x[1] + (1 - lam) * x[0], torch.float64)
    assert_close(y_mixed.double(), torch.tensor([[lam, 1 - lam], [1 - lam, lam]], dtype=torch.float64), torch.float32)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_seeded_generator_reproduces(backend, device):
    x = make_batch("nchw", 8, torch.float32, device)
    y = make_labels("soft", 8, 4, device)
    first = fastmix.zeta_mixup(x, y, generator=seeded(device, 3), backend=backend)
    again = fastmix.zeta_mixup(x, y, generator=seeded(device, 3), backend=backend)
    other = fastmix.zeta_mixup(x, y, generator=seeded(device, 4), backend=backend)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_batch_of_one_is_identity(backend, device):
    x = make_batch("nchw", 1, torch.float32, device)
    x_mixed, y_mixed = fastmix.zeta_mixup(x, torch.tensor([2], device=device), num_classes=3, backend=backend)
    assert torch.equal(x_mixed, x)
    assert torch.equal(y_mixed, torch.tensor([[0.0, 0.0, 1.0]], device=device))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "spatial_slice"])
def test_gradcheck_float64(backend, device, layout):
    x = gradcheck_input(layout, device, (3, 2, 2, 4))
    y = make_labels("soft", 3, 2, device).double().requires_grad_()

    def mixed(x, y):
        return fastmix.zeta_mixup(x, y, generator=seeded(device, 1), backend=backend)

    assert torch.autograd.gradcheck(mixed, (x, y))
    assert torch.autograd.gradgradcheck(mixed, (x, y))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_gradient_is_weights_transposed(backend, device):
    x = make_batch("channels_last", 6, torch.float32, device).requires_grad_()
    x_mixed, _, weights = fastmix.zeta_mixup(x, torch.zeros(6, 2, device=device), generator=seeded(device),
                                             backend=backend, return_weights=True)
    grad = torch.randn_like(x_mixed)
    x_mixed.backward(grad)
    assert_close(x.grad, reference.zeta_mix(grad, weights.t()), torch.float32)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_opcheck(backend, device):
    keys = torch.rand(7, 7, device=device)
    torch.library.opcheck(zeta_ops.zeta_weights, (keys, 2.8, True, backend))
    weights = reference.zeta_weights(keys, 2.8, True)
    for layout in ("nchw", "channels_last"):
        x = make_batch(layout, 7, torch.float32, device).requires_grad_()
        torch.library.opcheck(zeta_ops.zeta_mix, (x, weights, backend))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_torch_compile_fullgraph(backend, device):
    def step(x, y):
        x_mixed, y_mixed = fastmix.zeta_mixup(x, y, num_classes=5, backend=backend)
        return (x_mixed * 2).sum(), y_mixed

    x = make_batch("nchw", 4, torch.float32, device)
    y = make_labels("int", 4, 5, device)
    assert_compiled_matches_eager(step, (x, y), device)


def test_module_mixes_only_in_training():
    module = fastmix.ZetaMixup(gamma=3.0, num_classes=4)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 3, 0])
    x_mixed, y_mixed = module(x, y, generator=seeded("cpu"))
    assert y_mixed.shape == (5, 4) and not torch.equal(x_mixed, x)
    module.eval()
    x_same, y_same = module(x, y)
    assert x_same is x and y_same is y


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, y: fastmix.zeta_mixup(x.long(), y, num_classes=4), TypeError, "x must be a floating-point"),
        (lambda x, y: fastmix.zeta_mixup(x[0, 0, 0], y, num_classes=4), ValueError, "x must have at least 2 dims"),
        (lambda x, y: fastmix.zeta_mixup(x[:0], y[:0], num_classes=4), ValueError, "batch size 0"),
        (lambda x, y: fastmix.zeta_mixup(x, y[:3], num_classes=4), ValueError, "y must have the batch size"),
        (lambda x, y: fastmix.zeta_mixup(x, y), ValueError, "num_classes is required"),
        (lambda x, y: fastmix.zeta_mixup(x, y + 4, num_classes=4), ValueError, r"outside \[0, 4\)"),
        (lambda x, y: fastmix.zeta_mixup(x, y - 1, num_classes=4), ValueError, r"outside \[0, 4\)"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=0.0, num_classes=4), ValueError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=-1.0, num_classes=4), ValueError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=float("nan"), num_classes=4), ValueError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=float("inf"), num_classes=4), ValueError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma="2", num_classes=4), TypeError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y.view(6, 1), num_classes=4), ValueError, "shape \\(B,\\)"),
        (lambda x, y: fastmix.zeta_mixup(x, torch.rand(6, 4, 2), num_classes=4), ValueError, "shape \\(B, K\\)"),
        (lambda x, y: fastmix.zeta_mixup(x, torch.rand(6, 5), num_classes=4), ValueError, "num_classes=4"),
        (lambda x, y: fastmix.zeta_mixup(x, y, num_classes=4, backend="fast"), ValueError, "backend must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, num_classes=4, generator=1), TypeError, "generator must be"),
        (lambda x, y: fastmix.zeta_mixup(x.numpy(), y, num_classes=4), TypeError, "x must be a torch.Tensor"),
        (lambda x, y: fastmix.zeta_mixup(x, y.to("meta"), num_classes=4), ValueError, "y is on meta"),
    ],
)
def test_bad_input(call, error, match):
    assert_rejected_untouched(call, error, match, torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1]))


def test_unavailable_backend_is_an_error_not_a_fallback():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'reference'\)"):
        fastmix.zeta_mixup(x, torch.zeros(4, 2), backend="cuda")  # zeta-mixup has no CUDA C++ kernel
