"""LUMix (LUMix paper): lambda (eq. 3-5), the fused loss (eq. 6-8) vs the reference, gradients, custom ops, module."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from triton.runtime.errors import InterpreterError

import fastmix
from fastmix import _backend
from fastmix._dtypes import compute_dtype
from fastmix.kernels.triton import lumix as triton_lumix
from fastmix.ops import lumix as lumix_ops
from fastmix.reference import lumix as reference
from helpers import FLOAT_DTYPES, assert_close, backend_params, compile_fullgraph, make_labels, seeded

BACKENDS = backend_params(("reference", "triton", "cpu"))
BATCHES = (1, 2, 3, 7, 64)
CLASSES = (1, 10, 1000, 1003)


def make_logits(batch, classes, dtype, device, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, classes, generator=g)).to(device=device, dtype=dtype)


def make_lam(batch, device, seed=0, dtype=torch.float32):
    return torch.rand(batch, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype).to(device)


def label_pair(kind, batch, classes, device):
    """(y_a, y_b) as the API takes them and as dense float rows for the reference."""
    y_a = make_labels(kind, batch, classes, device, seed=1)
    y_b = make_labels(kind, batch, classes, device, seed=2)
    if kind == "int":
        return y_a, y_b, F.one_hot(y_a, classes).float(), F.one_hot(y_b, classes).float()
    return y_a, y_b, y_a, y_b


def triton_unavailable():
    return _backend.unavailable_reason("triton", "cpu")


def reference_loss_and_grad(logits, dense_a, dense_b, lam, eta, weights=None):
    """Per-row losses of the reference and d(sum_i w_i L_i)/d logits by autograd, both from fp32 (fp64) logits."""
    z = logits.detach().to(compute_dtype(logits.dtype)).requires_grad_()
    rows = reference.lumix_loss(z, dense_a, dense_b, lam, eta)
    weights = torch.ones_like(rows) if weights is None else weights
    (grad,) = torch.autograd.grad((rows * weights).sum(), z)
    return rows.detach(), grad


# ---------------------------------------------------------------- the loss against the reference


def parity_grid():
    """The grid for the Triton and C++ kernels (at B = 64 without K = 1000, which B = 7 covers, to keep the
    interpreter's time down); the reference backend (closed-form gradient) on a corner of it: its code does not
    depend on sizes."""
    grid = []
    for backend in BACKENDS:
        name = backend.values[0]
        for dtype in FLOAT_DTYPES:
            for batch in BATCHES if name != "reference" else (1, 7):
                for classes in CLASSES if name != "reference" else (1, 1003):
                    if batch == 64 and classes == 1000:
                        continue
                    for kind in ("int", "soft"):
                        grid.append(pytest.param(*backend.values, dtype, batch, classes, kind, marks=backend.marks,
                                                 id=f"{backend.id}-{str(dtype)[6:]}-B{batch}-K{classes}-{kind}"))
    return grid


@pytest.mark.parametrize("backend,device,dtype,batch,classes,label_kind", parity_grid())
def test_loss_parity_with_reference(backend, device, dtype, batch, classes, label_kind):
    logits = make_logits(batch, classes, dtype, device).requires_grad_()
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, batch, classes, device)
    lam = make_lam(batch, device)
    before = [t.clone() for t in (logits, y_a, y_b, lam)]
    loss = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.75, backend=backend)
    loss.backward()
    rows, grad = reference_loss_and_grad(logits, dense_a, dense_b, lam, 0.75)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert_close(loss, rows.mean(), torch.float32, "loss")
    assert logits.grad.dtype == dtype
    assert_close(logits.grad, (grad / batch).to(dtype), dtype, "grad")
    for now, then in zip((logits, y_a, y_b, lam), before):
        assert torch.equal(now, then), "an input was modified"


@pytest.mark.parametrize("classes,block_k", [(1003, 256), (10, 16), (40, 16)])
@pytest.mark.parametrize("label_kind", ["int", "soft", "multi_hot"])
def test_rows_longer_than_a_block(classes, block_k, label_kind):
    """The two-pass path (online log-sum-exp, then the hinge) and the multi-block backward grid."""
    if triton_unavailable():
        pytest.skip(triton_unavailable())
    batch, device = 5, "cpu"
    logits = make_logits(batch, classes, torch.float32, device)
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, batch, classes, device)
    lam = make_lam(batch, device)
    loss = torch.empty(batch)
    stats = torch.empty(batch, 5)
    triton_lumix.lumix_loss_forward(logits, y_a, y_b, lam, 0.5, loss, stats, block_k=block_k)
    assert_close(loss, reference.lumix_loss(logits, dense_a, dense_b, lam, 0.5), torch.float32, "loss")
    assert_close(stats, reference.loss_and_statistics(logits, dense_a, dense_b, lam, 0.5)[1], torch.float32, "stats")
    weights = torch.linspace(-1, 2, batch)
    grad = torch.empty_like(logits)
    triton_lumix.lumix_loss_backward(logits, y_a, y_b, lam, 0.5, stats, weights, grad, block_k=block_k)
    assert_close(grad, reference_loss_and_grad(logits, dense_a, dense_b, lam, 0.5, weights)[1], torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft", "multi_hot"])
def test_reductions_and_per_row_gradients(backend, device, label_kind):
    batch, classes = 6, 13
    logits = make_logits(batch, classes, torch.float32, device).requires_grad_()
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, batch, classes, device)
    lam = make_lam(batch, device)
    weights = torch.linspace(-1, 2, batch, device=device)
    rows = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.5, reduction="none", backend=backend)
    (rows * weights).sum().backward()
    want_rows, want_grad = reference_loss_and_grad(logits, dense_a, dense_b, lam, 0.5, weights)
    assert rows.shape == (batch,)
    assert_close(rows, want_rows, torch.float32, "rows")
    assert_close(logits.grad, want_grad, torch.float32, "grad")
    total = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.5, reduction="sum", backend=backend)
    assert_close(total, want_rows.sum(), torch.float32, "sum")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("layout", ["column_slice", "transposed"])
def test_strided_logits_and_labels(backend, device, layout):
    """Logits and float labels sliced from wider rows (row stride > K) or transposed (column stride > 1)."""
    batch, classes = 5, 12
    if layout == "column_slice":
        logits = make_logits(batch, classes + 7, torch.float32, device)[:, 3:3 + classes]
        y_a = make_labels("soft", batch, classes + 4, device, seed=1)[:, 2:2 + classes]
    else:
        logits = make_logits(classes, batch, torch.float32, device).t()
        y_a = make_labels("soft", classes, batch, device, seed=1).t()
    logits.requires_grad_()
    y_b = make_labels("multi_hot", batch, classes, device, seed=2)
    lam = make_lam(batch, device)
    rows = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.5, reduction="none", backend=backend)
    rows.sum().backward()
    want_rows, want_grad = reference_loss_and_grad(logits, y_a, y_b, lam, 0.5)
    assert_close(rows, want_rows, torch.float32, "rows")
    assert_close(logits.grad, want_grad, torch.float32, "grad")


@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft", "multi_hot"])
def test_closed_form_gradient_is_the_derivative_of_the_loss(label_kind):
    batch, classes = 5, 9
    logits = make_logits(batch, classes, torch.float64, "cpu")
    _, _, dense_a, dense_b = label_pair(label_kind, batch, classes, "cpu")
    dense_a, dense_b = dense_a.double(), dense_b.double()
    lam = make_lam(batch, "cpu", dtype=torch.float64)
    weights = torch.linspace(-1, 2, batch, dtype=torch.float64)
    stats = reference.loss_and_statistics(logits, dense_a, dense_b, lam, 0.5)[1]
    closed = reference.lumix_loss_grad(logits, dense_a, dense_b, lam, 0.5, stats, weights)
    assert_close(closed, reference_loss_and_grad(logits, dense_a, dense_b, lam, 0.5, weights)[1], torch.float64)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_gradcheck_float64(backend, device, label_kind):
    logits = make_logits(3, 5, torch.float64, device, scale=1.0).requires_grad_()
    y_a, y_b, _, _ = label_pair(label_kind, 3, 5, device)
    y_a, y_b = (y_a, y_b) if label_kind == "int" else (y_a.double(), y_b.double())
    lam = make_lam(3, device, dtype=torch.float64)

    def loss(z):
        return fastmix.lumix_loss(z, y_a, y_b, lam, eta=0.5, reduction="none", backend=backend)

    assert torch.autograd.gradcheck(loss, (logits,))


# ---------------------------------------------------------------- invariants from the paper


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_loss_by_hand(backend, device):
    """p = (1/6, 2/6, 3/6), y_a = class 0, y_b = class 2, lam = 1/4: L0 = -(ln(1/6)/4 + 3 ln(1/2)/4) and
    R = (1/4)(1 - 1/6) + (3/4)(1 - 1/2) with b = (1, 0, 1) (eq. 6-8)."""
    logits = torch.tensor([[0.0, math.log(2), math.log(3)]], device=device)
    y_a, y_b = torch.tensor([0], device=device), torch.tensor([2], device=device)
    cross_entropy = -(math.log(1 / 6) / 4 + 3 * math.log(1 / 2) / 4)
    hinge = (1 - 1 / 6) / 4 + 3 * (1 - 1 / 2) / 4
    loss = fastmix.lumix_loss(logits, y_a, y_b, torch.tensor([0.25], device=device), eta=2.0, backend=backend)
    assert_close(loss, torch.tensor(cross_entropy + 2 * hinge), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_eta_zero_is_the_mixed_cross_entropy(backend, device, label_kind):
    logits = make_logits(7, 10, torch.float32, device).requires_grad_()
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, 7, 10, device)
    lam = make_lam(7, device)
    loss = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.0, backend=backend)
    target = lam[:, None] * dense_a + (1 - lam[:, None]) * dense_b
    expected = F.cross_entropy(logits, target)
    assert_close(loss, expected, torch.float32)
    (got_grad,) = torch.autograd.grad(loss, logits)
    (want_grad,) = torch.autograd.grad(expected, logits)
    assert_close(got_grad, want_grad, torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_hinge_vanishes_when_predictions_reach_b(backend, device):
    """R = 0 once p_k >= b_k on every class the target weights: a saturated prediction of y_a's class, lam = 1."""
    logits = torch.zeros(4, 6, device=device)
    y_a = torch.tensor([0, 3, 5, 2], device=device)
    y_b = torch.tensor([1, 1, 4, 0], device=device)
    logits[torch.arange(4), y_a] = 200.0
    lam = torch.ones(4, device=device)
    with_hinge = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=5.0, reduction="none", backend=backend)
    without = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.0, reduction="none", backend=backend)
    assert torch.equal(with_hinge, without)
    lam_half = torch.full((4,), 0.5, device=device)  # now y_b's class (p = 0 < b = 1) enters the target
    with_hinge = fastmix.lumix_loss(logits, y_a, y_b, lam_half, eta=5.0, reduction="none", backend=backend)
    without = fastmix.lumix_loss(logits, y_a, y_b, lam_half, eta=0.0, reduction="none", backend=backend)
    assert_close(with_hinge - without, torch.full((4,), 5.0 * 0.5), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_b_is_the_union_of_both_labels(backend, device):
    """Algorithm 1 sets b from y1, then from y2: a class positive in only one label still has b = 1."""
    logits = torch.zeros(1, 4, device=device)
    y_a = torch.tensor([[1.0, 1.0, 0.0, 0.0]], device=device)
    y_b = torch.tensor([[0.0, 1.0, 1.0, 0.0]], device=device)
    lam = torch.tensor([0.5], device=device)
    hinge = (fastmix.lumix_loss(logits, y_a, y_b, lam, eta=1.0, backend=backend)
             - fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.0, backend=backend))
    target = torch.tensor([0.5, 1.0, 0.5, 0.0])
    assert_close(hinge, (target * (1 - 0.25)).sum(), torch.float32)


def test_lambda_is_the_formula_of_eq_3():
    logits = make_logits(9, 7, torch.float32, "cpu")
    y_a, y_b, _, _ = label_pair("int", 9, 7, "cpu")
    lam0 = make_lam(9, "cpu")
    lam, lam_r, lam_s = fastmix.lumix_lambda(lam0, logits, y_a, y_b, r1=0.3, r2=0.2, generator=seeded("cpu"),
                                             return_parts=True)
    assert_close(lam, 0.5 * lam0 + 0.3 * lam_r + 0.2 * lam_s, torch.float32)
    again = fastmix.lumix_lambda(lam0, logits, y_a, y_b, r1=0.3, r2=0.2, generator=seeded("cpu"))
    assert torch.equal(lam, again)
    assert not torch.equal(lam, fastmix.lumix_lambda(lam0, logits, y_a, y_b, generator=seeded("cpu", 1)))
    assert ((lam >= 0) & (lam <= 1)).all()


def test_zero_ratios_give_lam0():
    logits = make_logits(5, 4, torch.float32, "cpu")
    y_a, y_b, _, _ = label_pair("soft", 5, 4, "cpu")
    lam0 = make_lam(5, "cpu")
    assert torch.equal(fastmix.lumix_lambda(lam0, logits, y_a, y_b, r1=0.0, r2=0.0), lam0)


@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft", "multi_hot"])
def test_score_lambda_from_the_softmax_by_hand(label_kind):
    logits = make_logits(6, 5, torch.float64, "cpu")
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, 6, 5, "cpu")
    if label_kind == "multi_hot":  # every row holds a positive (all-zero rows: the next test)
        y_a[:, 0] = y_b[:, 4] = 1.0
    dense_a, dense_b = dense_a.double(), dense_b.double()
    parts = fastmix.lumix_lambda(0.5, logits, y_a, y_b, return_parts=True)
    exp = logits.exp()
    probs = exp / exp.sum(1, keepdim=True)  # eq. 4
    p_a = (probs * dense_a).sum(1) / dense_a.sum(1)
    p_b = (probs * dense_b).sum(1) / dense_b.sum(1)
    assert_close(parts.lam_s, p_a / (p_a + p_b), torch.float64)  # eq. 5
    if label_kind in ("int", "one_hot"):
        index_a, index_b = dense_a.argmax(1), dense_b.argmax(1)
        rows = torch.arange(6)
        assert_close(parts.lam_s, probs[rows, index_a] / (probs[rows, index_a] + probs[rows, index_b]), torch.float64)


def test_score_lambda_of_all_zero_label_rows():
    """An all-zero row has p = 0 (documented choice), so lam_s = 0 against a labelled row and 1/2 against another
    all-zero row."""
    logits = make_logits(3, 4, torch.float32, "cpu")
    y_a = torch.tensor([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    y_b = torch.tensor([[0.0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    lam_s = fastmix.lumix_lambda(0.5, logits, y_a, y_b, return_parts=True).lam_s
    assert torch.equal(lam_s, torch.tensor([0.0, 1.0, 0.5]))


def test_score_lambda_weights_the_likelier_label():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    lam = fastmix.lumix_lambda(0.5, logits, torch.tensor([0, 0]), torch.tensor([2, 2]), r1=0.0, r2=1.0)
    assert lam[0] > 0.95 and lam[1] < 0.05


def test_random_part_is_beta():
    """Beta(2, 2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/20 (eq. 3's lam_r, Table 10's alpha)."""
    logits = torch.zeros(8192, 2)
    labels = torch.zeros(8192, dtype=torch.long)
    lam_r = fastmix.lumix_lambda(0.5, logits, labels, labels, alpha=2.0, generator=seeded("cpu"),
                                 return_parts=True).lam_r
    assert ((lam_r > 0) & (lam_r < 1)).all()
    assert abs(lam_r.mean().item() - 0.5) < 0.01  # 4 standard errors
    assert abs(lam_r.var().item() - 0.05) < 0.004


@pytest.mark.parametrize("dtype", (*FLOAT_DTYPES, torch.float64))
@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft", "multi_hot"])
@pytest.mark.parametrize("batch,classes", [(1, 1), (3, 10), (7, 1003), (20, 13)])
def test_triton_lambda_matches_the_reference_given_its_draw(dtype, label_kind, batch, classes):
    """The Triton kernel of eq. 3-5 draws lam_r itself: given that draw, lam and lam_s are the reference op's."""
    if triton_unavailable():
        pytest.skip(triton_unavailable())
    logits = make_logits(batch, classes, dtype, "cpu")
    y_a, y_b, _, _ = label_pair(label_kind, batch, classes, "cpu")
    acc = compute_dtype(dtype)
    lam0 = make_lam(batch, "cpu", dtype=acc)
    lam, lam_r, lam_s = fastmix.lumix_lambda(lam0, logits, y_a, y_b, r1=0.3, r2=0.2, generator=seeded("cpu"),
                                             return_parts=True, backend="triton")
    want_lam, want_lam_s = lumix_ops.lumix_lambda(lam0, lam_r, logits, y_a, y_b, 0.3, 0.2, "reference")
    assert lam.dtype == lam_r.dtype == lam_s.dtype == acc
    assert ((lam_r > 0) & (lam_r < 1)).all()
    assert_close(lam_s, want_lam_s, acc, "lam_s")
    assert_close(lam, want_lam, acc, "lam")


def test_triton_lambda_takes_strided_inputs():
    if triton_unavailable():
        pytest.skip(triton_unavailable())
    logits, y_a, y_b, lam0 = _opcheck_inputs("sliced", "int", "cpu")
    soft_logits, soft_a, soft_b, _ = _opcheck_inputs("sliced", "soft", "cpu")
    for z, a, b in ((logits, y_a, y_b), (soft_logits, soft_a, soft_b)):
        for weight in (lam0, torch.tensor(0.25).expand(4)):
            lam, lam_r, lam_s = fastmix.lumix_lambda(weight, z, a, b, return_parts=True, backend="triton")
            want_lam, want_lam_s = lumix_ops.lumix_lambda(weight.contiguous(), lam_r, z.contiguous(), a.contiguous(),
                                                          b.contiguous(), 0.4, 0.1, "reference")
            assert_close(lam_s, want_lam_s, torch.float32)
            assert_close(lam, want_lam, torch.float32)


@pytest.mark.parametrize("alpha", [0.2, 2.0])
def test_triton_random_part_is_beta(alpha):
    """lam_r drawn in the Triton kernel is Beta(alpha, alpha) (eq. 3): a Kolmogorov-Smirnov test against scipy on a
    fixed seed, and the same seed draws the same numbers while another seed does not."""
    if triton_unavailable():
        pytest.skip(triton_unavailable())

    def draw(seed, rows):
        logits, labels = torch.zeros(rows, 1), torch.zeros(rows, dtype=torch.long)
        return fastmix.lumix_lambda(0.5, logits, labels, labels, alpha=alpha, generator=seeded("cpu", seed),
                                    return_parts=True, backend="triton").lam_r

    # 1,000 draws suffice: drawn from Beta(1, 1) for alpha = 2, or Beta(0.3, 0.3) for alpha = 0.2, they are rejected
    # at p < 1e-3 in 200 of 200 simulated seeds
    lam_r = draw(0, 1000)
    assert scipy_stats.kstest(lam_r.double().numpy(), scipy_stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    # reproducibility needs no large batch (each row's draw depends on the seed and its row alone)
    assert torch.equal(lam_r[:64], draw(0, 64))
    assert not torch.equal(lam_r[:64], draw(1, 64))


# ---------------------------------------------------------------- custom ops, compile


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_opcheck(backend, device, label_kind):
    logits = make_logits(4, 11, torch.float32, device).requires_grad_()
    y_a, y_b, _, _ = label_pair(label_kind, 4, 11, device)
    lam = make_lam(4, device)
    torch.library.opcheck(lumix_ops.lumix_loss, (logits, y_a, y_b, lam, 0.5, backend))
    _, stats = lumix_ops.lumix_loss(logits.detach(), y_a, y_b, lam, 0.5, backend)
    torch.library.opcheck(lumix_ops.lumix_loss_backward, (torch.rand(4, device=device), logits.detach(), y_a, y_b,
                                                          lam, stats, 0.5, backend))
    if backend == "triton":
        seed = torch.tensor([7], device=device)
        torch.library.opcheck(lumix_ops.lumix_lambda_sampled, (lam, seed, logits.detach(), y_a, y_b, 0.4, 0.1, 2.0))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    """Dynamo cannot take a torch.Generator as a graph input, so the compiled step draws from the default RNG."""
    torch._dynamo.reset()

    def step(logits, y_a, y_b, lam0):
        lam = fastmix.lumix_lambda(lam0, logits, y_a, y_b, backend=backend)
        return fastmix.lumix_loss(logits, y_a, y_b, lam, backend=backend), lam

    logits = make_logits(4, 10, torch.float32, device).requires_grad_()
    y_a, y_b, _, _ = label_pair("int", 4, 10, device)
    lam0 = make_lam(4, device)
    compiled = compile_fullgraph(step, device)
    torch.manual_seed(5)
    got_loss, got_lam = compiled(logits, y_a, y_b, lam0)
    (got_grad,) = torch.autograd.grad(got_loss, logits)
    torch.manual_seed(5)
    want_loss, want_lam = step(logits, y_a, y_b, lam0)
    (want_grad,) = torch.autograd.grad(want_loss, logits)
    assert_close(got_lam, want_lam, torch.float32)
    assert_close(got_loss, want_loss, torch.float32)
    assert_close(got_grad, want_grad, torch.float32)


# ---------------------------------------------------------------- the training-step module


@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_lumix_module_step(label_kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x = torch.randn(6, 3, 4, 4)
    y = make_labels(label_kind, 6, 5, "cpu")
    lumix = fastmix.LUMix(num_classes=5, r1=0.4, r2=0.1, eta=0.5)
    out = lumix(model, x, y, generator=seeded("cpu", 3))
    generator = seeded("cpu", 3)  # one generator, drawn from by cutmix, then by lumix_lambda
    x_mixed, _, params = fastmix.cutmix(x, y, alpha=1.0, correct_lam=True, num_classes=5, generator=generator)
    logits = model(x_mixed)
    y_b = y[params.partner]
    lam = fastmix.lumix_lambda(params.lam, logits, y, y_b, generator=generator)
    assert_close(out.logits, logits, torch.float32)
    assert_close(out.lam, lam, torch.float32)
    assert_close(out.loss, fastmix.lumix_loss(logits, y, y_b, lam, eta=0.5), torch.float32)
    out.loss.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_lumix_module_eval_is_cross_entropy():
    model = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 0])
    out = fastmix.LUMix(num_classes=4).eval()(model, x, y)
    assert out.params is None
    assert_close(out.loss, F.cross_entropy(model(x), y), torch.float32)


# ---------------------------------------------------------------- bad input


def _inputs():
    return torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), torch.tensor([1, 1, 0, 4]), torch.rand(4)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda z, a, b, lam: fastmix.lumix_loss(z.long(), a, b, lam), TypeError, "logits must be a floating"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z[0], a, b, lam), ValueError, "logits must have shape"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z[:0], a[:0], b[:0], lam[:0]), ValueError, "logits must have shape"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z.numpy(), a, b, lam), TypeError, "logits must be a torch.Tensor"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a[:3], b, lam), ValueError, "y_a must have shape"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b + 1, lam), ValueError, r"y_b holds class indices outside"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a - 1, b, lam), ValueError, r"y_a holds class indices outside"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a.bool(), b, lam), TypeError, "y_a must hold integer"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, torch.rand(4, 6), b, lam), ValueError, "float labels y_a"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, torch.rand(4, 5), lam), ValueError, "same kind"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b.to("meta"), lam), ValueError, "y_b is on meta"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam[:3]), ValueError, "lam must have shape"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, a), TypeError, "lam must be a float"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, "0.5"), TypeError, "lam must be a torch.Tensor"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam, eta=-1.0), ValueError, "eta must be"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam, eta=float("nan")), ValueError, "eta must be"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam, reduction="max"), ValueError, "reduction must be"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam, backend="cuda"), ValueError,
         r"backend must be one of \('triton', 'reference', 'cpu'\)"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, lam, backend="fast"), ValueError, "backend must be"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, r1=-0.1), ValueError, "r1 must be"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, r2=float("inf")), ValueError, "r2 must be"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, r1=0.7, r2=0.4), ValueError, "r1 \\+ r2"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, r1="0.4"), TypeError, "r1 must be a real"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, alpha=0.0), ValueError, "alpha must be"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, generator=3), TypeError, "generator must be"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam[:2], z, a, b), ValueError, "lam0 must have shape"),
        (lambda z, a, b, lam: fastmix.LUMix(r1=0.9, r2=0.2), ValueError, "r1 \\+ r2"),
        (lambda z, a, b, lam: fastmix.LUMix(cutmix_alpha=-1.0), ValueError, "cutmix_alpha must be"),
        (lambda z, a, b, lam: fastmix.LUMix(eta=-0.5), ValueError, "eta must be"),
    ],
)
def test_bad_input(call, error, match):
    inputs = _inputs()
    before = [t.clone() for t in inputs]
    with pytest.raises(error, match=match):
        call(*inputs)
    for now, then in zip(inputs, before):
        assert torch.equal(now, then)


@pytest.mark.parametrize("name", ["y_a", "y_b"])
def test_triton_kernels_assert_class_indices_on_the_device(device_asserts, name):
    """On the GPU path no host-side check runs: the loss's forward and backward kernels and the label weight's
    kernel assert the class indices as they read them (an index below 0 or at K), and valid ones pass."""
    logits, y_a, y_b, lam = _inputs()
    _, stats = lumix_ops.lumix_loss(logits, y_a, y_b, lam, 0.5, "triton")
    lumix_ops.lumix_loss_backward(lam, logits, y_a, y_b, lam, stats, 0.5, "triton")
    fastmix.lumix_lambda(lam, logits, y_a, y_b, backend="triton")
    for bad in (-1, logits.size(1)):
        labels = {"y_a": y_a, "y_b": y_b}
        labels[name] = labels[name].clone()
        labels[name][2] = bad
        with pytest.raises(InterpreterError, match=f"{name} holds class indices outside"):
            lumix_ops.lumix_loss(logits, labels["y_a"], labels["y_b"], lam, 0.5, "triton")
        with pytest.raises(InterpreterError, match=f"{name} holds class indices outside"):
            lumix_ops.lumix_loss_backward(lam, logits, labels["y_a"], labels["y_b"], lam, stats, 0.5, "triton")
        with pytest.raises(InterpreterError, match=f"{name} holds class indices outside"):
            fastmix.lumix_lambda(lam, logits, labels["y_a"], labels["y_b"], backend="triton")


@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_float64_parity_with_the_gpu_scalar_semantics(gpu_float_arguments, label_kind):
    """A GPU launch passes a Python float as fp32: eta = 0.1 (not an fp32 number) must still reach the fp64 kernels
    exactly, forward and backward."""
    if triton_unavailable():
        pytest.skip(triton_unavailable())
    logits = make_logits(3, 6, torch.float64, "cpu").requires_grad_()
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, 3, 6, "cpu")
    y_a, y_b = (y_a, y_b) if label_kind == "int" else (y_a.double(), y_b.double())
    lam = make_lam(3, "cpu", dtype=torch.float64)
    got = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.1, reduction="none", backend="triton")
    got.sum().backward()
    rows, grad = reference_loss_and_grad(logits, dense_a.double(), dense_b.double(), lam, 0.1)
    assert_close(got, rows, torch.float64, "loss")
    assert_close(logits.grad, grad, torch.float64, "grad")


# ---------------------------------------------------------------- the op layer: checks, empty sizes, the C++ lambda


OP_BACKENDS = backend_params(("reference", "triton", "cpu"))


@pytest.mark.parametrize("backend,device", OP_BACKENDS)
@pytest.mark.parametrize("batch,classes", [(0, 5), (3, 0), (0, 0)])
def test_empty_batch_or_classes_launch_nothing(backend, device, batch, classes):
    """B = 0 or K = 0: per-row losses 0 (an empty sum), the empty rows' statistics, an empty gradient."""
    logits = torch.randn(batch, classes, device=device)
    labels = torch.rand(batch, classes, device=device)
    lam = torch.rand(batch, device=device)
    loss, stats = lumix_ops.lumix_loss(logits, labels, labels, lam, 0.5, backend)
    assert torch.equal(loss, torch.zeros(batch, device=device))
    empty_row = torch.tensor([-math.inf, 0.0, 0.0, math.inf, math.inf], device=device)
    assert torch.equal(stats, empty_row.expand(batch, 5))
    grad = lumix_ops.lumix_loss_backward(torch.ones(batch, device=device), logits, labels, labels, lam, stats, 0.5,
                                         backend)
    assert grad.shape == (batch, classes)


@pytest.mark.parametrize("backend,device", OP_BACKENDS)
def test_ops_check_their_arguments(backend, device):
    logits, y_a, y_b, lam = (t.to(device) for t in _inputs())
    with pytest.raises(ValueError, match="y_b holds class indices outside"):
        lumix_ops.lumix_loss(logits, y_a, y_b + 1, lam, 0.5, backend)
    with pytest.raises(ValueError, match="y_a holds class indices outside"):
        lumix_ops.lumix_lambda(lam, lam, logits, y_a - 1, y_b, 0.4, 0.1, backend if backend != "triton" else "cpu")
    with pytest.raises(ValueError, match="y_a must be int64"):
        lumix_ops.lumix_loss(logits, y_a.int(), y_b, lam, 0.5, backend)
    with pytest.raises(ValueError, match="per-row weights"):
        lumix_ops.lumix_loss(logits, y_a, y_b, lam[:3], 0.5, backend)
    with pytest.raises(ValueError, match="logits must be a floating"):
        lumix_ops.lumix_loss(logits.long(), y_a, y_b, lam, 0.5, backend)


@pytest.mark.parametrize("dtype", (*FLOAT_DTYPES, torch.float64))
@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft", "multi_hot"])
@pytest.mark.parametrize("batch,classes", [(1, 1), (7, 13), (5, 1003)])
def test_cpu_lambda_matches_the_reference(dtype, label_kind, batch, classes):
    """The C++ kernel of eq. 3-5 against the reference op, from one lam_r draw."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    logits = make_logits(batch, classes, dtype, "cpu")
    y_a, y_b, _, _ = label_pair(label_kind, batch, classes, "cpu")
    acc = compute_dtype(logits.dtype)
    lam0, lam_r = make_lam(batch, "cpu", dtype=acc), make_lam(batch, "cpu", seed=4, dtype=acc)
    got = lumix_ops.lumix_lambda(lam0, lam_r, logits, y_a, y_b, 0.3, 0.2, "cpu")
    want = lumix_ops.lumix_lambda(lam0, lam_r, logits, y_a, y_b, 0.3, 0.2, "reference")
    for g, w in zip(got, want):
        assert g.dtype == acc
        assert_close(g, w, acc)


def _opcheck_inputs(layout, label_kind, device):
    """(logits, y_a, y_b, lam) of 4 x 11, contiguous or sliced from wider/strided tensors."""
    logits = make_logits(4, 11, torch.float32, device)
    y_a, y_b, _, _ = label_pair(label_kind, 4, 11, device)
    lam = make_lam(4, device)
    if layout == "sliced":
        logits = make_logits(8, 15, torch.float32, device)[::2, 2:13]
        lam = make_lam(8, device)[1::2]
        if label_kind == "int":
            y_a, y_b = torch.stack([y_a, y_a], 1)[:, 0], torch.stack([y_b, y_b], 1)[:, 1]
        else:
            y_a = make_labels("soft", 11, 4, device, seed=1).t()
    return logits, y_a, y_b, lam


@pytest.mark.parametrize("backend,device", OP_BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
def test_opcheck_strided_inputs(backend, device, label_kind, layout):
    logits, y_a, y_b, lam = _opcheck_inputs(layout, label_kind, device)
    torch.library.opcheck(lumix_ops.lumix_loss, (logits.requires_grad_(), y_a, y_b, lam, 0.5, backend))
    _, stats = lumix_ops.lumix_loss(logits.detach(), y_a, y_b, lam, 0.5, backend)
    torch.library.opcheck(lumix_ops.lumix_loss_backward, (torch.rand(8, device=device)[::2], logits.detach(), y_a,
                                                          y_b, lam, stats, 0.5, backend))
    if backend != "triton":
        torch.library.opcheck(lumix_ops.lumix_lambda, (lam, lam.flip(0), logits.detach(), y_a, y_b, 0.4, 0.1,
                                                       backend))


@pytest.mark.parametrize("backend,device", OP_BACKENDS)
def test_eager_path_and_custom_op_agree(backend, device):
    """The eager autograd.Function and the custom op (what torch.compile runs) give the same loss and gradient."""
    logits, y_a, y_b, lam = _opcheck_inputs("sliced", "soft", device)
    results = []
    for call in (lumix_ops.lumix_loss_call, lumix_ops.lumix_loss):
        z = logits.detach().clone().requires_grad_()
        rows, _ = call(z, y_a, y_b, lam, 0.5, backend)
        (rows * torch.arange(1.0, 5.0, device=device)).sum().backward()
        results.append((rows.detach(), z.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_cpu_kernels_split_rows_across_threads(label_kind):
    """B K above the kernels' threshold for OpenMP (2^16 logits): the rows run on several threads, same values."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    batch, classes = 70, 1003
    logits = make_logits(batch, classes, torch.float32, "cpu").requires_grad_()
    y_a, y_b, dense_a, dense_b = label_pair(label_kind, batch, classes, "cpu")
    lam = make_lam(batch, "cpu")
    rows = fastmix.lumix_loss(logits, y_a, y_b, lam, eta=0.5, reduction="none", backend="cpu")
    rows.sum().backward()
    want_rows, want_grad = reference_loss_and_grad(logits, dense_a, dense_b, lam, 0.5)
    assert_close(rows, want_rows, torch.float32, "rows")
    assert_close(logits.grad, want_grad, torch.float32, "grad")


# ---------------------------------------------------------------- strict numbers and flags


def test_numpy_scalars_are_numbers():
    logits, y_a, y_b, lam = _inputs()
    want = fastmix.lumix_loss(logits, y_a, y_b, 0.25, eta=0.5)
    assert torch.equal(fastmix.lumix_loss(logits, y_a, y_b, np.float32(0.25), eta=np.float64(0.5)), want)
    generator = seeded("cpu")
    want = fastmix.lumix_lambda(0.25, logits, y_a, y_b, r1=0.25, r2=0.5, alpha=2.0, generator=generator)
    got = fastmix.lumix_lambda(np.float64(0.25), logits, y_a, y_b, r1=np.float32(0.25), r2=np.float64(0.5),
                               alpha=np.int64(2), generator=seeded("cpu"))
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, 1.5), ValueError, r"lam must be in \[0, 1\]"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, -0.25), ValueError, r"lam must be in \[0, 1\]"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, np.float32(2.0)), ValueError, r"lam must be in"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, float("nan")), ValueError, r"lam must be in"),
        (lambda z, a, b, lam: fastmix.lumix_loss(z, a, b, True), TypeError, "lam must be a torch.Tensor"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(1.01, z, a, b), ValueError, r"lam0 must be in \[0, 1\]"),
        (lambda z, a, b, lam: fastmix.lumix_lambda(lam, z, a, b, return_parts=1), TypeError,
         "return_parts must be a bool"),
        (lambda z, a, b, lam: fastmix.LUMix(correct_lam=1), TypeError, "correct_lam must be a bool"),
        (lambda z, a, b, lam: fastmix.LUMix(backend="cuda"), ValueError, "backend must be one of"),
        (lambda z, a, b, lam: fastmix.LUMix(r1=np.float32(0.9), r2=0.2), ValueError, "r1 \\+ r2"),
    ],
)
def test_strict_numbers_and_flags(call, error, match):
    with pytest.raises(error, match=match):
        call(*_inputs())
