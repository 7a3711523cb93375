"""zeta-mixup (zeta-mixup paper): parity with the reference, the paper's invariants, autograd, custom ops, bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from triton.runtime.errors import InterpreterError

import fastmix
from fastmix import _backend
from fastmix.kernels.triton import zeta as triton_zeta
from fastmix.ops import zeta as zeta_ops
from fastmix.reference import zeta as reference
from tolerances import tolerance
from helpers import (FLOAT_DTYPES, LABEL_KINDS, LAYOUTS, assert_close, assert_close_nonfinite,
                     assert_compiled_matches_eager, assert_rejected_untouched, backend_params, gradcheck_input,
                     make_batch, make_labels, seeded, weighted_sum_ieee)

BATCHES = (1, 2, 3, 7, 32, 130)
BACKENDS = zeta_ops.BACKENDS


def reference_weights(batch, device, dtype=torch.float32, seed=0, gamma=2.8, self_dominant=True):
    keys = torch.rand((batch, batch), generator=seeded(device, seed), device=device, dtype=dtype)
    return reference.zeta_weights(keys, gamma, self_dominant)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_with_reference(backend, device, dtype, batch, layout):
    if backend == "triton" and device == "cpu" and batch > 32 and layout != "channel_slice":
        pytest.skip("the interpreter runs the multi-block batch on one layout: the layouts reach the kernel as rows "
                    "that differ only in their stride, and the channel slice's is not the row length")
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


def label_samples(batch, classes, device):
    """(name, labels) in every kind and dtype the op takes, strided ones included."""
    index = make_labels("int", 2 * batch, classes, device)
    soft = make_labels("soft", batch, classes, device)
    return [("int64", index[:batch]), ("int32", index[:batch].int()), ("int strided", index[::2]),
            ("uint8", index[:batch].to(torch.uint8)), ("soft fp16", soft.half()), ("soft bf16", soft.bfloat16()),
            ("soft fp64", soft.double()), ("soft column-major", soft.t().contiguous().t()),
            ("multi-hot sliced", make_labels("multi_hot", batch, classes + 3, device)[:, 2:classes + 2])]


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("batch", [1, 3, 7])
def test_labels_of_every_kind_and_dtype(backend, device, x_dtype, batch):
    """y_mixed = W @ y (eq. 2) with W rounded to y_mixed's dtype: float32, float64 for float64 labels."""
    x = make_batch("features", batch, x_dtype, device)
    for name, y in label_samples(batch, 5, device):
        y_before = y.clone()
        _, y_mixed, weights = fastmix.zeta_mixup(x, y, num_classes=5, generator=seeded(device), backend=backend,
                                                 return_weights=True)
        dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        dense = y.to(dtype) if y.is_floating_point() else torch.nn.functional.one_hot(y.long(), 5).to(dtype)
        assert y_mixed.dtype == dtype and y_mixed.shape == (batch, 5) and y_mixed.is_contiguous(), name
        assert_close(y_mixed, weights.to(dtype).cpu() @ dense.cpu(), dtype, name)
        assert torch.equal(y, y_before), name


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("label_dtype", [torch.float16, torch.float32, torch.float64])
def test_label_gradient_is_weights_transposed(backend, device, label_dtype):
    x = make_batch("nchw", 7, torch.float64, device).requires_grad_()
    y = make_labels("soft", 7, 4, device).to(label_dtype).requires_grad_()
    x_mixed, y_mixed, weights = fastmix.zeta_mixup(x, y, generator=seeded(device), backend=backend,
                                                   return_weights=True)
    grad_y = torch.randn_like(y_mixed)
    y_mixed.backward(grad_y)
    assert x.grad is None  # x_mixed is unused: no gradient reaches x
    assert y.grad.dtype == label_dtype
    compute = torch.float64 if label_dtype == torch.float64 else torch.float32
    assert_close(y.grad, (weights.to(compute).t() @ grad_y).to(label_dtype), label_dtype)


def test_triton_kernel_asserts_class_indices_on_the_device(device_asserts):
    """On the GPU path no host-side check runs: the mix kernel asserts each class index in [0, K) as it reads it,
    and valid ones pass."""
    x = make_batch("features", 7, torch.float32, "cpu")
    weights = reference_weights(7, "cpu")
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 3])
    zeta_ops.zeta_mixup(x, weights, labels, 4, "triton")
    for bad in (-1, 4):
        wrong = labels.clone()
        wrong[5] = bad
        with pytest.raises(InterpreterError, match="y holds class indices outside"):
            zeta_ops.zeta_mixup(x, weights, wrong, 4, "triton")


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
    if backend == "triton" and device == "cpu" and layout != "spatial_slice":
        pytest.skip("one gradcheck on the interpreter: the layouts reach the kernel as rows (covered by the parity "
                    "tests), the spatial slice through _layout's copy")
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


def strided_keys(batch, device, dtype=torch.float32):
    """Contiguous, transposed and offset (sliced out of a wider matrix) keys."""
    wide = torch.rand(batch + 2, 2 * batch + 3, generator=seeded("cpu", batch), dtype=dtype).to(device)
    square = wide[:batch, :batch].contiguous()
    return {"contiguous": square, "transposed": square.t(), "offset": wide[1:batch + 1, 3:2 * batch + 3:2]}


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 5, 70])
def test_weights_op_takes_strided_keys(backend, device, dtype, batch):
    for name, keys in strided_keys(batch, device, dtype).items():
        weights = zeta_ops.zeta_weights(keys, 2.8, True, backend)
        assert weights.is_contiguous() and weights.dtype == dtype, name
        assert_close(weights, reference.zeta_weights(keys.contiguous(), 2.8, True), dtype, name)


def column_pair_counts(backend, batch, self_dominant, draws):
    """How often each (column of rank 1, column of rank 2) pair, or with ``self_dominant`` each (column of rank 2,
    column of rank 3) pair as offsets from the diagonal, occurs over ``draws`` weight matrices' rows."""
    counts = torch.zeros(batch, batch, dtype=torch.int64)
    generator = seeded("cpu", 11)
    rows = torch.arange(batch)
    first = 1 if self_dominant else 0
    for _ in range(draws):
        weights = zeta_ops.zeta_weights(torch.rand(batch, batch, generator=generator), 2.8, self_dominant, backend)
        order = weights.argsort(dim=1, descending=True)
        a, b = order[:, first], order[:, first + 1]
        if self_dominant:
            assert torch.equal(order[:, 0], rows), "the diagonal ranks first"
            a, b = (a - rows) % batch, (b - rows) % batch
        counts.view(-1).index_add_(0, a * batch + b, torch.ones(batch, dtype=torch.int64))
    return counts


@pytest.mark.parametrize("backend,device", backend_params(("cpu", "reference")))
@pytest.mark.parametrize("self_dominant", [False, True])
def test_weights_permutation_law(backend, device, self_dominant):
    """Eq. 3's ranks form a uniform random permutation per row (of the other samples with ``self_dominant``): every
    ordered pair of columns holding the top two free ranks is equally likely (chi-square; rank 2 put next to the
    diagonal in 15% of the rows, else drawn fairly, gives p ~ 1e-20 at this size)."""
    batch, draws = 5, 300
    counts = column_pair_counts(backend, batch, self_dominant, draws)
    free = torch.arange(1, batch) if self_dominant else torch.arange(batch)
    pairs = counts[free][:, free]
    observed = pairs[~torch.eye(len(free), dtype=torch.bool)]
    assert observed.sum() == batch * draws and counts.sum() == batch * draws
    assert scipy_stats.chisquare(observed.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_weights_rank_ties_zeros_and_nan_as_the_reference(dtype):
    """The C++ ranks order keys as a stable sort does: equal keys (and -0 with +0) by column, NaN last."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    generator = seeded("cpu", 5)
    choices = torch.tensor([0.0, -0.0, 0.5, -1.0, float("inf"), float("-inf"), float("nan")], dtype=dtype)
    for batch in (1, 2, 9, 33):
        keys = choices[torch.randint(0, len(choices), (batch, batch), generator=generator)]
        for self_dominant in (False, True):
            if self_dominant:  # no -inf key: it would tie with the -inf the reference puts on the diagonal
                keys = torch.where(keys == float("-inf"), -1.0, keys)
            expected = reference.zeta_weights(keys, 2.8, self_dominant)
            assert_close(zeta_ops.zeta_weights(keys, 2.8, self_dominant, "cpu"), expected, dtype)


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_opcheck(backend, device):
    for keys in strided_keys(7, device).values():
        torch.library.opcheck(zeta_ops.zeta_weights, (keys, 2.8, True, backend))
    keys = torch.rand(7, 7, device=device)
    weights = reference.zeta_weights(keys, 2.8, True)
    layouts = ("nchw", "channels_last", "channel_slice", "spatial_slice")
    samples = [(layout, torch.float32, weights) for layout in layouts]
    samples.append(("nchw", torch.float64, weights.double().t()))  # non-contiguous weights
    for layout, dtype, w in samples:
        x = make_batch(layout, 7, dtype, device).requires_grad_()
        torch.library.opcheck(zeta_ops.zeta_mix, (x, w, backend))
    x8 = (make_batch("nchw", 7, torch.float32, device) * 40 + 128).clamp(0, 255).to(torch.uint8)
    torch.library.opcheck(zeta_ops.zeta_mix, (x8[1:7:2], weights[:3, :3].contiguous(), backend))
    for name, labels in label_samples(7, 5, device):
        x = make_batch("channels_last", 7, torch.float32, device).requires_grad_()
        torch.library.opcheck(zeta_ops.zeta_mixup, (x, weights, labels.requires_grad_(labels.is_floating_point()),
                                                    5, backend))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_uint8_matches_the_fp32_mix_rounded(backend, device):
    """Every uint8 output is the fp32 mix rounded half to even: exactly where the fp64 value is clear of a
    half-integer by the fp32 tolerance, else one of its two neighbours."""
    x = (make_batch("channels_last", 9, torch.float32, device) * 60 + 128).clamp(0, 255).round().to(torch.uint8)
    x_mixed, _, weights = fastmix.zeta_mixup(x, torch.zeros(9, 2, device=device), generator=seeded(device),
                                             backend=backend, return_weights=True)
    assert x_mixed.dtype == torch.uint8 and x_mixed.is_contiguous(memory_format=torch.channels_last)
    exact = weighted_sum_ieee(weights, x)
    got = x_mixed.cpu().double()
    assert torch.all((got == exact.floor()) | (got == exact.ceil()))
    fp32 = tolerance(torch.float32)
    clear = (exact - exact.floor() - 0.5).abs() > fp32["atol"] + fp32["rtol"] * exact.abs()
    assert torch.equal(got[clear], torch.round(exact[clear]))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_uint8_rounds_half_to_even_and_saturates(backend, device):
    values = torch.arange(0, 256, dtype=torch.uint8, device=device)
    x = torch.stack([values, values.roll(1)])  # exact halves (a + b) / 2 for odd a + b
    halves = zeta_ops.zeta_mix(x, torch.full((2, 2), 0.5, device=device), backend)
    sums = values.long() + values.roll(1).long()
    expected = torch.tensor([round(s / 2) for s in sums.tolist()], dtype=torch.uint8)  # Python rounds half to even
    assert torch.equal(halves.cpu(), expected.expand(2, -1))
    scaled = zeta_ops.zeta_mix(x, torch.tensor([[2.0, 0.0], [0.0, -1.0]], device=device), backend)
    assert torch.equal(scaled[0].cpu(), (2 * values.long()).clamp(max=255).to(torch.uint8))
    assert torch.equal(scaled[1].cpu(), torch.zeros(256, dtype=torch.uint8))


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES, torch.float64])
def test_non_finite_values_follow_the_weighted_sum(backend, device, dtype):
    """+-inf gives +-inf in every row (all weights > 0), NaN or +inf meeting -inf gives NaN: the fp32 sum's
    values, also for fp16/bf16, whose Triton path splits the weights into two products."""
    x = make_batch("nchw", 7, dtype, device)
    x[0, 0, 0, 0] = float("inf")
    x[1, 0, 0, 1] = float("-inf")
    x[2, 1, 2, 3] = float("nan")
    x[3, 2, 5, 5] = float("inf")
    x[4, 2, 5, 5] = float("-inf")
    x[5, 2, 7, 1] = float("inf")
    x[6, 2, 7, 1] = float("inf")
    x_mixed, _, weights = fastmix.zeta_mixup(x, torch.zeros(7, 2, device=device), generator=seeded(device),
                                             backend=backend, return_weights=True)
    assert_close_nonfinite(x_mixed, weighted_sum_ieee(weights, x), dtype)
    assert torch.isinf(x_mixed[:, 0, 0, 0]).all() and torch.isnan(x_mixed[:, 2, 5, 5]).all()


@pytest.mark.parametrize("backend,device", backend_params(BACKENDS))
def test_empty_samples(backend, device):
    x = torch.randn(4, 0, 3, device=device)
    x_mixed, y_mixed = fastmix.zeta_mixup(x, torch.tensor([0, 1, 2, 0], device=device), num_classes=3,
                                          backend=backend)
    assert x_mixed.shape == (4, 0, 3) and y_mixed.shape == (4, 3)
    assert_close(y_mixed.sum(1), torch.ones(4), torch.float32)


def test_gamma_as_numpy_or_tensor_is_the_same_number():
    x = make_batch("nchw", 5, torch.float32, "cpu")
    y = torch.tensor([0, 1, 2, 0, 1])
    expected = fastmix.zeta_mixup(x, y, gamma=2.5, num_classes=3, generator=seeded("cpu"), return_weights=True)[2]
    for gamma in (np.float32(2.5), np.float64(2.5), torch.tensor(2.5), torch.tensor(2.5, dtype=torch.float64)):
        weights = fastmix.zeta_mixup(x, y, gamma=gamma, num_classes=3, generator=seeded("cpu"), return_weights=True)[2]
        assert torch.equal(weights, expected), type(gamma)
    assert fastmix.ZetaMixup(gamma=np.int64(3), self_dominant=np.bool_(False)).gamma == 3.0


def test_weights_kernel_constants_are_exact_in_fp32():
    """On a GPU the Triton kernel sees Python floats as fp32: -gamma and C go in as fp32 (hi, lo) pairs whose sum
    keeps them to float64 precision."""
    for value in (-2.8, -1.0 / 3.0, 1.2050325, 7.123456789012345e-3, -100.0):
        hi, lo = triton_zeta._fp32_pair(value)
        assert float(np.float32(hi)) == hi and float(np.float32(lo)) == lo
        assert abs((hi + lo) - value) <= 2 ** -46 * abs(value)


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
        (lambda x, y: fastmix.zeta_mixup(x, y, num_classes=4, self_dominant=1), TypeError,
         "self_dominant must be a bool"),
        (lambda x, y: fastmix.zeta_mixup(x, y, num_classes=4, self_dominant=None), TypeError,
         "self_dominant must be a bool"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=torch.tensor([2.0]), num_classes=4), TypeError,
         "gamma must be a real number or a 0-d"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=torch.tensor(-1.0), num_classes=4), ValueError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x, y, gamma=np.bool_(True), num_classes=4), TypeError, "gamma must be"),
        (lambda x, y: fastmix.zeta_mixup(x.to(torch.int8), y, num_classes=4), TypeError, "floating-point or uint8"),
        (lambda x, y: zeta_ops.zeta_weights(x[0, 0, :3], 2.8, True, "reference"), ValueError, "square"),
        (lambda x, y: zeta_ops.zeta_weights(x[0, 0, :3, :3].half(), 2.8, True, "triton"), TypeError,
         "keys must be float32 or float64"),
        (lambda x, y: zeta_ops.zeta_weights(x[0, 0, :3, :3], 0.0, True, "reference"), ValueError, "gamma must be"),
        (lambda x, y: zeta_ops.zeta_mix(x, torch.eye(6, dtype=torch.float64), "reference"), TypeError,
         "weights must be torch.float32"),
        (lambda x, y: zeta_ops.zeta_mix(x, torch.eye(5), "reference"), ValueError, r"weights must be \(B, B\)"),
        (lambda x, y: zeta_ops.zeta_mix(x, torch.eye(6), "cuda"), ValueError, "backend must be one of"),
    ],
)
def test_bad_input(call, error, match):
    assert_rejected_untouched(call, error, match, torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1]))


def test_unavailable_backend_is_an_error_not_a_fallback():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'reference', 'cpu'\)"):
        fastmix.zeta_mixup(x, torch.zeros(4, 2), backend="cuda")  # zeta-mixup has no CUDA C++ kernel
