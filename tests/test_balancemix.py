"""BalanceMix (BalanceMix paper): sampler (eq. 2-4), mixing (eq. 5), label management (eq. 8-9), loss (eq. 10), example."""

import math

import pytest
import torch

import fastmix
from fastmix import _backend
from fastmix.methods import balancemix as methods
from fastmix.methods.balancemix import AMBIGUOUS, CLEAN, RELABELED
from fastmix.ops import balancemix as balancemix_ops
from fastmix.reference import balancemix as reference
from helpers import FLOAT_DTYPES, assert_close, backend_params, compile_fullgraph, seeded

LOSS_BACKENDS = backend_params(("reference", "triton", "cpu"))


# --- minority sampler (eq. 2-4) ---------------------------------------------------------------------------------

HAND_PROBABILITIES = torch.tensor([[0.9, 0.2], [0.6, 0.1], [0.3, 0.8], [0.5, 0.5]], dtype=torch.float64)
HAND_LABELS = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
# By hand: P(0) = (0.9 + 0.6) / 2 = 3/4, A(0) = (0.7 + 0.5) / 2 = 3/5, P(1) = 0.8 = 4/5, A(1) = (0.8 + 0.9 + 0.5) / 3
# = 11/15 (eq. 2); Scores 3/4 + 11/15 = 89/60, 89/60, 3/5 + 4/5 = 7/5, 3/5 + 11/15 = 4/3 (eq. 3).
HAND_SCORES = torch.tensor([89 / 60, 89 / 60, 7 / 5, 4 / 3], dtype=torch.float64)


def test_sampling_probabilities_match_eq_2_to_4_by_hand():
    presence, absence = reference.class_confidences(HAND_PROBABILITIES.double(), HAND_LABELS.double())
    assert_close(presence, torch.tensor([3 / 4, 4 / 5], dtype=torch.float64), torch.float64)
    assert_close(absence, torch.tensor([3 / 5, 11 / 15], dtype=torch.float64), torch.float64)
    probabilities = fastmix.minority_sampling_probabilities(HAND_PROBABILITIES, HAND_LABELS)
    expected = (1 / HAND_SCORES) / (1 / HAND_SCORES).sum()
    assert_close(probabilities, expected, torch.float64, "eq. 4")
    assert probabilities.argmax() == 3, "the instance with the least confident labels is the most sampled"



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,classes", [(1, 3), (9, 4), (40, 7)])
def test_sampling_probabilities_match_the_reference(dtype, rows, classes):
    """The production sampler distribution (eq. 2-4) against the reference oracle, with classes that no instance
    carries (empty presence sets) or that every instance carries (empty absence sets); it sums to 1 and is
    proportional to 1/Score, with Score summed label by label as eq. 3 writes it."""
    g = torch.Generator().manual_seed(rows)
    probabilities = torch.rand(rows, classes, generator=g, dtype=torch.float64).to(dtype)
    labels = (torch.rand(rows, classes, generator=g) < 0.4).to(dtype)
    labels[:, 0], labels[:, -1] = 0.0, 1.0
    got = fastmix.minority_sampling_probabilities(probabilities, labels)
    assert got.dtype == torch.float64 and got.shape == (rows,)
    assert_close(got, reference.sampling_probabilities(probabilities, labels), torch.float64)
    assert_close(got.sum(), torch.tensor(1.0, dtype=torch.float64), torch.float64)
    p, y = probabilities.double().tolist(), labels.tolist()
    scores = []
    for row in range(rows):
        score = 0.0
        for k in range(classes):
            peers = [i for i in range(rows) if y[i][k] == y[row][k]]
            confidence = [p[i][k] if y[row][k] else 1.0 - p[i][k] for i in peers]
            score += sum(confidence) / len(confidence)
        scores.append(score)
    scaled = got * torch.tensor(scores, dtype=torch.float64)
    assert_close(scaled, scaled[0].expand(rows), torch.float64, "proportional to 1/Score")

@pytest.mark.parametrize("values_are", ["logits", "losses"])
def test_begin_epoch_sets_the_sampler_from_logits_or_losses(values_are):
    logits = torch.logit(HAND_PROBABILITIES.double())
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, HAND_LABELS.double(), reduction="none")
    balancemix = fastmix.BalanceMix(4, 2, warmup_epochs=5)
    assert torch.equal(balancemix.sampler.probabilities, torch.full((4,), 0.25, dtype=torch.float64))
    assert balancemix.begin_epoch(logits if values_are == "logits" else losses, HAND_LABELS, values_are=values_are) is None
    expected = (1 / HAND_SCORES) / (1 / HAND_SCORES).sum()
    assert_close(balancemix.sampler.probabilities, expected, torch.float64)
    assert balancemix.in_warmup and balancemix.clean_probability is None


def test_sampler_draws_by_probability_and_shards_across_ranks():
    probabilities = torch.tensor([0.5, 0.0, 0.3, 0.2], dtype=torch.float64)
    sampler = fastmix.MinoritySampler(4, num_draws=40000, seed=3)
    sampler.set_probabilities(probabilities * 7)  # any positive scale
    drawn = torch.tensor(list(sampler))
    assert len(drawn) == len(sampler) == 40000
    frequencies = torch.bincount(drawn, minlength=4).double() / len(drawn)
    assert frequencies[1] == 0, "a zero-probability instance is never drawn"
    assert torch.allclose(frequencies, probabilities, atol=0.01)  # 4 sigma of a binomial at n = 40000
    assert list(sampler) == drawn.tolist(), "same seed and epoch, same draws"
    sampler.set_epoch(1)
    assert list(sampler) != drawn.tolist()
    ranks = [fastmix.MinoritySampler(4, num_draws=9, num_replicas=2, rank=r, seed=3) for r in range(2)]
    single = fastmix.MinoritySampler(4, num_draws=10, seed=3)
    for sampler in (*ranks, single):
        sampler.set_probabilities(probabilities)
    assert [len(r) for r in ranks] == [5, 5]
    shards = [list(r) for r in ranks]
    assert shards[0] == list(single)[0::2] and shards[1] == list(single)[1::2]


# --- label management (eq. 8-9) ----------------------------------------------------------------------------------

def test_label_management_by_hand():
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    clean_probability = torch.tensor([[0.9, 0.4, 0.2, 0.3, 0.5, 0.75, 0.1]])
    # mean of the two views: 0.1, 0.99, 0.5, 0.02, 0.75 (= tau exactly), 0.0, 0.25 (= 1 - tau exactly)
    views = torch.tensor([[[0.0, 0.98, 0.25, 0.0, 0.75, 0.0, 0.5]], [[0.2, 1.0, 0.75, 0.04, 0.75, 0.0, 0.0]]])
    refined, categories, weights = fastmix.manage_labels(labels, clean_probability, views, tau=0.75)
    # 0: clean (p_G > 0.5) wins over a confident contradiction; 1: to 1; 2: ambiguous; 3: to 0 (already 0);
    # 4: p_G = 0.5 is not clean, mean = tau re-labels (inclusive); 5: clean; 6: mean = 1 - tau re-labels to 0.
    assert refined.tolist() == [[1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]]
    assert categories.tolist() == [[CLEAN, RELABELED, AMBIGUOUS, RELABELED, RELABELED, CLEAN, RELABELED]]
    assert categories.dtype == torch.int8
    assert_close(weights, torch.tensor([[1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 1.0]]), torch.float32)
    refined, categories, weights = fastmix.manage_labels(labels, clean_probability, None, tau=0.75)
    assert torch.equal(refined, labels), "without views nothing is re-labeled"
    assert categories.tolist() == [[CLEAN, AMBIGUOUS, AMBIGUOUS, AMBIGUOUS, AMBIGUOUS, CLEAN, AMBIGUOUS]]
    assert_close(weights, torch.tensor([[1.0, 0.4, 0.2, 0.3, 0.5, 1.0, 0.1]]), torch.float32)



@pytest.mark.parametrize("label_dtype", [torch.float32, torch.float64, torch.uint8])
@pytest.mark.parametrize("rows", [1, 33])
def test_label_management_matches_the_reference(label_dtype, rows):
    """The production label management (eq. 8-10) against the reference oracle, bit for bit: p_G and view means
    on the 0.5, tau and 1 - tau boundaries, tau = 1 and no views."""
    g = torch.Generator().manual_seed(rows)
    labels = (torch.rand(rows, 6, generator=g) < 0.5).to(label_dtype)
    grid = torch.tensor([0.0, 0.2, 0.25, 0.5, 0.75, 0.8, 1.0])
    clean_probability = grid[torch.randint(0, 7, (rows, 6), generator=g)]
    views = grid[torch.randint(0, 7, (2, rows, 6), generator=g)]
    for tau, view_confidences in ((0.75, views), (1.0, views), (0.75, None)):
        got = fastmix.manage_labels(labels, clean_probability, view_confidences, tau=tau)
        mean = None if view_confidences is None else view_confidences.mean(0)
        want = reference.manage_labels(labels.float(), clean_probability, mean, tau)
        for name, a, b in zip(("refined", "categories", "weights"), got, want):
            assert a.dtype == b.dtype and torch.equal(a, b), f"{name}, tau={tau}"

def test_single_positive_threshold():
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    views = torch.tensor([[[0.6, 0.56, 0.44]], [[0.6, 0.56, 0.46]]])  # means 0.6, 0.56, 0.45
    refined, categories, _ = fastmix.manage_labels(labels, torch.full((1, 3), 0.1), views, tau=0.55)
    assert refined.tolist() == [[1.0, 1.0, 0.0]]
    assert categories.tolist() == [[RELABELED, RELABELED, RELABELED]]
    _, categories, _ = fastmix.manage_labels(labels, torch.full((1, 3), 0.1), views)
    assert categories.tolist() == [[AMBIGUOUS] * 3], "tau = 0.975 by default"


# --- mixing (eq. 5) ----------------------------------------------------------------------------------------------

def managed(num_samples=6, classes=3, clean_probability=None):
    balancemix = fastmix.BalanceMix(num_samples, classes, tau=0.75)
    balancemix.begin_epoch()
    balancemix.clean_probability = clean_probability
    return balancemix


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mix_follows_eq_5_and_the_dominant_categories(dtype):
    clean_probability = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.6, 0.6, 0.6],
                                      [0.1, 0.1, 0.1], [0.7, 0.2, 0.9], [0.3, 0.3, 0.3]])
    balancemix = managed(clean_probability=clean_probability)
    x_r = torch.randn(3, 2, 4, 4).to(dtype=dtype, memory_format=torch.channels_last)
    x_m = torch.randn(3, 2, 4, 4).to(dtype=dtype, memory_format=torch.channels_last)
    y_r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    y_m = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    i_r, i_m = torch.tensor([0, 1, 4]), torch.tensor([3, 5, 2])
    views_r = torch.tensor([[0.9, 0.1, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]).expand(2, 3, 3)
    before = [t.clone() for t in (x_r, x_m, y_r, y_m)]
    x_mix, y_mix, state = balancemix.mix((x_r, y_r, i_r, views_r), (x_m, y_m, i_m), generator=seeded("cpu", 1))
    for tensor, copy in zip((x_r, x_m, y_r, y_m), before):
        assert torch.equal(tensor, copy), "the caller's batch was modified"
    lam = state.lam
    assert lam.shape == (3,) and bool(((lam >= 0.5) & (lam <= 1.0)).all())
    expected_x = lam.view(3, 1, 1, 1) * x_r.float() + (1 - lam.view(3, 1, 1, 1)) * x_m.float()
    assert_close(x_mix, expected_x, dtype)
    assert x_mix.dtype == dtype and x_mix.is_contiguous(memory_format=torch.channels_last)
    # random row 0 (index 0): label 0 clean, label 1 (p_G 0.1, mean 0.1 <= 1 - tau) re-labeled 1 -> 0, label 2 ambiguous
    refined_r = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    categories_r = [[CLEAN, RELABELED, AMBIGUOUS], [AMBIGUOUS, CLEAN, AMBIGUOUS], [CLEAN, AMBIGUOUS, CLEAN]]
    assert state.categories.tolist() == categories_r
    assert_close(state.label_weights, torch.tensor([[1.0, 1.0, 0.3], [0.2, 1.0, 0.4], [1.0, 0.2, 1.0]]), torch.float32)
    assert_close(y_mix, lam[:, None] * refined_r + (1 - lam[:, None]) * y_m, torch.float32)
    again = balancemix.mix((x_r, y_r, i_r, views_r), (x_m, y_m, i_m), generator=seeded("cpu", 1))
    assert torch.equal(again[0], x_mix) and torch.equal(again[2].lam, lam)


def test_mixing_ratio_is_the_folded_beta():
    """lam = max(l0, 1 - l0) with l0 ~ Beta(4, 4): compare its law with torch.distributions' Beta sampler."""
    lam = methods.draw_mixing_ratios(40000, 4.0, "cpu", dtype=torch.float64, generator=seeded("cpu"))
    torch.manual_seed(0)
    l0 = torch.distributions.Beta(4.0, 4.0).sample((40000,)).double()
    folded = torch.maximum(l0, 1 - l0)
    assert bool((lam >= 0.5).all()) and bool((lam <= 1).all())
    for q in (0.1, 0.5, 0.9):  # quantiles within 0.01 (their standard error here is ~0.001)
        assert abs(torch.quantile(lam, q) - torch.quantile(folded, q)) < 0.01
    assert abs(lam.mean() - folded.mean()) < 0.005


def test_warmup_mixes_given_labels_and_uses_plain_bce():
    balancemix = fastmix.BalanceMix(4, 2, warmup_epochs=1)
    balancemix.begin_epoch()
    x = torch.randn(2, 5)
    y_r, y_m = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x_mix, y_mix, state = balancemix.mix((x, y_r, torch.tensor([0, 1])), (x.flip(0), y_m, torch.tensor([2, 3])))
    assert state.categories is None and state.label_weights is None
    assert_close(y_mix, state.lam[:, None] * y_r + (1 - state.lam[:, None]) * y_m, torch.float32)
    logits = torch.randn(2, 2)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_mix, reduction="sum") / 2
    assert_close(balancemix.loss(logits, y_mix, state), plain, torch.float32)


# --- GMM fit through begin_epoch (eq. 6-8) -----------------------------------------------------------------------

def test_begin_epoch_fits_one_gmm_per_class_and_label():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(400, 3, generator=generator) < 0.4).float()
    corrupted = torch.rand(400, 3, generator=generator) < 0.2
    # clean labels get small losses, corrupted ones large losses (the memorisation effect the GMM relies on)
    losses = torch.where(corrupted, 2.0 + 0.3 * torch.rand(400, 3, generator=generator),
                         0.1 * torch.rand(400, 3, generator=generator))
    balancemix = fastmix.BalanceMix(400, 3)
    fit = balancemix.begin_epoch(losses, labels, values_are="losses")
    assert fit is balancemix.gmm_fit and fit.weights.shape == (6, 2)
    expected = fastmix.gmm_posterior(losses, fastmix.label_groups(labels), fit)
    assert_close(balancemix.clean_probability, expected, torch.float32)
    assert torch.equal(balancemix.clean_probability > 0.5, ~corrupted), "p_G > 0.5 exactly on the clean labels"


# --- loss (eq. 10) -----------------------------------------------------------------------------------------------

def eq_10_by_hand(logits, targets, weights):
    """The loss written out from eq. 10 in float64: -(1/B) sum w (t log s + (1 - t) log(1 - s))."""
    z, t = logits.double(), targets.double()
    s = 1 / (1 + torch.exp(-z))
    bce = -(t * torch.log(s) + (1 - t) * torch.log(1 - s))
    return (bce * (1 if weights is None else weights.double())).sum() / z.size(0)


def loss_inputs(batch, classes, dtype, device, seed=0, layout="contiguous"):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes + 3, generator=generator)
    logits = logits[:, 1:classes + 1] if layout == "sliced" else logits[:, :classes].contiguous()
    if layout == "transposed":
        logits = logits.t().contiguous().t()
    targets = torch.rand(batch, classes, generator=generator)
    weights = torch.where(torch.rand(batch, classes, generator=generator) < 0.5, 1.0,
                          torch.rand(batch, classes, generator=generator))
    return logits.to(device=device, dtype=dtype), targets.to(device), weights.to(device)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
@pytest.mark.parametrize("weighted", [True, False])
def test_loss_is_eq_10(backend, device, weighted):
    logits, targets, weights = loss_inputs(5, 7, torch.float64, device)
    weights = weights if weighted else None
    got = fastmix.balancemix_loss(logits, targets, weights, backend=backend)
    assert got.dtype == torch.float64 and got.shape == ()
    assert_close(got, eq_10_by_hand(logits, targets, weights), torch.float64)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("batch,classes", [(1, 1), (3, 5), (9, 41), (130, 20)])
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
def test_loss_parity_with_reference(backend, device, dtype, batch, classes, layout):
    logits, targets, weights = loss_inputs(batch, classes, dtype, device, layout=layout)
    logits.requires_grad_()
    before = logits.detach().clone()
    got = fastmix.balancemix_loss(logits, targets, weights, backend=backend)
    (grad,) = torch.autograd.grad(got, logits)
    reference_logits = logits.detach().clone().requires_grad_()
    want = reference.balancemix_loss(reference_logits, targets, weights)
    (want_grad,) = torch.autograd.grad(want, reference_logits)
    assert got.dtype == torch.float32
    assert_close(got, want, torch.float32, "loss")
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close(grad, want_grad, dtype, "grad")
    assert torch.equal(logits.detach(), before)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
def test_gradcheck_float64(backend, device):
    logits, targets, weights = loss_inputs(3, 4, torch.float64, device, layout="sliced")
    inputs = (logits.requires_grad_(), targets.double().requires_grad_(), weights.double().requires_grad_())
    assert torch.autograd.gradcheck(lambda z, t, w: fastmix.balancemix_loss(z, t, w, backend=backend), inputs)
    assert torch.autograd.gradcheck(lambda z, t: fastmix.balancemix_loss(z, t, backend=backend), inputs[:2])


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
def test_create_graph_gives_the_first_order_gradient_and_refuses_a_second(backend, device):
    """With create_graph=True the backward runs recorded (once_differentiable): the same d loss / d logits, scaled by
    the upstream gradient, and differentiating that backward again raises instead of giving a partial answer (the
    forward-written gradient has no graph to the logits)."""
    logits, targets, weights = (t.double() for t in loss_inputs(4, 6, torch.float32, device))
    logits.requires_grad_()
    upstream = torch.tensor(-1.5, dtype=torch.float64, device=device, requires_grad=True)
    (want,) = torch.autograd.grad(eq_10_by_hand(logits, targets, weights), logits)
    (grad,) = torch.autograd.grad(fastmix.balancemix_loss(logits, targets, weights, backend=backend), logits,
                                  upstream, create_graph=True)
    assert_close(grad, -1.5 * want, torch.float64)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_cpu_launch_checks_the_labels_when_the_op_checks_are_skipped():
    """The API's eager call skips the op's own argument checks; the launch still refuses labels of the wrong dtype or
    size before the kernel reads them."""
    logits, targets, weights = loss_inputs(4, 3, torch.float32, "cpu")
    loss_and_grad = balancemix_ops._loss_and_grad
    with pytest.raises(ValueError, match="argument 1 must hold 12 elements, got 9"):
        loss_and_grad(logits, targets[:3], weights, "cpu", True)
    with pytest.raises(ValueError, match="argument 2 must hold 12 elements, got 8"):
        loss_and_grad(logits, targets, weights[:, :2], "cpu", True)
    with pytest.raises(TypeError, match="argument 1 must be torch.float32, got torch.float64"):
        loss_and_grad(logits, targets.double(), None, "cpu", False)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
def test_opcheck(backend, device, layout):
    """The op on dense, column-sliced and column-major logits, with transposed targets and sliced weights, with and
    without the gradient output (float targets needing a gradient too)."""
    logits, targets, weights = loss_inputs(6, 5, torch.float32, device, layout=layout)
    if layout != "contiguous":
        targets, weights = targets.t().contiguous().t(), torch.cat([weights, weights], 1)[:, 2:7]
    for label_weights in (weights, None):
        torch.library.opcheck(balancemix_ops.balancemix_loss,
                              (logits.requires_grad_(), targets, label_weights, backend, True))
        torch.library.opcheck(balancemix_ops.balancemix_loss,
                              (logits.detach(), targets.requires_grad_(), label_weights, backend, False))
        targets = targets.detach()


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
def test_gradient_comes_from_the_forward_and_scales_with_grad_out(backend, device):
    """The op's gradient output is eq. 10's d loss / d logits; the backward scales it by the upstream gradient, and a
    call without it (needs_grad=False) returns none and refuses a logits backward."""
    logits, targets, weights = (t.double() for t in loss_inputs(5, 7, torch.float32, device))
    logits.requires_grad_()
    (want,) = torch.autograd.grad(eq_10_by_hand(logits, targets, weights), logits)
    loss, grad = balancemix_ops.balancemix_loss(logits, targets, weights, backend, True)
    assert_close(grad, want, torch.float64)
    (scaled,) = torch.autograd.grad(loss, logits, torch.tensor(-2.5, dtype=torch.float64, device=device))
    assert_close(scaled, -2.5 * want, torch.float64)
    loss, grad = balancemix_ops.balancemix_loss(logits, targets, weights, backend, False)
    assert grad.numel() == 0
    with pytest.raises(RuntimeError, match="needs_grad=False"):
        torch.autograd.grad(loss, logits)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
@pytest.mark.parametrize("batch,classes", [(0, 4), (3, 0), (0, 0)])
def test_empty_batch_or_classes_launch_nothing(backend, device, batch, classes):
    """B K = 0: the loss is 0 (a sum over no labels, not 0/0), the gradient empty."""
    logits = torch.randn(batch, classes, device=device, requires_grad=True)
    targets = torch.rand(batch, classes, device=device)
    loss, _ = balancemix_ops.balancemix_loss(logits, targets, targets, backend, True)
    assert torch.equal(loss, torch.zeros((), device=device))
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.shape == (batch, classes)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
def test_ops_check_their_arguments(backend, device):
    logits, targets, weights = loss_inputs(4, 3, torch.float32, device)
    with pytest.raises(ValueError, match="targets must be torch.float32"):
        balancemix_ops.balancemix_loss(logits, targets.double(), weights, backend, True)
    with pytest.raises(ValueError, match="weights must be torch.float32"):
        balancemix_ops.balancemix_loss(logits, targets, weights[:3], backend, True)


def test_float64_gradient_with_the_gpu_scalar_semantics(gpu_float_arguments):
    """The backward divides by the integer B in the kernel: no fp32-rounded 1/B reaches an fp64 gradient on a GPU."""
    reason = _backend.unavailable_reason("triton", "cpu")
    if reason:
        pytest.skip(reason)
    logits, targets, weights = (t.double() for t in loss_inputs(7, 5, torch.float32, "cpu"))
    logits.requires_grad_()
    (got,) = torch.autograd.grad(fastmix.balancemix_loss(logits, targets, weights, backend="triton"), logits)
    (want,) = torch.autograd.grad(eq_10_by_hand(logits, targets, weights), logits)
    assert_close(got, want, torch.float64)


def test_cpu_kernels_split_rows_across_threads():
    """B K above the kernels' threshold for OpenMP (2^16 logits): the rows run on several threads, same values."""
    if _backend.unavailable_reason("cpu", "cpu"):
        pytest.skip(_backend.unavailable_reason("cpu", "cpu"))
    logits, targets, weights = loss_inputs(70, 1003, torch.float32, "cpu")
    logits.requires_grad_()
    loss = fastmix.balancemix_loss(logits, targets, weights, backend="cpu")
    (grad,) = torch.autograd.grad(loss, logits)
    want = eq_10_by_hand(logits, targets, weights)
    (want_grad,) = torch.autograd.grad(want, logits)
    assert_close(loss, want, torch.float32)
    assert_close(grad, want_grad, torch.float32)


@pytest.mark.parametrize("backend", ["cuda", "fast"])
def test_balancemix_checks_the_backend_at_construction(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        methods.BalanceMix(8, 3, backend=backend)


@pytest.mark.parametrize("backend,device", LOSS_BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    torch._dynamo.reset()

    def step(logits, targets, weights):
        return fastmix.balancemix_loss(logits * 2, targets, weights, backend=backend)

    logits, targets, weights = loss_inputs(4, 6, torch.float32, device)
    compiled = compile_fullgraph(step, device)
    results = []
    for fn in (compiled, step):
        leaf = logits.clone().requires_grad_()
        loss = fn(leaf, targets, weights)
        loss.backward()
        results.append((loss, leaf.grad))
    assert_close(results[0][0], results[1][0], torch.float32)
    assert_close(results[0][1], results[1][1], torch.float32)


# --- bad input ---------------------------------------------------------------------------------------------------

def bad_mix(balancemix, **change):
    batch = {"x": torch.randn(2, 3), "y": torch.ones(2, 2), "i": torch.tensor([0, 1])}
    batch.update(change)
    return balancemix.mix((batch["x"], batch["y"], batch["i"]), (torch.randn(2, 3), torch.zeros(2, 2), batch["i"]))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: fastmix.BalanceMix(4, 2, tau=0.5), ValueError, r"tau must be in \(0.5, 1\]"),
        (lambda: fastmix.BalanceMix(4, 2, tau=1.01), ValueError, "tau must be in"),
        (lambda: fastmix.BalanceMix(4, 2, tau="high"), TypeError, "tau must be a real number"),
        (lambda: fastmix.manage_labels(torch.ones(1, 2), torch.ones(1, 2), tau=0.3), ValueError, "tau must be in"),
        (lambda: fastmix.BalanceMix(4, 2, alpha=0.0), ValueError, "alpha must be"),
        (lambda: fastmix.BalanceMix(4, 2, alpha=-1.0), ValueError, "alpha must be"),
        (lambda: fastmix.BalanceMix(4, 0), ValueError, "num_classes must be"),
        (lambda: fastmix.BalanceMix(4, 2, warmup_epochs=-1), ValueError, "warmup_epochs must be"),
        (lambda: fastmix.MinoritySampler(0), ValueError, "num_samples must be"),
        (lambda: fastmix.MinoritySampler(4, num_replicas=2, rank=2), ValueError, "rank must be"),
        (lambda: fastmix.MinoritySampler(4).set_probabilities(torch.ones(3)), ValueError, r"shape \(4,\)"),
        (lambda: fastmix.MinoritySampler(2).set_probabilities(torch.tensor([1.0, -1.0])), ValueError, "non-negative"),
        (lambda: fastmix.minority_sampling_probabilities(torch.rand(4, 2), torch.ones(4, 3)), ValueError,
         r"labels must have shape \(4, 2\)"),
        (lambda: fastmix.minority_sampling_probabilities(torch.rand(4, 2), torch.full((4, 2), 0.5)), ValueError,
         "multi-hot"),
        (lambda: fastmix.minority_sampling_probabilities(torch.tensor([[0.5, math.nan]]), torch.ones(1, 2)),
         ValueError, r"probabilities must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.minority_sampling_probabilities(torch.tensor([[0.5, 1.5]]), torch.ones(1, 2)), ValueError,
         r"probabilities must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.manage_labels(torch.ones(2, 3), torch.ones(2, 2)), ValueError, "clean_probability must have"),
        (lambda: fastmix.manage_labels(torch.ones(1, 2), torch.tensor([[0.2, math.nan]])), ValueError,
         r"clean_probability must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.manage_labels(torch.ones(1, 2), torch.tensor([[0.2, -0.1]])), ValueError,
         r"clean_probability must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.manage_labels(torch.ones(1, 2), torch.ones(1, 2), torch.full((2, 1, 2), 1.2)), ValueError,
         r"view_confidences must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.manage_labels(torch.ones(1, 2), torch.ones(1, 2), torch.full((2, 1, 2), math.nan)),
         ValueError, r"view_confidences must hold probabilities in \[0, 1\]"),
        (lambda: fastmix.manage_labels(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)), ValueError,
         r"view_confidences must have shape \(V, 2, 3\)"),
        (lambda: fastmix.balancemix_loss(torch.randn(3, 4), torch.rand(3, 5)), ValueError, "targets must have shape"),
        (lambda: fastmix.balancemix_loss(torch.randn(3, 4), torch.rand(3, 4), torch.rand(4, 4)), ValueError,
         "label_weights must have shape"),
        (lambda: fastmix.balancemix_loss(torch.randn(3), torch.rand(3)), ValueError, r"logits must have shape \(N, K\)"),
        (lambda: fastmix.balancemix_loss(torch.ones(3, 4, dtype=torch.long), torch.rand(3, 4)), TypeError,
         "logits must be a floating-point"),
        (lambda: fastmix.balancemix_loss(torch.randn(3, 4), torch.rand(3, 4), backend="fast"), ValueError,
         "backend must be"),
        (lambda: fastmix.BalanceMix(4, 2).begin_epoch(torch.randn(4, 3), torch.ones(4, 3)), ValueError,
         r"values must have shape \(4, 2\)"),
        (lambda: fastmix.BalanceMix(4, 2).begin_epoch(torch.randn(4, 2), torch.ones(4, 2), values_are="probs"),
         ValueError, "values_are must be"),
        (lambda: fastmix.BalanceMix(4, 2).begin_epoch(-torch.rand(4, 2), torch.ones(4, 2), values_are="losses"),
         ValueError, "non-negative BCE losses"),
        (lambda: bad_mix(managed(4, 2, torch.ones(4, 2)), y=torch.ones(2, 3)), ValueError,
         r"batch_random\[1\] must have shape \(2, 2\)"),
        (lambda: bad_mix(managed(4, 2, torch.ones(4, 2)), x=torch.randn(3, 3)), ValueError,
         r"batch_random\[1\] must have shape \(3, 2\)"),
        (lambda: bad_mix(managed(4, 2, torch.ones(4, 2)), i=torch.tensor([0.0, 1.0])), ValueError,
         "integer data set indices"),
        (lambda: bad_mix(managed(4, 2, None)), RuntimeError, "no GMM fit yet"),
        (lambda: managed(4, 2, torch.ones(4, 2)).mix((torch.randn(2, 3),), None), TypeError, "batch_random must be"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_minority_batch_shape():
    balancemix = managed(4, 2, torch.ones(4, 2))
    labels, indices = torch.ones(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"batch_minority\[0\] must match batch_random\[0\]"):
        balancemix.mix((torch.randn(2, 3), labels, indices), (torch.randn(2, 4), labels, indices))


# --- the example -------------------------------------------------------------------------------------------------

def test_example_runs_quick_on_a_tiny_subset():
    pytest.importorskip("sklearn")
    from fastmix.examples import balancemix as example

    report = example.main(["--quick", "--train-size", "96", "--test-size", "48", "--epochs", "2", "--warmup", "1",
                           "--batch-size", "32"])
    assert 0.0 <= report["gmm_auroc"] <= 1.0 and not math.isnan(report["gmm_auroc"])
    for name in ("map_balancemix", "map_bce"):
        assert 0.0 <= report[name] <= 1.0
