"""LaMix (LaMix paper): the fused target-and-loss op vs the reference, the paper's invariants, the schedule, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from triton.runtime.errors import InterpreterError

import fastmix
from fastmix import _backend
from fastmix._random import sample_beta
from fastmix.ops import lamix as lamix_ops
from fastmix.reference import lamix as reference
from helpers import (FLOAT_DTYPES, LABEL_KINDS, LAYOUTS, assert_close, backend_params, compile_fullgraph,
                     make_batch, make_labels, seeded)

BACKENDS = backend_params(("reference", "triton", "cpu"))
MIX_BACKENDS = backend_params()
BATCHES = (1, 2, 3, 7, 64)


def make_logits(batch, classes, dtype, device, layout="contiguous", seed=0):
    """(logits, target_logits) in a layout: dense, a column slice of a wider tensor, or column-major."""
    g = torch.Generator().manual_seed(seed)
    if layout == "column_slice":
        pair = [torch.randn(batch, classes + 5, generator=g)[:, 2:classes + 2] * 3 for _ in range(2)]
    elif layout == "column_major":
        pair = [(torch.randn(classes, batch, generator=g) * 3).t() for _ in range(2)]
    else:
        pair = [torch.randn(batch, classes, generator=g) * 3 for _ in range(2)]
    return [v.to(device=device, dtype=dtype) for v in pair]


def make_pairing(batch, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, generator=g).to(device), torch.randperm(batch, generator=g).to(device)


def dense(y, classes):
    return F.one_hot(y, classes).double() if not y.is_floating_point() else y.double()


def expected_loss_and_grads(logits, target_logits, y, lam, partner, beta, detach_target):
    """The ground truth: autograd through the reference formula (eq. 2, 9-11), in float64 from the same inputs."""
    z = logits.detach().double().requires_grad_()
    t = target_logits.detach().double().requires_grad_()
    loss = reference.lamix_loss(z, t, dense(y, z.size(1)), lam, partner, beta, detach_target)
    grad_z, grad_t = torch.autograd.grad(loss.sum(), (z, t), allow_unused=True)
    return loss, grad_z, grad_t


def fused_loss_and_grads(logits, target_logits, y, lam, partner, beta, detach_target, backend):
    z = logits.detach().clone().requires_grad_()
    t = target_logits.detach().clone().requires_grad_()
    loss = fastmix.lamix_loss(z, t, y, lam, partner, beta=beta, detach_target=detach_target, reduction="none",
                              backend=backend)
    loss.sum().backward()
    return loss, z.grad, t.grad


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", (*FLOAT_DTYPES, torch.float64))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("detach_target", [False, True])
def test_parity_with_reference(backend, device, dtype, batch, detach_target):
    logits, target_logits = make_logits(batch, 10, dtype, device)
    y = make_labels("int", batch, 10, device)
    lam, partner = make_pairing(batch, device)
    logits_before = logits.clone()
    loss, grad_z, grad_t = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, detach_target, backend)
    want_loss, want_z, want_t = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, detach_target)
    loss_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.dtype == loss_dtype and grad_z.dtype == dtype
    assert_close(loss, want_loss, loss_dtype, "loss")
    assert_close(grad_z, want_z, dtype, "dloss/dlogits")
    if detach_target:  # as with target_logits.detach(): no gradient at all
        assert grad_t is None and want_t is None
    else:
        assert grad_t.dtype == dtype
        assert_close(grad_t, want_t, dtype, "dloss/dtarget_logits")
    assert torch.equal(logits, logits_before), "the caller's logits were modified"


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
@pytest.mark.parametrize("layout", ["column_slice", "column_major"])
def test_label_kinds_and_layouts(backend, device, label_kind, layout):
    logits, target_logits = make_logits(9, 6, torch.float32, device, layout)
    y = make_labels(label_kind, 9, 6, device)
    lam, partner = make_pairing(9, device)
    y_before = y.clone()
    got = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.3, False, backend)
    want = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.3, False)
    for name, a, e in zip(("loss", "dlogits", "dtarget_logits"), got, want):
        assert_close(a, e, torch.float32, name)
    assert torch.equal(y, y_before)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_many_classes_span_several_blocks(backend, device, label_kind):
    """K = 5000 > 4096 columns: the kernel sweeps each row in two blocks with an online log-sum-exp."""
    logits, target_logits = make_logits(2, 5000, torch.float32, device)
    y = make_labels(label_kind, 2, 5000, device, seed=3)
    lam, partner = make_pairing(2, device)
    got = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False, backend)
    want = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False)
    for name, a, e in zip(("loss", "dlogits", "dtarget_logits"), got, want):
        assert_close(a, e, torch.float32, name)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("detach_target", [False, True])
def test_gradcheck_float64(backend, device, detach_target):
    logits, target_logits = make_logits(3, 4, torch.float64, device)
    y = make_labels("soft", 3, 4, device)
    lam, partner = make_pairing(3, device)

    def loss(z, t):
        return fastmix.lamix_loss(z, t, y, lam, partner, beta=0.4, detach_target=detach_target, reduction="none",
                                  backend=backend)

    # A detached target is a constant by design: its zero gradient is not the derivative, so only z is checked.
    target_logits.requires_grad_(not detach_target)
    assert torch.autograd.gradcheck(loss, (logits.requires_grad_(), target_logits))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_scale_the_gradient(backend, device, reduction):
    logits, target_logits = make_logits(5, 4, torch.float32, device)
    y = make_labels("int", 5, 4, device)
    lam, partner = make_pairing(5, device)
    z = logits.clone().requires_grad_()
    loss = fastmix.lamix_loss(z, target_logits, y, lam, partner, reduction=reduction, backend=backend)
    loss.backward()
    want_loss, want_z, _ = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False)
    scale = 1 / 5 if reduction == "mean" else 1.0
    assert_close(loss, want_loss.sum() * scale, torch.float32)
    assert_close(z.grad, want_z * scale, torch.float32)


@pytest.mark.parametrize("label_kind", ["int", "one_hot", "soft"])
def test_target_rows_sum_to_one(label_kind):
    _, target_logits = make_logits(7, 8, torch.float32, "cpu")
    y = make_labels(label_kind, 7, 8, "cpu")
    lam, partner = make_pairing(7, "cpu")
    for beta in (0.0, 0.5, 1.0):
        target = fastmix.lamix_target(target_logits, y, lam, partner, beta=beta)
        assert target.shape == (7, 8) and bool((target >= 0).all())
        assert_close(target.sum(1), torch.ones(7), torch.float32, f"beta={beta}")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_gradient_implies_the_target(backend, device):
    """dloss/dlogits = softmax(logits) - target for a target summing to 1 (eq. 11): the fused kernel trains on eq. 10."""
    logits, target_logits = make_logits(6, 7, torch.float64, device)
    y = make_labels("int", 6, 7, device)
    lam, partner = make_pairing(6, device)
    _, grad_z, _ = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False, backend)
    target = fastmix.lamix_target(target_logits, y, lam, partner, beta=0.5)
    assert_close(torch.softmax(logits, 1) - grad_z, target, torch.float64)


def test_target_is_the_convex_combination_of_eq_10():
    _, target_logits = make_logits(5, 4, torch.float64, "cpu")
    y = torch.tensor([0, 1, 2, 3, 1])
    lam = torch.tensor([0.1, 0.5, 0.9, 0.0, 1.0])
    partner = torch.tensor([1, 0, 3, 2, 4])
    one_hot = torch.eye(4, dtype=torch.float64)
    local = lam[:, None].double() * one_hot[y] + (1 - lam[:, None].double()) * one_hot[y[partner]]
    sig = 1 / (1 + torch.exp(-target_logits))
    global_label = torch.exp(sig) / torch.exp(sig).sum(1, keepdim=True)
    for beta in (0.0, 0.25, 1.0):
        target = fastmix.lamix_target(target_logits, y, lam, partner, beta=beta)
        assert_close(target, beta * local + (1 - beta) * global_label, torch.float64, f"beta={beta}")



@pytest.mark.parametrize("label_kind", LABEL_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 6])
def test_target_matches_the_reference(label_kind, dtype, batch):
    """The production target (eq. 10) against the reference oracle: labels of every kind, B = 1, both precisions,
    a column-major target-head output and every beta edge."""
    _, target_logits = make_logits(batch, 5, dtype, "cpu", layout="column_major", seed=batch)
    y = make_labels(label_kind, batch, 5, "cpu", seed=batch)
    lam, partner = make_pairing(batch, "cpu", seed=batch)
    labels = dense(y, 5).to(dtype)
    for beta in (0.0, 0.3, 1.0):
        got = fastmix.lamix_target(target_logits, y, lam, partner, beta=beta)
        assert got.dtype == dtype
        assert_close(got, reference.lamix_target(target_logits, labels, lam, partner, beta), dtype, f"beta={beta}")

@pytest.mark.parametrize("backend,device", BACKENDS)
def test_beta_one_gives_the_local_label(backend, device):
    """beta = 1: the target is the mixup label (eq. 2 in eq. 10), so the loss is torch's soft cross-entropy and W_t
    gets no gradient."""
    logits, target_logits = make_logits(7, 5, torch.float32, device)
    y = make_labels("int", 7, 5, device)
    lam, partner = make_pairing(7, device)
    loss, grad_z, grad_t = fused_loss_and_grads(logits, target_logits, y, lam, partner, 1.0, False, backend)
    local = lam[:, None] * F.one_hot(y, 5) + (1 - lam[:, None]) * F.one_hot(y[partner], 5)
    z = logits.clone().requires_grad_()
    want = F.cross_entropy(z, local, reduction="none")
    want.sum().backward()
    assert_close(loss, want, torch.float32)
    assert_close(grad_z, z.grad, torch.float32)
    assert torch.count_nonzero(grad_t) == 0


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_original_batch_local_label_is_the_sample_label(backend, device):
    """Section 2.4: with partner = self, y~_ii = y_i whatever lam."""
    logits, target_logits = make_logits(6, 4, torch.float32, device)
    y = make_labels("int", 6, 4, device)
    itself = torch.arange(6, device=device)
    losses = [fastmix.lamix_loss(logits, target_logits, y, torch.full((6,), lam, device=device), itself,
                                 reduction="none", backend=backend) for lam in (0.0, 0.3, 1.0)]
    want = expected_loss_and_grads(logits, target_logits, y, torch.ones(6, device=device), itself, 0.5, False)[0]
    for loss in losses:
        assert_close(loss, want, torch.float32)


@pytest.mark.parametrize("backend,device", MIX_BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lamix_inputs_average_pairs(backend, device, dtype, layout):
    x = make_batch(layout, 7, dtype, device)
    x_before = x.clone()
    x_avg, perm = fastmix.lamix_inputs(x, generator=seeded(device), backend=backend)
    if backend != "triton":  # Triton draws it in its kernel: test_triton_pairing_is_a_uniform_permutation
        assert torch.equal(perm, torch.randperm(7, generator=seeded(device), device=device))
    assert torch.equal(perm.sort().values, torch.arange(7, device=device))
    assert_close(x_avg, reference.lamix_inputs(x.double(), perm), dtype, "eq. 4")
    assert x_avg.dtype == dtype and x_avg.shape == x.shape
    if layout == "channels_last":
        assert x_avg.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("backend,device", backend_params(("triton",)))
def test_triton_pairing_is_a_uniform_permutation(backend, device):
    """The pairing kernel's permutation: every (sample, position) pair equally likely (chi-square over 300 seeds with
    B = 7), a permutation at B = 300 (several blocks), ratios 1/2; through lamix_inputs, the same generator seed
    draws the same permutation and another seed not."""
    draws = [lamix_ops.lamix_pairs(torch.tensor([seed], device=device), 7, torch.float32) for seed in range(300)]
    perms, inverses, halves = (torch.stack(column).cpu() for column in zip(*draws))
    assert torch.equal(perms.gather(1, inverses), torch.arange(7).expand(300, 7))  # perm[inverse[j]] = j
    counts = torch.stack([(perms == value).sum(0) for value in range(7)])  # (value, position) counts, 300/7 each
    assert scipy_stats.chisquare(counts.flatten().numpy()).pvalue > 1e-3
    assert torch.equal(halves, torch.full((300, 7), 0.5))
    perm, _, half = lamix_ops.lamix_pairs(torch.tensor([-3], device=device), 300, torch.float64)
    assert half.dtype == torch.float64
    assert perm.dtype == torch.int64 and torch.equal(perm.sort().values.cpu(), torch.arange(300))
    x = make_batch("features", 9, torch.float32, device)
    first = fastmix.lamix_inputs(x, generator=seeded(device), backend=backend)[1]
    assert torch.equal(fastmix.lamix_inputs(x, generator=seeded(device), backend=backend)[1], first)
    assert not torch.equal(fastmix.lamix_inputs(x, generator=seeded(device, 1), backend=backend)[1], first)
    torch.library.opcheck(lamix_ops.lamix_pairs, (torch.tensor([4], device=device), 5, torch.float32))


@pytest.mark.parametrize("backend,device", MIX_BACKENDS)
def test_lamix_inputs_gradient(backend, device):
    x = make_batch("nchw", 6, torch.float64, device).requires_grad_()
    x_avg, perm = fastmix.lamix_inputs(x, generator=seeded(device, 2), backend=backend)
    grad = torch.randn_like(x_avg)
    x_avg.backward(grad)
    want = 0.5 * grad + 0.5 * torch.zeros_like(grad).index_add_(0, perm, grad)
    assert_close(x.grad, want, torch.float64)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lam_is_beta_distributed(alpha):
    lam = sample_beta(alpha, 40000, "cpu", seeded("cpu"))
    assert lam.dtype == torch.float32 and bool(((lam >= 0) & (lam <= 1)).all())
    variance = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - variance) < 0.05 * variance


def test_tiny_alpha_gives_zero_or_one():
    """Beta(a, a) for a -> 0 is a fair coin on {0, 1}; P(1e-3 < lam < 1 - 1e-3) ~ 2 a ln(1000) = 0.14% here."""
    lam = sample_beta(1e-4, 4000, "cpu", seeded("cpu"))
    assert not lam.isnan().any()
    interior = (lam > 1e-3) & (lam < 1 - 1e-3)
    assert interior.float().mean().item() < 0.01
    assert 0.45 < (lam > 0.5).float().mean().item() < 0.55


def test_schedule_alternates_original_and_mixed_batches():
    lamix = fastmix.LaMix(alpha=1.0)
    x = torch.randn(8, 3)
    y = torch.arange(8) % 4
    generator = seeded("cpu")
    kinds = []
    for _ in range(4):
        x_in, batch = lamix(x, y, generator=generator)
        kinds.append(batch.mixed)
        if batch.mixed:
            assert_close(x_in, 0.5 * x + 0.5 * x[batch.partner], torch.float32)
            assert not torch.equal(batch.lam, torch.ones(8))
        else:
            assert x_in is x and torch.equal(batch.partner, torch.arange(8)) and torch.equal(batch.lam, torch.ones(8))
    assert kinds == [False, True, False, True]
    lamix.eval()
    assert not lamix(x, y)[1].mixed and not lamix(x, y)[1].mixed and lamix.steps == 4
    assert lamix(x, y, mixed=True)[1].mixed


def test_seeded_training_step_reproduces():
    def run(seed):
        torch.manual_seed(0)
        head = fastmix.LaMixHead(3, 4)
        lamix = fastmix.LaMix()
        generator = seeded("cpu", seed)
        x = torch.randn(6, 3, generator=seeded("cpu", 9))
        y = torch.tensor([0, 1, 2, 3, 0, 1])
        lamix(x, y, generator=generator)  # the original batch
        x_in, batch = lamix(x, y, generator=generator)
        loss = lamix.loss(*head(x_in), batch)
        loss.backward()
        return x_in, batch.lam, batch.partner, loss, head.target.weight.grad

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[1], other[1])


def test_head_holds_both_layers():
    head = fastmix.LaMixHead(5, 3)
    features = torch.randn(4, 5)
    logits, target_logits = head(features)
    assert_close(logits, features @ head.classifier.weight.t() + head.classifier.bias, torch.float32)
    assert_close(target_logits, features @ head.target.weight.t() + head.target.bias, torch.float32)
    assert not torch.equal(head.classifier.weight, head.target.weight)
    assert fastmix.LaMixHead(5, 3, bias=False).target.bias is None


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_detached_target_trains_only_the_classifier(backend, device):
    torch.manual_seed(0)
    head = fastmix.LaMixHead(4, 3)
    features = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    lam, partner = make_pairing(5, "cpu")
    fastmix.lamix_loss(*head(features), y, lam, partner, detach_target=True, backend=backend).backward()
    assert head.target.weight.grad is None
    assert torch.count_nonzero(head.classifier.weight.grad) > 0


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", ["int", "soft"])
@pytest.mark.parametrize("layout", ["contiguous", "column_slice", "column_major"])
def test_opcheck(backend, device, label_kind, layout):
    """Every op on dense and strided logits; in the strided layouts lam, partner, the incoming gradient and the labels
    are sliced or transposed too."""
    logits, target_logits = make_logits(5, 6, torch.float32, device, layout)
    labels = make_labels(label_kind, 5, 6, device)
    lam, partner = make_pairing(5, device)
    grad_loss = torch.rand(5, device=device)
    if layout != "contiguous":
        lam, grad_loss = torch.rand(10, device=device)[::2], torch.rand(10, device=device)[1::2]
        partner = torch.stack([partner, partner], 1)[:, 1]
        labels = (torch.stack([labels, labels], 1)[:, 0] if label_kind == "int"
                  else make_labels("soft", 6, 5, device).t())
    for detach_target in (False, True):
        args = (logits.clone().requires_grad_(), target_logits.clone().requires_grad_(), labels, lam, partner,
                0.5, detach_target, backend)
        torch.library.opcheck(lamix_ops.lamix_loss, args)
        torch.library.opcheck(lamix_ops.lamix_loss_backward, (grad_loss, logits, target_logits, labels, lam,
                                                              partner, 0.5, detach_target, backend))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_double_backward_is_an_error(backend, device):
    logits, target_logits = make_logits(3, 4, torch.float64, device)
    z = logits.requires_grad_()
    lam, partner = make_pairing(3, device)
    loss = fastmix.lamix_loss(z, target_logits, make_labels("int", 3, 4, device), lam, partner, backend=backend)
    (grad_z,) = torch.autograd.grad(loss, z, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad_z.sum(), z)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    """Dynamo cannot take a torch.Generator as a graph input, so the compiled step draws from the default RNG."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    head = fastmix.LaMixHead(12, 4)

    def step(x, y):
        x_avg, perm = fastmix.lamix_inputs(x, backend=backend)
        lam = torch.rand(x.size(0), device=x.device)
        logits, target_logits = head(x_avg.flatten(1))
        return fastmix.lamix_loss(logits, target_logits, y, lam, perm, backend=backend)

    x = make_batch("features", 6, torch.float32, device)[:, :12].contiguous()
    y = make_labels("int", 6, 4, device)
    compiled = compile_fullgraph(step, device)
    torch.manual_seed(5)
    got = compiled(x, y)
    got.backward()
    got_grad = head.target.weight.grad.clone()
    head.zero_grad()
    torch.manual_seed(5)
    want = step(x, y)
    want.backward()
    assert_close(got, want, torch.float32)
    assert_close(got_grad, head.target.weight.grad, torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("batch,classes", [(0, 4), (3, 0), (0, 0)])
def test_empty_batch_or_classes_launch_nothing(backend, device, batch, classes):
    """B = 0 or K = 0: the per-row loss is 0 (an empty sum), the gradients are empty."""
    logits = torch.randn(batch, classes, device=device)
    labels = torch.rand(batch, classes, device=device)
    lam, partner = torch.rand(batch, device=device), torch.arange(batch, device=device)
    loss = lamix_ops.lamix_loss(logits, logits, labels, lam, partner, 0.5, False, backend)
    assert torch.equal(loss, torch.zeros(batch, device=device))
    grad_z, grad_t = lamix_ops.lamix_loss_backward(torch.ones(batch, device=device), logits, logits, labels, lam,
                                                   partner, 0.5, False, backend)
    assert grad_z.shape == grad_t.shape == (batch, classes)


def test_triton_kernel_asserts_labels_and_partners_on_the_device(device_asserts):
    """On the GPU path no host-side check runs: the kernel asserts class indices in [0, K) and partners in [0, B) as
    it reads them, in the forward and the backward, and valid ones pass."""
    lamix_ops.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, 0.5, False, "triton")
    lamix_ops.lamix_loss_backward(LAM, LOGITS, LOGITS, Y, LAM, PERM, 0.5, False, "triton")
    for bad in (-1, 4):
        labels = Y.clone()
        labels[3] = bad
        with pytest.raises(InterpreterError, match="y holds class indices outside"):
            lamix_ops.lamix_loss(LOGITS, LOGITS, labels, LAM, PERM, 0.5, False, "triton")
    for bad in (-1, 6):
        partner = PERM.clone()
        partner[4] = bad
        with pytest.raises(InterpreterError, match="partner holds sample indices outside"):
            lamix_ops.lamix_loss_backward(LAM, LOGITS, LOGITS, Y, LAM, partner, 0.5, True, "triton")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_ops_check_their_arguments(backend, device):
    logits, y, lam, partner = LOGITS.to(device), Y.to(device), LAM.to(device), PERM.to(device)
    with pytest.raises(ValueError, match=r"y holds class indices outside \[0, 4\)"):
        lamix_ops.lamix_loss(logits, logits, y + 4, lam, partner, 0.5, False, backend)
    with pytest.raises(ValueError, match=r"partner holds sample indices outside \[0, 6\)"):
        lamix_ops.lamix_loss_backward(lam, logits, logits, y, lam, partner - 1, 0.5, False, backend)
    with pytest.raises(ValueError, match="partner must be int64"):
        lamix_ops.lamix_loss(logits, logits, y, lam, partner.int(), 0.5, False, backend)
    with pytest.raises(ValueError, match="labels must be int64"):
        lamix_ops.lamix_loss(logits, logits, y[:5], lam, partner, 0.5, False, backend)
    with pytest.raises(ValueError, match="of one dtype"):
        lamix_ops.lamix_loss(logits, logits.double(), y, lam, partner, 0.5, False, backend)


@pytest.mark.parametrize("label_kind", ["int", "soft"])
def test_float64_parity_with_the_gpu_scalar_semantics(gpu_float_arguments, label_kind):
    """A GPU launch passes a Python float as fp32: beta = 0.3 (not an fp32 number) must still reach the fp64 kernel
    exactly, in the loss and both gradients."""
    reason = _backend.unavailable_reason("triton", "cpu")
    if reason:
        pytest.skip(reason)
    logits, target_logits = make_logits(5, 7, torch.float64, "cpu")
    y = make_labels(label_kind, 5, 7, "cpu")
    y = y if label_kind == "int" else y.double()
    lam, partner = make_pairing(5, "cpu")
    lam = lam.double()
    got = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.3, False, "triton")
    want = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.3, False)
    for g, w, name in zip(got, want, ("loss", "grad_z", "grad_t")):
        assert_close(g, w, torch.float64, name)


def test_cpu_kernels_split_rows_across_threads():
    """B K above the kernels' threshold for OpenMP (2^16 logits): the rows run on several threads, same values."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    logits, target_logits = make_logits(70, 1003, torch.float32, "cpu")
    y = make_labels("soft", 70, 1003, "cpu")
    lam, partner = make_pairing(70, "cpu")
    got = fused_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False, "cpu")
    want = expected_loss_and_grads(logits, target_logits, y, lam, partner, 0.5, False)
    for g, w, name in zip(got, want, ("loss", "grad_z", "grad_t")):
        assert_close(g, w, torch.float32, name)


def test_numpy_scalars_and_strict_flags():
    want = fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta=0.25, detach_target=True)
    assert torch.equal(fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta=np.float32(0.25),
                                          detach_target=np.bool_(True)), want)
    assert fastmix.LaMix(alpha=np.float64(1.0), beta=np.float32(0.5)).beta == 0.5
    with pytest.raises(TypeError, match="detach_target must be a bool"):
        fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, detach_target=1)
    with pytest.raises(TypeError, match="detach_target must be a bool"):
        fastmix.LaMix(detach_target="yes")


@pytest.mark.parametrize("backend", ["cuda", "fast"])
def test_lamix_checks_the_backend_at_construction(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        fastmix.LaMix(backend=backend)


def test_lamix_runs_the_cpu_backend():
    """LaMix(backend="cpu") now runs: the C++ loss kernel and the C++ pair mix."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    lamix = fastmix.LaMix(backend="cpu")
    x = torch.randn(6, 3)
    _, batch = lamix(x, Y, generator=seeded("cpu"), mixed=True)
    assert_close(lamix.loss(LOGITS, LOGITS, batch), fastmix.lamix_loss(LOGITS, LOGITS, Y, batch.lam, batch.partner,
                                                                        backend="reference"), torch.float32)


LOGITS = torch.randn(6, 4)
Y = torch.tensor([0, 1, 2, 3, 0, 1])
LAM = torch.rand(6)
PERM = torch.tensor([1, 0, 3, 2, 5, 4])


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta=1.5), ValueError, r"beta must be in \[0, 1\]"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta=-0.1), ValueError, "beta must be in"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta=float("nan")), ValueError, "beta must be in"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, beta="0.5"), TypeError, "beta must be a real"),
        (lambda: fastmix.LaMix(beta=2.0), ValueError, "beta must be in"),
        (lambda: fastmix.LaMix(alpha=0.0), ValueError, "alpha must be"),
        (lambda: fastmix.LaMix(alpha=-1.0), ValueError, "alpha must be"),
        (lambda: sample_beta(0.0, 4, "cpu"), ValueError, "alpha must be"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS[:, :3], Y, LAM, PERM), ValueError, "target_logits must have the shape"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS.double(), Y, LAM, PERM), ValueError, "must match logits"),
        (lambda: fastmix.lamix_loss(LOGITS[0], LOGITS[0], Y, LAM, PERM), ValueError, "logits must have at least 2"),
        (lambda: fastmix.lamix_loss(LOGITS[None], LOGITS[None], Y, LAM, PERM), ValueError, r"shape \(B, K\)"),
        (lambda: fastmix.lamix_loss(LOGITS.long(), LOGITS.long(), Y, LAM, PERM), TypeError, "logits must be a float"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y[:5], LAM, PERM), ValueError, "y must have the batch size"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, torch.rand(6, 5), LAM, PERM), ValueError, "num_classes=4"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y + 4, LAM, PERM), ValueError, r"outside \[0, 4\)"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM[:5], PERM), ValueError, r"lam must have shape \(6,\)"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM[:5]), ValueError, r"partner must have shape \(6,\)"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM.long(), PERM), TypeError, "lam must be a floating"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM.float()), TypeError, "partner must hold integer"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM + 1), ValueError, r"partner holds .* outside \[0, 6\)"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM.to("meta")), ValueError, "partner is on meta"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, reduction="max"), ValueError, "reduction must be"),
        (lambda: fastmix.lamix_loss(LOGITS, LOGITS, Y, LAM, PERM, backend="cuda"), ValueError, "backend must be one of"),
        (lambda: fastmix.lamix_inputs(LOGITS.long()), TypeError, "x must be a floating-point"),
        (lambda: fastmix.lamix_inputs(LOGITS, generator=3), TypeError, "generator must be"),
        (lambda: fastmix.LaMix()(LOGITS, Y[:5]), ValueError, "y must have the batch size"),
        (lambda: fastmix.lamix_target(LOGITS, Y, LAM, PERM, beta=1.01), ValueError, "beta must be in"),
        (lambda: fastmix.LaMixHead(0, 4), ValueError, "in_features must be a positive int"),
        (lambda: fastmix.LaMixHead(4, 2.5), ValueError, "num_classes must be a positive int"),
    ],
)
def test_bad_input(call, error, match):
    before = [t.clone() for t in (LOGITS, Y, LAM, PERM)]
    with pytest.raises(error, match=match):
        call()
    assert all(torch.equal(a, b) for a, b in zip(before, (LOGITS, Y, LAM, PERM)))


def test_example_runs_quick(capsys):
    pytest.importorskip("sklearn")
    from fastmix.examples import lamix as example

    results = example.main(["--quick", "--epochs", "1", "--limit", "64", "--threads", str(torch.get_num_threads())])
    assert list(results) == ["plain", "mixup", "lamix"]
    for runs in results.values():
        assert len(runs) == 1 and 0.0 <= runs[0]["accuracy"] <= 1.0 and runs[0]["train_loss"] > 0
    table = capsys.readouterr().out.splitlines()[-3:]
    assert [line.split("|")[1].strip() for line in table] == ["plain", "mixup", "lamix"]
