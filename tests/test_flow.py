"""Flow-Mixup (Flow-Mixup paper): parity with the reference, eq. 2-3 by hand, stacked modules, custom ops, bad input."""

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from triton.runtime.errors import InterpreterError
from torch import nn

import fastmix
from fastmix import _native
from fastmix.ops import flow as flow_ops
from fastmix.reference import flow as reference
from helpers import (FLOAT_DTYPES, LABEL_KINDS, LAYOUTS, assert_close, assert_close_nonfinite,
                     assert_rejected_untouched, backend_params, compile_fullgraph, gradcheck_input, make_batch,
                     make_labels, seeded, weighted_sum_ieee)

BATCHES = (1, 2, 3, 7, 64)


def reference_with_grad(z, params, grad):
    """Output and gradient of the plain-autograd reference, in float64."""
    z64 = z.detach().double().requires_grad_()
    out = reference.flow_mix(z64, params.lam.double(), params.perm, params.flow_size, params.keep_original)
    (grad_z,) = torch.autograd.grad(out, z64, grad.double())
    return out, grad_z


def eq3_by_hand(grad, lam, perm, batch, flow_size, keep_original):
    """grad_z[j] = (grad'[j] + grad_m[j]) / 2 (eq. 3), grad_m by the chain rule of eq. 2, one sample at a time."""
    rows = batch * flow_size
    mixed = grad[rows:] if keep_original else grad
    grad_z = torch.zeros_like(grad[:rows])
    for f in range(flow_size):
        for i in range(batch):  # z_mixed[i] = p_i z[i] + (1 - p_i) z[perm[i]]
            grad_z[f * batch + i] += lam[i] * mixed[f * batch + i]
            grad_z[f * batch + perm[i]] += (1 - lam[i]) * mixed[f * batch + i]
    return (grad[:rows] + grad_z) / 2 if keep_original else grad_z


def mixing_matrix(lam, perm, flow_size, keep_original):
    """The (output rows, input rows) matrix of eq. 2, entry by entry: z' = M z."""
    batch = len(perm)
    rows = batch * flow_size
    mixed = torch.zeros(rows, rows, dtype=torch.float64)
    for f in range(flow_size):
        for i in range(batch):
            mixed[f * batch + i, f * batch + i] += lam[i]
            mixed[f * batch + i, f * batch + perm[i]] += 1 - lam[i]
    return torch.cat([torch.eye(rows, dtype=torch.float64), mixed]) if keep_original else mixed


def with_non_finite(values):
    """A copy of a (rows >= 6, ...) batch with +-inf, NaN, and +inf and -inf in the same column of two rows."""
    values = values.contiguous().clone()
    flat = values.view(values.size(0), -1)
    flat[0, 0], flat[1, 1], flat[2, 2] = float("inf"), float("-inf"), float("nan")
    flat[3, 3], flat[4, 3], flat[5, 4], flat[1, 4] = float("inf"), float("-inf"), float("inf"), float("inf")
    return values


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES, torch.float64])
@pytest.mark.parametrize("keep_original", [True, False])
def test_non_finite_values_follow_eq2_and_eq3(backend, device, dtype, keep_original):
    """Every backend evaluates p a + (1 - p) b as written, forward and backward: +-inf stays +-inf unless it meets
    the other infinity or NaN (a lerp would give NaN for inf mixed with inf)."""
    z = with_non_finite(make_batch("nchw", 8, dtype, device)).requires_grad_()
    out, params = fastmix.flow_mix(z, keep_original=keep_original, per_sample=True, flow_size=2,
                                   generator=seeded(device, 7), backend=backend)
    matrix = mixing_matrix(params.lam.tolist(), params.perm.tolist(), 2, keep_original)
    assert_close_nonfinite(out, weighted_sum_ieee(matrix, z), dtype, "z'")
    grad = with_non_finite(torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(device, dtype))
    (grad_z,) = torch.autograd.grad(out, z, grad)
    halved = matrix / 2 if keep_original else matrix
    assert_close_nonfinite(grad_z, weighted_sum_ieee(halved.t(), grad), dtype, "grad_z")


@pytest.mark.parametrize("backend,device", backend_params())
def test_empty_samples(backend, device):
    z = torch.randn(6, 0, 4, device=device, requires_grad=True)
    out, params = fastmix.flow_mix(z, flow_size=2, generator=seeded(device), backend=backend)
    assert out.shape == (12, 0, 4) and params.perm.shape == (3,)
    (grad_z,) = torch.autograd.grad(out, z, torch.ones_like(out))
    assert grad_z.shape == z.shape


def test_numpy_and_tensor_arguments():
    z = make_batch("features", 4, torch.float32, "cpu")
    expected, _ = fastmix.flow_mix(z, alpha=2.0, generator=seeded("cpu"))
    for alpha in (np.float32(2.0), np.int64(2), torch.tensor(2.0)):
        out, _ = fastmix.flow_mix(z, alpha=alpha, keep_original=np.bool_(True), generator=seeded("cpu"))
        assert torch.equal(out, expected), type(alpha)


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_with_reference(backend, device, dtype, batch, layout):
    z = make_batch(layout, batch, dtype, device).requires_grad_()
    z_before = z.detach().clone()
    out, params = fastmix.flow_mix(z, generator=seeded(device), backend=backend)
    assert out.dtype == dtype and out.shape == (2 * batch, *z.shape[1:])
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    (grad_z,) = torch.autograd.grad(out, z, grad)
    expected_out, expected_grad = reference_with_grad(z, params, grad)
    assert_close(out, expected_out, dtype, "z'")
    assert torch.equal(out[:batch], z_before), "the original flow is z itself"
    assert_close(grad_z, expected_grad, dtype, "grad_z")
    assert torch.equal(z.detach(), z_before), "the caller's z was modified"


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("keep_original", [True, False])
@pytest.mark.parametrize("flow_size,per_sample", [(1, True), (2, False), (3, True)])
def test_gradient_is_eq3_by_hand(backend, device, keep_original, flow_size, per_sample):
    batch = 5
    z = make_batch("channel_slice", flow_size * batch, torch.float64, device).requires_grad_()
    out, params = fastmix.flow_mix(z, keep_original=keep_original, per_sample=per_sample, flow_size=flow_size,
                                   generator=seeded(device, 2), backend=backend)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(device)
    (grad_z,) = torch.autograd.grad(out, z, grad)
    by_hand = eq3_by_hand(grad, params.lam.tolist(), params.perm.tolist(), batch, flow_size, keep_original)
    assert_close(grad_z, by_hand, torch.float64)


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("layout,keep_original",
                         [("nchw", True), ("channels_last", True), ("spatial_slice", True), ("nchw", False)])
def test_gradcheck_float64(backend, device, layout, keep_original):
    """With the original flow kept, autograd must give half the true Jacobian (eq. 3): ``out - out.detach() / 2``
    has the values ``M z / 2``, whose true Jacobian is what the op's halved backward claims. Plain mixup
    (keep_original=False) is checked as is."""
    z = gradcheck_input(layout, device, (4, 2, 1, 3))

    def mixed(z):
        out, _ = fastmix.flow_mix(z, keep_original=keep_original, per_sample=True, flow_size=2,
                                  generator=seeded(device, 1), backend=backend)
        return out - out.detach() / 2 if keep_original else out

    # Under the interpreter each evaluation is three kernel launches: the Triton backend checks the random projection
    # v^T J u (fast mode), which any wrong Jacobian entry changes; the reference checks every entry.
    fast = backend == "triton"
    assert torch.autograd.gradcheck(mixed, (z,), fast_mode=fast)
    assert torch.autograd.gradgradcheck(mixed, (z,), fast_mode=fast)


def test_gradcheck_fails_without_the_halving():
    """The straight-through check above can fail: the reference without its hook is rejected."""
    z = gradcheck_input("nchw", "cpu", (3, 2, 1, 3))
    lam, perm = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64), torch.tensor([2, 0, 1])

    def unhalved(z):
        out = torch.cat([z, reference.mix_blocks(z, lam, perm, 1)])
        return out - out.detach() / 2

    assert not torch.autograd.gradcheck(unhalved, (z,), raise_exception=False)


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("per_sample", [False, True])
def test_without_original_flow_is_mixup(backend, device, per_sample):
    """Op=False (section III.C): z' = z_mixed = p z + (1 - p) z[perm] and grad = grad_m, unhalved."""
    z = make_batch("channels_last", 7, torch.float32, device).requires_grad_()
    both, params = fastmix.flow_mix(z, per_sample=per_sample, generator=seeded(device, 4), backend=backend)
    mixed, same_params = fastmix.flow_mix(z, keep_original=False, per_sample=per_sample, generator=seeded(device, 4),
                                          backend=backend)
    assert torch.equal(params.lam, same_params.lam) and torch.equal(params.perm, same_params.perm)
    assert mixed.shape == z.shape and same_params.output_flow_size == 1
    lam = params.lam.view(-1, 1, 1, 1)
    mixup = lam * z + (1 - lam) * z[params.perm]
    assert_close(mixed, mixup, torch.float32)
    assert_close(both[7:], mixup, torch.float32)
    grad = torch.randn(mixed.shape, generator=torch.Generator().manual_seed(5)).to(device)
    (grad_z,) = torch.autograd.grad(mixed, z, grad)
    (mixup_grad,) = torch.autograd.grad(mixup, z, grad)
    assert_close(grad_z, mixup_grad, torch.float32)


@pytest.mark.parametrize("backend,device", backend_params(("reference",)))  # drawn before any kernel runs
def test_p_is_beta_and_perm_is_a_permutation(backend, device):
    batch = 4000
    z = torch.zeros(batch, 1, device=device)
    _, shared = fastmix.flow_mix(z, alpha=3.0, generator=seeded(device), backend=backend)
    assert torch.all(shared.lam == shared.lam[0]), "one p per mixing call by default (eq. 2)"
    assert torch.equal(shared.perm.sort().values.cpu(), torch.arange(batch))
    _, own = fastmix.flow_mix(z, alpha=3.0, per_sample=True, generator=seeded(device), backend=backend)
    lam = own.lam.double().cpu()
    # Beta(3, 3): mean 1/2, variance 1/28; the bounds are > 5 standard errors wide for 4000 draws.
    assert abs(lam.mean().item() - 0.5) < 0.015 and abs(lam.var().item() - 1 / 28) < 0.006
    assert lam.min() > 0 and lam.max() < 1


@pytest.mark.parametrize("backend,device", backend_params(("triton",)))
def test_triton_draws_p_from_beta_and_a_uniform_permutation(backend, device):
    """The parameter kernel's draws: p ~ Beta(alpha, alpha) (Kolmogorov-Smirnov against scipy on fixed seeds), one p
    per call unless per_sample, a permutation with every (sample, position) pair equally likely (chi-square over 200
    seeds with B = 7); through flow_mix, the same generator seed draws the same, another seed not."""
    for alpha in (0.3, 3.0):
        lam, perm = flow_ops.flow_params(torch.tensor([round(10 * alpha)], device=device), alpha, 512, True,
                                         torch.float64)
        assert scipy_stats.kstest(lam.cpu().numpy(), scipy_stats.beta(alpha, alpha).cdf).pvalue > 1e-3
        assert torch.equal(perm.sort().values.cpu(), torch.arange(512))
        shared, _ = flow_ops.flow_params(torch.tensor([5], device=device), alpha, 100, False, torch.float32)
        assert torch.all(shared == shared[0]), "one p per mixing call by default (eq. 2)"
    perms = torch.stack([flow_ops.flow_params(torch.tensor([seed], device=device), 3.0, 7, False, torch.float32)[1]
                         for seed in range(200)]).cpu()
    counts = torch.stack([(perms == value).sum(0) for value in range(7)])  # (value, position) counts, 200/7 each
    assert scipy_stats.chisquare(counts.flatten().numpy()).pvalue > 1e-3
    z = torch.zeros(9, 1, device=device)
    first = fastmix.flow_mix(z, per_sample=True, generator=seeded(device), backend=backend)[1]
    again = fastmix.flow_mix(z, per_sample=True, generator=seeded(device), backend=backend)[1]
    other = fastmix.flow_mix(z, per_sample=True, generator=seeded(device, 1), backend=backend)[1]
    assert torch.equal(again.lam, first.lam) and torch.equal(again.perm, first.perm)
    assert not torch.equal(other.lam, first.lam)


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
def test_labels_follow_the_features(backend, device, label_kind):
    batch, classes = 6, 5
    z = make_batch("features", batch, torch.float32, device)
    y = make_labels(label_kind, batch, classes, device)
    y_before = y.clone()
    _, params = fastmix.flow_mix(z, per_sample=True, generator=seeded(device), backend=backend)
    targets = fastmix.flow_mix_labels(y, params, num_classes=classes)
    dense = torch.nn.functional.one_hot(y, classes).float() if label_kind == "int" else y
    assert targets.dtype == torch.float32 and targets.shape == (2 * batch, classes)
    assert torch.equal(targets[:batch], dense)
    for i in range(batch):
        p, j = params.lam[i].item(), params.perm[i].item()
        assert_close(targets[batch + i], p * dense[i] + (1 - p) * dense[j], torch.float32)
    assert torch.equal(y, y_before)
    assert targets.min() >= 0 and targets.max() <= 1
    if label_kind != "multi_hot":
        assert_close(targets.sum(1), torch.ones(2 * batch), torch.float32)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,flow_size,keep_original", [(1, 1, True), (5, 1, False), (4, 2, True), (3, 3, False)])
def test_labels_match_the_reference(dtype, batch, flow_size, keep_original):
    """The production label mix against the reference oracle's ``mix_blocks``: B = 1, several flow blocks, with
    and without the original flow, soft labels in both precisions."""
    z = torch.randn(flow_size * batch, 3, dtype=dtype)
    y = torch.rand(flow_size * batch, 4, dtype=dtype)
    _, params = fastmix.flow_mix(z, keep_original=keep_original, per_sample=True, flow_size=flow_size,
                                 generator=seeded("cpu", batch), backend="reference")
    mixed = reference.mix_blocks(y, params.lam, params.perm, flow_size)
    expected = torch.cat([y, mixed]) if keep_original else mixed
    got = fastmix.flow_mix_labels(y, params)
    assert got.dtype == dtype
    assert_close(got, expected, dtype)

class TwoMixNet(nn.Module):
    """Fig. 2b: Mixing modules on two hidden states of an affine network."""

    def __init__(self, keep_last=True, backend=None):
        super().__init__()
        self.block1 = nn.Linear(6, 8)
        self.mix1 = fastmix.FlowMixup(alpha=3.0, backend=backend)
        self.block2 = nn.Linear(8, 8)
        self.mix2 = fastmix.FlowMixup(alpha=3.0, keep_original=keep_last, previous=self.mix1, backend=backend)
        self.head = nn.Linear(8, 4)

    def forward(self, x, generator=None):
        z = self.mix1(self.block1(x), generator=generator)
        return self.head(self.mix2(self.block2(z), generator=generator))


@pytest.mark.parametrize("backend,device", backend_params())
@pytest.mark.parametrize("keep_last,flow", [(True, 4), (False, 2)])
def test_two_modules_compose(backend, device, keep_last, flow):
    """An affine network maps a mix of inputs to the same mix of outputs (eq. 1), so with y = h(x) the final
    flow's outputs are exactly the composed targets, block by block."""
    torch.manual_seed(0)
    net = TwoMixNet(keep_last, backend).double().to(device)
    batch = 5
    x = torch.randn(batch, 6, dtype=torch.float64, device=device)
    net.eval()
    y = net(x).detach()
    assert net.mix2.params is None and torch.equal(net.mix2.targets(y), y)
    net.train()
    out = net(x, generator=seeded(device))
    assert out.shape == (flow * batch, 4)
    assert net.mix1.output_flow_size() == 2 and net.mix2.input_flow_size() == 2
    assert net.mix2.output_flow_size() == flow
    targets = net.mix2.targets(y)
    assert_close(out, targets, torch.float64)
    if keep_last:
        assert_close(out[:batch], y, torch.float64, "the original flow goes through untouched")
    first, second = net.mix1.params, net.mix2.params
    assert second.flow_size == 2
    y1 = fastmix.flow_mix_labels(y, first)
    assert_close(targets, fastmix.flow_mix_labels(y1, second), torch.float64)


@pytest.mark.parametrize("backend,device", backend_params())
def test_second_module_mixes_within_each_flow_block(backend, device):
    z = make_batch("nchw", 8, torch.float32, device)  # flow_size 2: blocks of 4 samples
    out, params = fastmix.flow_mix(z, flow_size=2, generator=seeded(device), backend=backend)
    assert out.shape[0] == 16 and params.perm.shape == (4,)
    lam = params.lam.view(-1, 1, 1, 1)
    for block in range(2):
        rows = z[4 * block:4 * block + 4]
        assert_close(out[8 + 4 * block:12 + 4 * block], lam * rows + (1 - lam) * rows[params.perm], torch.float32)


def test_module_is_identity_in_eval():
    module = fastmix.FlowMixup()
    z = torch.randn(5, 3)
    assert module(z, generator=seeded("cpu")).shape == (10, 3) and module.params is not None
    module.eval()
    assert module(z) is z and module.params is None and module.output_flow_size() == 1
    targets = module.targets(torch.tensor([0, 1, 2, 0, 1]), num_classes=3)
    assert torch.equal(targets, torch.eye(3)[[0, 1, 2, 0, 1]])


@pytest.mark.parametrize("backend,device", backend_params())
def test_seeded_generator_reproduces(backend, device):
    z = make_batch("nchw", 8, torch.float32, device)
    first, first_params = fastmix.flow_mix(z, per_sample=True, generator=seeded(device, 3), backend=backend)
    again, again_params = fastmix.flow_mix(z, per_sample=True, generator=seeded(device, 3), backend=backend)
    other, _ = fastmix.flow_mix(z, per_sample=True, generator=seeded(device, 4), backend=backend)
    assert torch.equal(first, again) and torch.equal(first_params.lam, again_params.lam)
    assert torch.equal(first_params.perm, again_params.perm)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("backend,device", backend_params())
def test_opcheck(backend, device):
    lam = torch.tensor([0.2, 0.7, 0.5], device=device)
    perm = torch.tensor([1, 2, 0], device=device)
    strided_lam = torch.tensor([9.0, 0.2, 9.0, 0.7, 9.0, 0.5], device=device)[1::2]  # offset and stride 2
    strided_perm = torch.tensor([[1, 7], [2, 7], [0, 7]], device=device, dtype=torch.int32)[:, 0]
    samples = [("nchw", lam, perm), ("channels_last", lam, perm), ("channel_slice", strided_lam, strided_perm),
               ("spatial_slice", strided_lam, perm)]
    for layout, p, q in samples:
        for keep_original in (True, False):
            z = make_batch(layout, 6, torch.float32, device).requires_grad_()
            torch.library.opcheck(flow_ops.flow_mix, (z, p, q, 2, keep_original, backend))
            grad = make_batch(layout, 12 if keep_original else 6, torch.float32, device).requires_grad_()
            torch.library.opcheck(flow_ops.flow_mix_backward, (grad, p, q, 2, keep_original, backend))
    offset_z = make_batch("nchw", 8, torch.float32, device)[2:].requires_grad_()  # a batch slice: storage offset
    torch.library.opcheck(flow_ops.flow_mix, (offset_z, lam, perm, 2, True, backend))


@pytest.mark.parametrize("backend,device", backend_params())
def test_torch_compile_fullgraph(backend, device):
    """Dynamo cannot take a torch.Generator as a graph input, so the compiled step draws from the default RNG."""
    torch._dynamo.reset()

    def step(z):
        out, params = fastmix.flow_mix(z, backend=backend)
        return (out * out).sum(), params.lam

    z = make_batch("channels_last", 4, torch.float32, device).requires_grad_()
    compiled = compile_fullgraph(step, device)
    torch.manual_seed(5)
    loss, lam = compiled(z)
    (grad,) = torch.autograd.grad(loss, z)
    torch.manual_seed(5)
    want_loss, want_lam = step(z)
    (want_grad,) = torch.autograd.grad(want_loss, z)
    assert torch.equal(lam, want_lam)
    assert_close(loss, want_loss, torch.float32)
    assert_close(grad, want_grad, torch.float32)


@pytest.mark.parametrize("backend,device", backend_params())
def test_torch_compile_network(backend, device):
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = TwoMixNet(backend=backend).to(device)
    x = torch.randn(3, 6, device=device)
    y = net.eval()(x).detach()
    compiled = compile_fullgraph(net.train(), device)
    torch.manual_seed(6)
    out = compiled(x)
    targets = net.mix2.targets(y)
    assert out.shape == (12, 4)
    assert_close(out, targets, torch.float32)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda z, y: fastmix.flow_mix(z, alpha=0.0), ValueError, "alpha must be"),
        (lambda z, y: fastmix.flow_mix(z, alpha=-1.0), ValueError, "alpha must be"),
        (lambda z, y: fastmix.flow_mix(z, alpha=float("nan")), ValueError, "alpha must be"),
        (lambda z, y: fastmix.flow_mix(z[0, 0, 0]), ValueError, "z must have at least 2 dims"),
        (lambda z, y: fastmix.flow_mix(z[0, 0, 0, 0]), ValueError, "z must have at least 2 dims"),
        (lambda z, y: fastmix.flow_mix(z[:0]), ValueError, "batch size 0"),
        (lambda z, y: fastmix.flow_mix(z.long()), TypeError, "z must be a floating-point"),
        (lambda z, y: fastmix.flow_mix(z.numpy()), TypeError, "z must be a torch.Tensor"),
        (lambda z, y: fastmix.flow_mix(z, flow_size=4), ValueError, "not a multiple of flow_size=4"),
        (lambda z, y: fastmix.flow_mix(z, flow_size=0), ValueError, "flow_size must be"),
        (lambda z, y: fastmix.flow_mix(z, flow_size=True), ValueError, "flow_size must be"),
        (lambda z, y: fastmix.flow_mix(z, keep_original=1), TypeError, "keep_original must be a bool"),
        (lambda z, y: fastmix.flow_mix(z, per_sample="yes"), TypeError, "per_sample must be a bool"),
        (lambda z, y: fastmix.flow_mix(z, generator=3), TypeError, "generator must be"),
        (lambda z, y: fastmix.flow_mix(z, backend="cpp"), ValueError, "backend must be one of"),
        (lambda z, y: fastmix.flow_mix_labels(y[:5], fastmix.flow_mix(z)[1], num_classes=4), ValueError,
         "y must have 6 samples"),
        (lambda z, y: fastmix.flow_mix_labels(torch.cat([y, y]), fastmix.flow_mix(z)[1], num_classes=4), ValueError,
         "y must have 6 samples"),
        (lambda z, y: fastmix.flow_mix_labels(y, fastmix.flow_mix(z)[1]), ValueError, "num_classes is required"),
        (lambda z, y: fastmix.flow_mix_labels(y + 4, fastmix.flow_mix(z)[1], num_classes=4), ValueError,
         r"outside \[0, 4\)"),
        (lambda z, y: fastmix.flow_mix_labels(y, (0.5, y)), TypeError, "params must be the FlowMixParams"),
        (lambda z, y: fastmix.FlowMixup(alpha=0), ValueError, "alpha must be"),
        (lambda z, y: fastmix.flow_mix(z, alpha=torch.ones(2)), TypeError, "alpha must be a real number or a 0-d"),
        (lambda z, y: fastmix.FlowMixup(per_sample=0), TypeError, "per_sample must be a bool"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3,), 0.5), torch.tensor([0, 0, 1]), 2, True, "reference"),
         ValueError, "perm must be a permutation"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3,), 0.5), torch.tensor([0, 1, 3]), 2, True, "triton"),
         ValueError, "perm must be a permutation"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3,), 0.5), torch.tensor([0, 1, 2]), 3, True, "reference"),
         ValueError, "z must hold 9 rows"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3, 1), 0.5), torch.tensor([0, 1, 2]), 2, True, "reference"),
         TypeError, "lam must be a 1-D"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3,), 0.5), torch.tensor([0.0, 1, 2]), 2, True, "reference"),
         TypeError, "perm must be an int32/int64"),
        (lambda z, y: flow_ops.flow_mix_backward(z, torch.full((3,), 0.5), torch.tensor([0, 1, 2]), 2, True, "cuda"),
         ValueError, "grad must hold 12 rows"),
        (lambda z, y: flow_ops.flow_mix(z, torch.full((3,), 0.5), torch.tensor([0, 1, 2]), 2, True, "cpu"),
         ValueError, "backend must be one of"),
        (lambda z, y: fastmix.FlowMixup(previous=nn.Identity()), TypeError, "previous must be a FlowMixup"),
    ],
)
def test_bad_input(call, error, match):
    assert_rejected_untouched(call, error, match, torch.randn(6, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1]))


def test_triton_kernels_assert_the_shuffle_on_the_device(device_asserts):
    """On the GPU path no host-side check runs: the forward kernel asserts that perm holds indices in [0, B) and
    is a permutation, the backward kernel that it is a permutation (it finds each sample's preimage)."""
    z = make_batch("features", 6, torch.float32, "cpu")
    lam = torch.full((3,), 0.25)
    flow_ops.flow_mix(z, lam, torch.tensor([2, 0, 1]), 2, True, "triton")
    flow_ops.flow_mix_backward(torch.cat([z, z]), lam, torch.tensor([2, 0, 1]), 2, True, "triton")
    for perm in (torch.tensor([0, 1, 3]), torch.tensor([0, 0, 1]), torch.tensor([-1, 0, 1])):
        with pytest.raises(InterpreterError, match="perm must be a permutation"):
            flow_ops.flow_mix(z, lam, perm, 2, True, "triton")
    for perm in (torch.tensor([0, 0, 1]), torch.tensor([2, 2, 2])):
        with pytest.raises(InterpreterError, match="perm must be a permutation"):
            flow_ops.flow_mix_backward(torch.cat([z, z]), lam, perm, 2, True, "triton")


def test_unavailable_backend_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available for cpu tensors"):
        fastmix.flow_mix(torch.randn(4, 3), backend="cuda")


# The CUDA kernels' per-thread bodies (csrc/flow.h), run on the CPU over the launch grid the launcher computes:
# this checks their index arithmetic (row and column tiles, tails, strides, flow blocks) and conversions.
native = pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
NATIVE_SHAPES = [(1, 1, 5), (3, 1, 1023), (2, 3, 1025), (7, 2, 2100), (64, 1, 33)]


def native_inputs(dtype, batch, flow_size, features, rows_out):
    g = torch.Generator().manual_seed(batch * features + flow_size)
    wide = torch.randn(rows_out, features + 7, generator=g).to(dtype)
    lam = torch.rand(batch, generator=g, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    return wide[:, 3:3 + features], lam, torch.randperm(batch, generator=g)  # row stride != features


def run_body(kernel, in_rows, lam, perm, out_rows, flow_size, keep_original):
    """The CUDA kernel body ``kernel`` ("flow_forward_emulate" or "flow_backward_emulate", perm its inverse) on the
    CPU, with the launcher's arguments, through ``_native.launch``."""
    _native.launch(kernel, torch.device("cpu"), _native.Buffer(in_rows, in_rows.dtype, rows=True),
                   _native.Buffer(lam, numel=perm.numel()), _native.Buffer(perm, torch.int64),
                   _native.Buffer(out_rows, in_rows.dtype, rows=True), perm.numel(), flow_size, in_rows.size(1),
                   keep_original, _native.DTYPE_CODES[in_rows.dtype])


@native
@pytest.mark.parametrize("dtype", NATIVE_DTYPES)
@pytest.mark.parametrize("batch,flow_size,features", NATIVE_SHAPES)
@pytest.mark.parametrize("keep_original", [True, False])
def test_native_forward_body(dtype, batch, flow_size, features, keep_original):
    rows = batch * flow_size
    z_rows, lam, perm = native_inputs(dtype, batch, flow_size, features, rows)
    out = torch.full((2 * rows if keep_original else rows, features + 2), 7.0, dtype=dtype)
    out_rows = out[:, :features]
    run_body("flow_forward_emulate", z_rows, lam, perm, out_rows, flow_size, keep_original)
    expected = reference.flow_mix(z_rows.double(), lam.double(), perm, flow_size, keep_original)
    assert_close(out_rows, expected, dtype)
    assert torch.all(out[:, features:] == 7.0), "wrote past the row"


@native
@pytest.mark.parametrize("dtype", NATIVE_DTYPES)
@pytest.mark.parametrize("batch,flow_size,features", NATIVE_SHAPES)
@pytest.mark.parametrize("keep_original", [True, False])
def test_native_backward_body(dtype, batch, flow_size, features, keep_original):
    rows = batch * flow_size
    grad_rows, lam, perm = native_inputs(dtype, batch, flow_size, features, 2 * rows if keep_original else rows)
    inverse = perm.argsort()
    grad_z = torch.full((rows, features + 2), 7.0, dtype=dtype)
    grad_z_rows = grad_z[:, :features]
    run_body("flow_backward_emulate", grad_rows, lam, inverse, grad_z_rows, flow_size, keep_original)
    expected = reference.flow_mix_backward(grad_rows.double(), lam.double(), perm, flow_size, keep_original)
    assert_close(grad_z_rows, expected, dtype)
    assert torch.all(grad_z[:, features:] == 7.0), "wrote past the row"


@native
@pytest.mark.parametrize("dtype", NATIVE_DTYPES)
@pytest.mark.parametrize("keep_original", [True, False])
def test_native_bodies_non_finite(dtype, keep_original):
    """The CUDA bodies follow eq. 2 and eq. 3 as written for +-inf and NaN, like the other backends."""
    batch, features = 6, 300
    z_rows, lam, perm = native_inputs(dtype, batch, 1, features, batch)
    z_rows = with_non_finite(z_rows)
    rows_out = 2 * batch if keep_original else batch
    out = torch.empty(rows_out, features, dtype=dtype)
    run_body("flow_forward_emulate", z_rows, lam, perm, out, 1, keep_original)
    matrix = mixing_matrix(lam.tolist(), perm.tolist(), 1, keep_original)
    assert_close_nonfinite(out, weighted_sum_ieee(matrix, z_rows), dtype, "z'")
    grad = with_non_finite(torch.randn(rows_out, features, generator=torch.Generator().manual_seed(2)).to(dtype))
    inverse = perm.argsort()
    grad_z = torch.empty(batch, features, dtype=dtype)
    run_body("flow_backward_emulate", grad, lam, inverse, grad_z, 1, keep_original)
    halved = matrix / 2 if keep_original else matrix
    assert_close_nonfinite(grad_z, weighted_sum_ieee(halved.t(), grad), dtype, "grad_z")


@native
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_half_conversions_round_like_torch(dtype):
    """Mixing row i with a zero row at weight p_i = scale_i makes the body's float->half/bf16 store round exactly
    like torch's cast of the fp32 product (common.h's conversions, shared by every CUDA kernel)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 1e-4, 3e-8, 6e4, 7e4, 1.0 + 2 ** -11, 1e-40])
    values = torch.cat([torch.randn(4000, generator=g), torch.tensor([0.0, 6.1e-5, 65504.0, 2.0 ** -24])])
    n = len(scale)
    z = torch.cat([values.to(dtype).expand(n, -1), torch.zeros(n, values.numel(), dtype=dtype)])
    lam = torch.cat([scale, torch.ones(n)])
    perm = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    out = torch.empty_like(z)
    run_body("flow_forward_emulate", z, lam, perm, out, 1, False)
    expected = (z[:n].float() * scale[:, None]).to(dtype)
    same = out[:n].view(torch.int16) == expected.view(torch.int16)
    assert same.all(), f"{int((~same).sum())} conversions differ"
