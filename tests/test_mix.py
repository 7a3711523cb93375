"""Per-sample Mixup/CutMix (CutMix: LUMix paper, eq. 1-2): parity with the reference, kept-area lambda, uint8,
timm's box rule, autograd (any partner map), custom ops, compile, the CUDA body on the CPU grid, bad input."""

import itertools
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats

import fastmix
from fastmix import _backend, _layout, _native, _random
from fastmix._dtypes import compute_dtype
from fastmix.api import mix as mix_api
from fastmix.ops import mix as mix_ops
from fastmix.reference import mix as reference
from test_pointers import CudaKernelsOnCpu
from helpers import (FLOAT_DTYPES, LABEL_KINDS, LAYOUTS, SAMPLERS, assert_close, assert_compiled_matches_eager,
                     assert_rejected_untouched, backend_params, make_batch, make_labels, seeded, with_cpu_kernel)

BATCHES = (1, 2, 3, 7, 64)
DTYPES = (*FLOAT_DTYPES, torch.uint8)
IMAGE_LAYOUTS = ("nchw", "channels_last", "channel_slice", "spatial_slice", "nhwc")


BACKENDS = with_cpu_kernel(backend_params())


def dtype_layouts(layouts):
    """Every layout in fp32 and uint8; fp16/bf16 (same index math, other conversions) in the two image formats."""
    return [(dtype, layout) for dtype in DTYPES for layout in layouts
            if dtype in (torch.float32, torch.uint8) or layout in ("nchw", "channels_last")]


def make_input(kind, batch, dtype, device, seed=0):
    """``make_batch`` layouts plus (B, H, W, C); uint8 batches span [0, 255] (and saturate at the ends)."""
    if kind == "nhwc":
        x = make_batch("nchw", batch, torch.float32, "cpu", seed).permute(0, 2, 3, 1).contiguous()
        x = x.to(memory_format=torch.contiguous_format)
    else:
        x = make_batch(kind, batch, torch.float32, "cpu", seed)
    if dtype == torch.uint8:
        return (x * 60 + 128).clamp(0, 255).round().to(torch.uint8).to(device)
    return x.to(device=device, dtype=dtype)


def expected_labels(y, lam, partner, classes, smoothing=0.0):
    dense = torch.nn.functional.one_hot(y, classes).float() if not y.is_floating_point() else y.float()
    dense = dense * (1 - smoothing) + smoothing / classes
    return lam[:, None] * dense + (1 - lam[:, None]) * dense[partner]


def assert_mixed_close(actual, expected, dtype, msg=""):
    if dtype == torch.uint8:
        assert actual.dtype == torch.uint8 and torch.equal(actual, expected), msg
    else:
        assert_close(actual, expected, dtype, msg)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,layout", dtype_layouts(LAYOUTS))
@pytest.mark.parametrize("batch", BATCHES)
def test_mixup_parity_with_reference(backend, device, dtype, batch, layout):
    x = make_input(layout, batch, dtype, device)
    y = make_labels("int", batch, 10, device)
    x_before = x.clone()
    x_mixed, y_mixed, params = fastmix.mixup(x, y, num_classes=10, generator=seeded(device), backend=backend)
    assert params.lam.dtype == torch.float32 and params.lam.shape == (batch,)
    assert params.partner.dtype == torch.int64 and torch.equal(params.partner.sort().values.cpu(), torch.arange(batch))
    assert_mixed_close(x_mixed, reference.mixup_pairs(x, params.lam, params.partner), dtype, "x_mixed")
    assert x_mixed.dtype == dtype and x_mixed.shape == x.shape
    if layout == "channels_last":
        assert x_mixed.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x_before), "the caller's x was modified"
    assert_close(y_mixed, expected_labels(y, params.lam, params.partner, 10), torch.float32, "y_mixed")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,layout", dtype_layouts(IMAGE_LAYOUTS))
@pytest.mark.parametrize("batch", BATCHES)
def test_cutmix_parity_with_reference(backend, device, dtype, batch, layout):
    x = make_input(layout, batch, dtype, device)
    y = make_labels("int", batch, 10, device)
    x_before = x.clone()
    data_layout = "NHWC" if layout == "nhwc" else "NCHW"
    x_mixed, y_mixed, params = fastmix.cutmix(x, y, num_classes=10, layout=data_layout, generator=seeded(device),
                                              backend=backend)
    height_dim, width_dim = mix_api.LAYOUTS[data_layout]
    expected = reference.cutmix_pairs(x, params.boxes, params.partner, height_dim, width_dim)
    assert torch.equal(x_mixed, expected), "CutMix copies elements exactly"
    assert torch.equal(x, x_before), "the caller's x was modified"
    if layout == "channels_last":
        assert x_mixed.is_contiguous(memory_format=torch.channels_last)
    assert_close(y_mixed, expected_labels(y, params.lam, params.partner, 10), torch.float32, "y_mixed")


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_kinds_and_smoothing(backend, device, label_kind, smoothing):
    x = make_input("nchw", 9, torch.float32, device)
    y = make_labels(label_kind, 9, 6, device)
    y_before = y.clone()
    for fn in (fastmix.mixup, fastmix.cutmix):
        _, y_mixed, params = fn(x, y, num_classes=6, label_smoothing=smoothing, generator=seeded(device),
                                backend=backend)
        assert y_mixed.dtype == torch.float32 and y_mixed.shape == (9, 6)
        assert_close(y_mixed, expected_labels(y, params.lam, params.partner, 6, smoothing), torch.float32)
        if label_kind != "multi_hot":  # probability rows stay probability rows
            assert_close(y_mixed.sum(1), torch.ones(9, device=device), torch.float32)
    assert torch.equal(y, y_before)


def test_int_label_smoothing_is_timms_on_off_values():
    """timm: off = s / K, on = 1 - s + off; with lam = 1 (B=1) the target is the smoothed one-hot itself."""
    x = torch.zeros(1, 3, 4, 4)
    _, y_mixed, _ = fastmix.mixup(x, torch.tensor([2]), num_classes=5, label_smoothing=0.1)
    off = 0.1 / 5
    assert_close(y_mixed, torch.tensor([[off, off, 1 - 0.1 + off, off, off]]), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("minmax", [None, (0.2, 0.8), (0.5, 1.0)])
@pytest.mark.parametrize("per_sample", [True, False])
def test_kept_area_lambda_is_the_mask_pixel_count(backend, device, minmax, per_sample):
    """CutMix eq. 2 with correct_lam: lam_i = the fraction of sample i's own pixels in its output."""
    batch, height, width = 64, 12, 10
    x = (torch.arange(batch, dtype=torch.float32) + 1).view(batch, 1, 1, 1).expand(batch, 2, height, width)
    x = x.contiguous().to(device)
    x_mixed, _, params = fastmix.cutmix(x, torch.zeros(batch, 3, device=device), alpha=0.7, minmax=minmax,
                                        per_sample=per_sample, pairing="flip", generator=seeded(device, 7),
                                        backend=backend)
    own = (x_mixed == x).all(dim=1).float()
    partner_pixels = (x_mixed == x[params.partner]).all(dim=1)
    assert torch.equal(own.bool() | partner_pixels, torch.ones_like(partner_pixels)), "every pixel from one of the two"
    assert torch.equal(params.lam.cpu(), own.mean(dim=(1, 2)).cpu())
    mask = reference.box_mask(params.boxes, height, width)
    assert torch.equal(mask, partner_pixels)
    boxes = params.boxes.cpu()
    assert ((boxes[:, 0] >= 0) & (boxes[:, 1] <= height) & (boxes[:, 2] >= 0) & (boxes[:, 3] <= width)).all()
    if per_sample and minmax is None:  # the draws include boxes clipped by every border
        for touches in (boxes[:, 0] == 0, boxes[:, 1] == height, boxes[:, 2] == 0, boxes[:, 3] == width):
            assert touches.any()
    if not per_sample:
        assert (boxes == boxes[0]).all() and (params.lam == params.lam[0]).all()


def timm_rand_bbox(height, width, lam, centre_y, centre_x):
    """timm 1.0.31 ``rand_bbox`` for a given centre: sides int(side * sqrt(1 - lam)),
    clip(c - cut // 2, 0, side) and clip(c + (cut + 1) // 2, 0, side)."""
    ratio = (1 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    clip = lambda v, side: min(max(v, 0), side)  # noqa: E731
    return (clip(centre_y - cut_h // 2, height), clip(centre_y + (cut_h + 1) // 2, height),
            clip(centre_x - cut_w // 2, width), clip(centre_x + (cut_w + 1) // 2, width))


def test_boxes_follow_timms_rand_bbox():
    """Every sampled box is timm's box for its lam and some pixel centre, and lam is 1 - area / (H W)."""
    height, width = 12, 10
    lam = _random.sample_beta(1.0, 200, "cpu", seeded("cpu", 3))
    boxes = mix_api.sample_boxes(lam, height, width, None, seeded("cpu", 4))
    centres_seen = set()
    for value, box in zip(lam.tolist(), boxes.tolist()):
        matches = [(cy, cx) for cy in range(height) for cx in range(width)
                   if timm_rand_bbox(height, width, value, cy, cx) == tuple(box)]
        assert matches, f"box {box} is not timm's box for lam={value}"
        centres_seen.update(matches)
    assert len(centres_seen) > height * width // 2, "centres spread over the image"
    kept = mix_api.kept_fraction(boxes, height, width)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    assert torch.equal(kept, (1 - area.double() / (height * width)).float())


def test_minmax_boxes_are_timms():
    """timm rand_bbox_minmax: sides uniform in [int(S lo), int(S hi) - 1], drawn independently, box inside."""
    height, width, lo, hi = 20, 16, 0.2, 0.8
    boxes = mix_api.sample_boxes(torch.zeros(4000), height, width, (lo, hi), seeded("cpu", 5))
    cut_h, cut_w = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    assert set(cut_h.tolist()) == set(range(int(height * lo), int(height * hi)))
    assert set(cut_w.tolist()) == set(range(int(width * lo), int(width * hi)))
    assert (cut_h != cut_w * height // width).any(), "rectangular: sides drawn independently"
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= height).all() and (boxes[:, 3] <= width).all()
    assert (boxes[:, 1] == height).any() and (boxes[:, 0] == 0).any(), "every origin, the last one included"


@pytest.mark.parametrize("backend,device", SAMPLERS)
@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_is_beta_distributed(backend, device, alpha):
    """Full size on "cpu" and the reference; fewer draws on Triton, whose draws are the C++ twin's (the parity test
    below) and whose Beta sampler tests/test_random.py tests on its own."""
    count = 500 if backend == "triton" else 2000
    lam = fastmix.mixup(torch.zeros(count, 1, device=device), torch.zeros(count, 2, device=device), alpha=alpha,
                        pairing="flip", generator=seeded(device), backend=backend)[2].lam.double().cpu()
    assert ((lam >= 0) & (lam <= 1)).all()
    assert stats.kstest(lam.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    variance = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lam.mean().item() - 0.5) < 4 * (variance / count) ** 0.5


@pytest.mark.parametrize("backend,device", SAMPLERS)
def test_drawn_boxes_are_timms_for_the_drawn_lambda(backend, device):
    """Every box CutMix draws (correct_lam=False keeps lam the Beta draw) is timm's box for its lam and some pixel
    centre, on both samplers; the centres spread over the image."""
    height, width, count = 12, 10, 300
    _, _, params = fastmix.cutmix(torch.zeros(count, 1, height, width, device=device),
                                  torch.zeros(count, 2, device=device), correct_lam=False, pairing="flip",
                                  generator=seeded(device, 3), backend=backend)
    centres_seen = set()
    for value, box in zip(params.lam.tolist(), params.boxes.tolist()):
        matches = [(cy, cx) for cy in range(height) for cx in range(width)
                   if timm_rand_bbox(height, width, value, cy, cx) == tuple(box)]
        assert matches, f"box {box} is not timm's box for lam={value}"
        centres_seen.update(matches)
    assert len(centres_seen) > height * width // 2, "centres spread over the image"


@pytest.mark.parametrize("backend,device", SAMPLERS)
def test_drawn_minmax_boxes_are_timms(backend, device):
    height, width, lo, hi = 20, 16, 0.2, 0.8
    count = 250 if backend == "triton" else 1000  # Triton's draws are its C++ twin's (the parity test below)
    _, _, params = fastmix.cutmix(torch.zeros(count, 1, height, width, device=device),
                                  torch.zeros(count, 2, device=device), minmax=(lo, hi), pairing="flip",
                                  generator=seeded(device, 5), backend=backend)
    boxes = params.boxes.cpu()
    cut_h, cut_w = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    assert set(cut_h.tolist()) == set(range(int(height * lo), int(height * hi)))
    assert set(cut_w.tolist()) == set(range(int(width * lo), int(width * hi)))
    assert stats.chisquare(torch.bincount(cut_h)[int(height * lo):].numpy()).pvalue > 1e-3, "uniform sides"
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= height).all() and (boxes[:, 3] <= width).all()
    assert (boxes[:, 1] == height).any() and (boxes[:, 0] == 0).any(), "every origin, the last one included"
    assert_close(params.lam, 1 - reference.box_mask(params.boxes, height, width).float().mean(dim=(1, 2)),
                 torch.float32, "minmax always corrects lam")


@pytest.mark.parametrize("backend,device", SAMPLERS)
def test_random_partners_are_permutations_drawn_afresh(backend, device):
    """Every call draws a new permutation; over 60 calls all 6 of 3 samples appear (the kernel sampler's
    uniformity is tested on its own in tests/test_random.py)."""
    x, y = torch.zeros(3, 1, device=device), torch.zeros(3, 2, device=device)
    generator = seeded(device, 9)
    seen = {tuple(fastmix.mixup(x, y, generator=generator, backend=backend)[2].partner.tolist()) for _ in range(60)}
    assert seen == set(itertools.permutations(range(3)))


@pytest.mark.parametrize("backend,device", with_cpu_kernel([]))
def test_random_partners_are_uniform_permutations(backend, device):
    """The C++ twin's permutations of 3 samples are uniform (chi-square over 1200 calls); its ranks are the Triton
    kernel's (the parity test below), whose permutations tests/test_random.py tests on its own."""
    x, y = torch.zeros(3, 1, device=device), torch.zeros(3, 2, device=device)
    generator = seeded(device, 10)
    counts = {permutation: 0 for permutation in itertools.permutations(range(3))}
    for _ in range(1200):
        counts[tuple(fastmix.mixup(x, y, generator=generator, backend=backend)[2].partner.tolist())] += 1
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


@pytest.mark.parametrize("backend,device", SAMPLERS)
def test_class_indices_out_of_range_raise(backend, device):
    x = torch.zeros(4, 3, 4, 4, device=device)
    for y in (torch.tensor([0, 1, 5, 2], device=device), torch.tensor([0, -1, 2, 2], device=device)):
        for fn in (fastmix.mixup, fastmix.cutmix):
            with pytest.raises(ValueError, match=r"class indices outside \[0, 5\)"):
                fn(x, y, num_classes=5, backend=backend)


# (draws, permute, mixup_alpha, cutmix_alpha, mix_prob, box_range, labels): every branch of the parameter kernel.
PARAMETER_CASES = [("elem", True, 1.0, 0.0, 1.0, None, "index"), ("batch", False, 0.0, 1.0, 1.0, None, "soft64"),
                   ("pair", False, 0.8, 1.0, 0.6, None, "multi-hot"), ("elem", True, 0.2, 0.3, 0.7, None, "index"),
                   ("half", False, 0.8, 1.0, 1.0, None, "none"), ("elem", False, 0.0, 1.0, 0.8, [2, 5, 3, 4], "soft64"),
                   ("pair", True, 0.8, 1.0, 1.0, [1, 6, 4, 2], "index")]


@pytest.mark.skipif(bool(_backend.unavailable_reason("triton", "cpu") or _backend.unavailable_reason("cpu", "cpu")),
                    reason="compares the C++ parameter call with the Triton kernel under its interpreter")
@pytest.mark.parametrize("case", PARAMETER_CASES, ids=lambda case: "-".join(map(str, case[:3] + case[-1:])))
def test_cpu_parameters_are_the_parameter_kernels(case):
    """For the same seed the C++ parameter call ("cpu") draws what the Triton kernel draws: partners, inverses,
    boxes and CutMix flags exactly, lam, weights and mixed labels within their dtype's tolerance (the two differ
    only in the math library's last bits)."""
    draws, permute, mixup_alpha, cutmix_alpha, mix_prob, box_range, label_kind = case
    batch, classes, height, width = 37, 6, 9, 13
    labels = {"index": torch.randint(0, classes, (batch,), generator=seeded("cpu", 1)),
              "soft64": make_labels("soft", batch, classes, "cpu").double(),
              "multi-hot": make_labels("soft", batch, classes, "cpu") > 0.3, "none": None}[label_kind]
    for seed in range(3):
        arguments = (_random.draw_seed(seeded("cpu", seed), "cpu"), labels, classes, 0.1, label_kind == "multi-hot",
                     batch, height, width, draws, permute, mixup_alpha, cutmix_alpha, mix_prob, 0.5, box_range,
                     seed != 1, torch.float64 if seed == 2 else torch.float32)
        kernel = mix_ops.mix_params(*arguments, "triton")
        cpu = mix_ops.mix_params(*arguments, "cpu")
        for name, expected, actual in zip(("lam", "weight", "boxes", "partner", "inverse", "cutmix", "labels"),
                                          kernel, cpu):
            assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
            if expected.is_floating_point():
                assert_close(actual, expected, expected.dtype, f"{name}, seed {seed}")
            else:
                assert torch.equal(actual, expected), f"{name}, seed {seed}"
        assert kernel[5].any() == (cutmix_alpha > 0), "the cases draw CutMix boxes where they can"
    if draws == "elem" and label_kind == "index":
        torch.library.opcheck(mix_ops.mix_params, arguments + ("cpu",))


def with_cpu_isas(params):
    """``params`` with the "cpu" backend once per instruction set its uint8 lerp can run with on this CPU."""
    isas = _native._C.gmm2_cpu_isas() if _native._C is not None else []
    return [pytest.param(*p.values, None, id=p.id, marks=p.marks) for p in params if p.values[0] != "cpu"] + \
        [pytest.param("cpu", "cpu", isa, id=f"cpu-{isa}") for isa in isas]


@pytest.mark.parametrize("backend,device,isa", with_cpu_isas(BACKENDS))
def test_uint8_rounds_half_to_even_and_saturates(backend, device, isa, monkeypatch):
    """37 columns: the C++ kernel's 16-lane vector path (in each instruction set) and its scalar tail see every
    case."""
    if isa is not None:
        monkeypatch.setenv("FASTMIX_CPU_ISA", isa)
    x = torch.tensor([1, 2, 3, 200, 0, 255], dtype=torch.uint8, device=device).view(6, 1).expand(6, 37).contiguous()
    partner = torch.tensor([1, 2, 1, 4, 3, 5], device=device)
    halves = mix_ops.mixup_pairs(x, torch.full((6,), 0.5, device=device), partner, backend)
    # 1.5 -> 2, 2.5 -> 2, 2.5 -> 2, 100 -> 100, 100 -> 100, 255
    expected = torch.tensor([2, 2, 2, 100, 100, 255], dtype=torch.uint8)
    assert torch.equal(halves.cpu(), expected[:, None].expand(6, 37))
    lam = torch.tensor([2.0, -1.0, 1.0, 2.0, 2.0, 1.0], device=device)  # extrapolation saturates
    out = mix_ops.mixup_pairs(x, lam, partner, backend).cpu()
    # 2*1-2=0, -2+2*3=4, 3, 400-0 -> 255, 0-200 -> 0, 255
    expected = torch.tensor([0, 4, 3, 255, 0, 255], dtype=torch.uint8)
    assert torch.equal(out, expected[:, None].expand(6, 37))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_uint8_round_trip(backend, device):
    """uint8 in, uint8 out, values exact: lam = 1 and a self-partner give x back, CutMix copies input values."""
    x = make_input("nhwc", 8, torch.uint8, device)
    identity = torch.arange(8, device=device)
    assert torch.equal(mix_ops.mixup_pairs(x, torch.ones(8, device=device), identity.flip(0), backend), x)
    x_mixed, _, params = fastmix.cutmix(x, torch.zeros(8, 2, device=device), layout="NHWC", generator=seeded(device),
                                        backend=backend)
    assert x_mixed.dtype == torch.uint8
    assert torch.equal(mix_ops.cutmix_pairs(x, params.boxes, identity, 1, 2, backend), x)
    inside = reference.box_mask(params.boxes, 12, 10)[..., None]
    assert torch.equal(x_mixed, torch.where(inside, x[params.partner], x))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_timm_formulas_for_fixed_parameters(backend, device):
    """timm elem mode, written from its documented behaviour, for one set of (lam, partner = flip, box, mode)."""
    batch, classes, smoothing = 6, 4, 0.1
    x = make_input("nchw", batch, torch.float32, device)
    y = torch.tensor([0, 1, 2, 3, 0, 1], device=device)
    lam = torch.tensor([0.3, 1.0, 0.75, 0.6, 0.5, 0.9], device=device)
    cutmix = torch.tensor([False, False, True, False, True, True], device=device)
    boxes = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 6, 0, 5], [0, 0, 0, 0], [3, 12, 5, 10], [10, 12, 9, 10]],
                         dtype=torch.int32, device=device)
    partner = torch.arange(batch - 1, -1, -1, device=device)
    labels = mix_api.smooth(torch.nn.functional.one_hot(y, classes).float(), smoothing)
    x_mixed = mix_ops.mix_pairs(x, torch.where(cutmix, 1.0, lam), boxes, partner, 2, 3, backend)
    y_mixed = mix_api.mix_labels(labels, lam, partner)
    # timm: x_orig = x.clone(); for i: j = B-1-i; if lam != 1: paste the box, or x[i] lam + x_orig[j] (1 - lam)
    expected = x.clone()
    for i in range(batch):
        j = batch - 1 - i
        if lam[i] != 1:
            if cutmix[i]:
                y0, y1, x0, x1 = boxes[i].tolist()
                expected[i, :, y0:y1, x0:x1] = x[j, :, y0:y1, x0:x1]
            else:
                expected[i] = x[i] * lam[i] + x[j] * (1 - lam[i])
    assert_close(x_mixed, expected, torch.float32)
    off, on = smoothing / classes, 1 - smoothing + smoothing / classes  # timm mixup_target
    y1 = torch.full((batch, classes), off, device=device).scatter_(1, y[:, None], on)
    assert_close(y_mixed, lam[:, None] * y1 + (1 - lam[:, None]) * y1.flip(0), torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_seeded_generator_reproduces(backend, device):
    x = make_input("channels_last", 8, torch.float32, device)
    y = make_labels("soft", 8, 4, device)
    for fn in (fastmix.mixup, fastmix.cutmix):
        first = fn(x, y, generator=seeded(device, 3), backend=backend)
        again = fn(x, y, generator=seeded(device, 3), backend=backend)
        other = fn(x, y, generator=seeded(device, 4), backend=backend)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
        assert all(torch.equal(a, b) for a, b in zip(first[2], again[2]))
        assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_batch_of_one_mixes_with_itself(backend, device):
    x = make_input("nchw", 1, torch.float32, device)
    for fn in (fastmix.mixup, fastmix.cutmix):
        for pairing in ("perm", "flip"):
            x_mixed, y_mixed, params = fn(x, torch.tensor([2], device=device), num_classes=3, pairing=pairing,
                                          backend=backend)
            assert params.partner.tolist() == [0]
            assert_close(x_mixed, x, torch.float32)  # lam x + (1 - lam) x, up to one rounding
            assert torch.equal(y_mixed, torch.tensor([[0.0, 0.0, 1.0]], device=device))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_per_batch_lambda_and_flip_pairing(backend, device):
    x = make_input("nchw", 7, torch.float32, device)
    _, _, params = fastmix.mixup(x, torch.zeros(7, 2, device=device), per_sample=False, pairing="flip",
                                 generator=seeded(device), backend=backend)
    assert (params.lam == params.lam[0]).all()
    assert params.partner.tolist() == [6, 5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_inplace_writes_into_x(backend, device):
    x = make_input("channels_last", 5, torch.float32, device)
    original = x.clone()
    for fn in (fastmix.mixup, fastmix.cutmix):
        x.copy_(original)
        expected = fn(original, torch.zeros(5, 2, device=device), generator=seeded(device), backend=backend)[0]
        out = fn(x, torch.zeros(5, 2, device=device), generator=seeded(device), backend=backend, inplace=True)[0]
        assert out is x and torch.equal(x, expected)


def small_float64(device, batch=3):
    """Tiny inputs: gradcheck evaluates the op twice per element (and the interpreter is slow)."""
    base = torch.randn(batch, 2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return base.to(device=device, memory_format=torch.channels_last).requires_grad_()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradcheck_float64(backend, device):
    x = small_float64(device)
    y = make_labels("soft", 3, 2, device).double().requires_grad_()

    def mixed(x, y):
        return fastmix.mixup(x, y, generator=seeded(device, 1), backend=backend)[:2]

    def cut(x, y):
        return fastmix.cutmix(x, y, generator=seeded(device, 1), backend=backend)[:2]

    for fn in (mixed, cut):  # fast mode (a random projection of the Jacobian) under the slow Triton interpreter
        assert torch.autograd.gradcheck(fn, (x, y), fast_mode=backend == "triton")
        assert torch.autograd.gradgradcheck(fn, (x, y), fast_mode=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradient_for_any_partner_map(backend, device):
    """grad_x[j] = lam_j g_j + sum_{i: partner[i] = j} (1 - lam_i) g_i, also when partners repeat (no permutation)."""
    x = small_float64(device, batch=5)
    lam = torch.tensor([0.2, 0.9, 0.5, 1.0, 0.0], device=device)
    partner = torch.tensor([2, 2, 0, 2, 4], device=device)
    boxes = torch.tensor([[0, 2, 1, 3], [1, 2, 0, 3], [0, 0, 0, 0], [0, 2, 0, 3], [1, 2, 2, 3]], dtype=torch.int32,
                         device=device)
    assert torch.autograd.gradcheck(lambda x: mix_ops.mixup_pairs(x, lam, partner, backend), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: mix_ops.cutmix_pairs(x, boxes, partner, 2, 3, backend), (x,),
                                    fast_mode=True)
    grad = torch.randn(x.shape, dtype=torch.float64, device=device)
    mix_ops.mixup_pairs(x, lam, partner, backend).backward(grad)
    expected = lam.double().view(5, 1, 1, 1) * grad
    expected.index_add_(0, partner, (1 - lam.double()).view(5, 1, 1, 1) * grad)
    assert_close(x.grad, expected, torch.float64)
    x.grad = None
    mix_ops.cutmix_pairs(x, boxes, partner, 2, 3, backend).backward(grad)
    inside = reference.box_mask(boxes, 2, 3)[:, None].double()
    expected = (1 - inside) * grad
    expected.index_add_(0, partner, inside * grad)
    assert_close(x.grad, expected, torch.float64)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    lam = torch.rand(7, device=device)
    partner = torch.tensor([6, 5, 4, 3, 2, 1, 0], device=device)
    boxes = torch.tensor([[0, 4, 2, 9]] * 7, dtype=torch.int32, device=device)
    for layout in ("nchw", "channels_last", "channel_slice", "spatial_slice"):
        x = make_input(layout, 7, torch.float32, device).requires_grad_()
        torch.library.opcheck(mix_ops.mix_pairs, (x, lam, boxes, partner, -1, -1, backend))
        torch.library.opcheck(mix_ops.mix_pairs, (x, lam, boxes, partner, 2, 3, backend))
        inplace = make_input(layout, 7, torch.float32, device)  # a view into a wider tensor for the slices
        torch.library.opcheck(mix_ops.mix_pairs_inplace, (inplace, lam, boxes, partner, 2, 3, backend))
        structure = mix_ops.transpose(*mix_ops._pairs_structure(torch.ones_like(lam), boxes, partner, x.dtype))
        torch.library.opcheck(mix_ops.pair_mix, (x, *structure, 2, 3, backend))
        for inverse, adjoint in ((partner, False), (partner, True), (None, True)):  # flip is its own inverse
            torch.library.opcheck(mix_ops.mix_pairs_unchecked, (x, lam, boxes, partner, inverse, 2, 3, backend,
                                                                adjoint))
    strided_lam = torch.rand(14, device=device)[1::2]  # storage offset 1, stride 2
    offset_boxes = torch.cat([boxes[:1], boxes])[1:]  # storage offset 4
    strided_partner = torch.stack([partner, partner], 1)[:, 1]
    x = make_input("channel_slice", 7, torch.float32, device).requires_grad_()
    for height_dim, width_dim in ((-1, -1), (2, 3)):
        torch.library.opcheck(mix_ops.mix_pairs, (x, strided_lam, offset_boxes, strided_partner, height_dim, width_dim,
                                                  backend))



@pytest.mark.parametrize("batch", [1, 2, 6])
def test_transpose_is_the_adjoint(batch):
    """``transpose`` gives the backward of a pair mix: ``<pair_mix(x), g> = <x, pair_mix^T(g)>``, for structures
    with one term per segment and (transposed once) empty and multi-term segments; the term-to-segment map matches
    the reference oracle's ``segment_rows``."""
    g = torch.Generator().manual_seed(batch)
    partner = torch.randint(0, batch, (batch,), generator=g)  # repeats: some samples feed several segments, some none
    lam = torch.rand(batch, generator=g, dtype=torch.float64)
    boxes = mix_api.sample_boxes(lam, 5, 6, None, g)
    x = torch.randn(batch, 2, 5, 6, generator=g, dtype=torch.float64)
    grad = torch.randn(batch, 2, 5, 6, generator=g, dtype=torch.float64)
    structure = mix_ops._pairs_structure(lam, boxes, partner, torch.float64)
    for _ in range(2):
        transposed = mix_ops.transpose(*structure)
        sources, offsets = structure[4], structure[5]
        order = torch.sort(sources, stable=True).indices
        assert torch.equal(transposed[4], reference.segment_rows(offsets, sources.numel())[order])
        forward = (reference.pair_mix(x, *structure, 2, 3) * grad).sum()
        backward = (x * reference.pair_mix(grad, *transposed, 2, 3)).sum()
        assert_close(forward, backward, torch.float64)
        structure = transposed

@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    def step(x, y):
        x_mix, y_mix, _ = fastmix.mixup(x, y, num_classes=5, backend=backend)
        x_cut, y_cut, _ = fastmix.cutmix(x_mix, y_mix, backend=backend)
        return (x_cut * 2).sum(), y_cut

    x = make_input("nchw", 4, torch.float32, device)
    y = make_labels("int", 4, 5, device)
    assert_compiled_matches_eager(step, (x, y), device)


def emulate(x, structure, height_dim, width_dim):
    """The CUDA kernel body over its launch grid, on the CPU, with the launcher's arguments (through
    ``_native.launch``)."""
    out = torch.full_like(x, 7)
    x_rows, out_rows = x.view(x.size(0), -1), out.view(out.size(0), -1)
    geometry = mix_ops.spatial_geometry(x, height_dim, width_dim)
    _native.launch("pair_mix_emulate", x.device, _native.Buffer(x_rows, x.dtype, rows=True),
                   _native.Buffer(out_rows, x.dtype, rows=True), x_rows.size(0), x_rows.size(1),
                   *(t.contiguous() for t in structure), *geometry, height_dim >= 0, _native.DTYPE_CODES[x.dtype])
    return out


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
@pytest.mark.parametrize("dtype", (torch.float64, *DTYPES))
@pytest.mark.parametrize("batch,height,width", [(1, 1, 5), (3, 12, 10), (7, 17, 23), (2, 30, 31)])
def test_cuda_body_on_the_cpu_grid(dtype, batch, height, width):
    x = (torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height)) * 255).to(dtype)
    g = torch.Generator().manual_seed(batch)
    lam = torch.rand(batch, generator=g)
    lam[0] = 0.5
    partner = torch.randint(0, batch, (batch,), generator=g)
    boxes = mix_api.sample_boxes(lam, height, width, None, g)
    no_boxes = torch.zeros_like(boxes)
    ones = torch.ones_like(lam)
    mixup = emulate(x, mix_ops._pairs_structure(lam, no_boxes, partner, dtype), -1, -1)
    assert_mixed_close(mixup, reference.mixup_pairs(x, lam, partner), dtype, "mixup")
    cut = emulate(x, mix_ops._pairs_structure(ones, boxes, partner, dtype), 2, 3)
    assert torch.equal(cut, reference.cutmix_pairs(x, boxes, partner, 2, 3))
    structure = mix_ops.transpose(*mix_ops._pairs_structure(ones, boxes, partner, dtype))  # multi-term segments
    expected = reference.pair_mix(x, *structure, 2, 3)
    assert_mixed_close(emulate(x, structure, 2, 3), expected, dtype, "transposed")
    x_last = x.to(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # NHWC rows
    cut_last = emulate(x_last, mix_ops._pairs_structure(ones, boxes, partner, dtype), 1, 2)
    assert torch.equal(cut_last, reference.cutmix_pairs(x_last, boxes, partner, 1, 2))
    # mix_pairs_thread: the mix, and its adjoint with the readers' lists and with an inverse permutation
    weight = torch.where(torch.arange(batch) % 2 == 0, 1.0, lam).to(compute_dtype(dtype))
    mixed = emulate_pairs(x, weight, boxes, partner, None, 2, 3, adjoint=False)
    assert_mixed_close(mixed, reference.mix_pairs(x, weight, boxes, partner, 2, 3), dtype, "mix_pairs_thread")
    if dtype != torch.uint8:
        transposed = mix_ops.transpose(*mix_ops._pairs_structure(weight, boxes, partner, dtype))
        expected = reference.pair_mix(x, *transposed, 2, 3)
        sources, offsets = mix_ops.readers(partner, "cpu")
        assert_mixed_close(emulate_pairs(x, weight, boxes, sources, offsets, 2, 3, adjoint=True), expected, dtype,
                           "adjoint, readers' lists")
        perm = torch.randperm(batch, generator=g)
        transposed = mix_ops.transpose(*mix_ops._pairs_structure(weight, boxes, perm, dtype))
        expected = reference.pair_mix(x, *transposed, 2, 3)
        assert_mixed_close(emulate_pairs(x, weight, boxes, torch.argsort(perm), None, 2, 3, adjoint=True), expected,
                           dtype, "adjoint, inverse permutation")


def emulate_pairs(x, weight, boxes, sources, offsets, height_dim, width_dim, adjoint):
    """``mix_pairs_thread`` (the CUDA kernels' body) over its launch grid on the CPU, through ``_native.launch``."""
    out = torch.full_like(x, 7)
    x_rows, out_rows = x.view(x.size(0), -1), out.view(out.size(0), -1)
    geometry = mix_ops.spatial_geometry(x, height_dim, width_dim)
    _native.launch("mix_pairs_emulate", x.device, _native.Buffer(x_rows, x.dtype, rows=True),
                   _native.Buffer(out_rows, x.dtype, rows=True), x_rows.size(0), x_rows.size(1), weight,
                   boxes.to(torch.int32).contiguous(), sources, 0 if offsets is None else offsets, *geometry,
                   height_dim >= 0, adjoint, _native.DTYPE_CODES[x.dtype])
    return out


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x, y: fastmix.mixup(x, y, alpha=0.0), ValueError, "alpha must be"),
        (lambda x, y: fastmix.cutmix(x, y, alpha=-1.0), ValueError, "alpha must be"),
        (lambda x, y: fastmix.mixup(x, y, alpha=float("nan")), ValueError, "alpha must be"),
        (lambda x, y: fastmix.cutmix(x, y, minmax=(0.8, 0.2)), ValueError, "minmax must satisfy"),
        (lambda x, y: fastmix.cutmix(x, y, minmax=(0.2, 1.2)), ValueError, r"minmax must be in \[0, 1\]"),
        (lambda x, y: fastmix.cutmix(x, y, minmax=(0.2,)), ValueError, "minmax must be None or a pair"),
        (lambda x, y: fastmix.mixup(x, y, label_smoothing=1.0), ValueError, "label_smoothing must be"),
        (lambda x, y: fastmix.mixup(x, y, label_smoothing=-0.1), ValueError, "label_smoothing must be"),
        (lambda x, y: fastmix.mixup(x, y, pairing="roll"), ValueError, "pairing must be"),
        (lambda x, y: fastmix.cutmix(x, y, layout="CHWN"), ValueError, "layout must be"),
        (lambda x, y: fastmix.cutmix(x[:, 0], y), ValueError, "x must be a 4-D image batch"),
        (lambda x, y: fastmix.mixup(x, y[:3]), ValueError, "y must have the batch size"),
        (lambda x, y: fastmix.cutmix(x, y[:3]), ValueError, "y must have the batch size"),
        (lambda x, y: fastmix.mixup(x.long(), y), TypeError, "x must be a floating-point or uint8"),
        (lambda x, y: fastmix.mixup(x, y.argmax(1)), ValueError, "num_classes is required"),
        (lambda x, y: fastmix.mixup(x, y, backend="fast"), ValueError, "backend must be"),
        (lambda x, y: fastmix.cutmix(x, y, generator=1), TypeError, "generator must be"),
        (lambda x, y: fastmix.mixup(x.requires_grad_(), y, inplace=True), ValueError, "inplace=True cannot"),
    ],
)
def test_bad_input(call, error, match):
    assert_rejected_untouched(call, error, match, torch.randn(6, 3, 4, 4), torch.rand(6, 4))


def test_uint8_cannot_carry_autograd():
    """uint8 images have no gradient: torch refuses requires_grad on them, so the mixed uint8 output has none."""
    x = make_input("nchw", 4, torch.uint8, "cpu")
    with pytest.raises(RuntimeError, match="floating point"):
        x.requires_grad_()
    x_mixed, y_mixed, _ = fastmix.mixup(x, torch.rand(4, 3, requires_grad=True), generator=seeded("cpu"))
    assert not x_mixed.requires_grad and y_mixed.requires_grad


# ---------------------------------------------------------------------------------------------------------------
# fastmix::mix_pairs, the forward mix of every mode, and its in-place twin.

PAIR_LAYOUTS = ("nchw", "channels_last", "nhwc", "channel_slice", "spatial_slice", "video", "video_channels_last")


def pair_input(kind, batch, dtype, height=7, width=9, seed=0):
    """(x, height_dim, width_dim): odd-sized images in every layout the kernels take, values in uint8's range."""
    g = torch.Generator().manual_seed(seed)
    values = lambda *shape: torch.rand(*shape, generator=g) * 300 - 20  # noqa: E731  (uint8 saturates at both ends)
    if kind == "nhwc":
        x, dims = values(batch, height, width, 3), (1, 2)
    elif kind in ("video", "video_channels_last"):
        x, dims = values(batch, 2, 3, height, width), (3, 4)
        if kind == "video_channels_last":
            x = x.to(memory_format=torch.channels_last_3d)
    elif kind == "channel_slice":
        x, dims = values(batch, 5, height, width)[:, 1:4], (2, 3)
    elif kind == "spatial_slice":
        x, dims = values(batch, 3, height, width + 4)[:, :, :, 2:width + 2], (2, 3)
    else:
        x, dims = values(batch, 3, height, width), (2, 3)
        if kind == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    if dtype == torch.uint8:
        return x.clamp(0, 255).round().to(torch.uint8), *dims
    return (x / 100).to(dtype), *dims


def pair_params(batch, height, width, partner_kind, seed=0):
    """weight (B,), boxes (B, 4), partner (B,): weights 1 (CutMix or unmixed), 0 and in between; boxes empty, full
    and touching each border; partners a permutation, the flip, indices with repeats, or each sample itself."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(batch, generator=g)
    weight[::3] = 1.0
    weight[1::5] = 0.0
    y0 = torch.randint(0, height + 1, (batch,), generator=g)
    x0 = torch.randint(0, width + 1, (batch,), generator=g)
    y1 = torch.minimum(y0 + torch.randint(0, height + 1, (batch,), generator=g), torch.tensor(height))
    x1 = torch.minimum(x0 + torch.randint(0, width + 1, (batch,), generator=g), torch.tensor(width))
    boxes = torch.stack([y0, y1, x0, x1], dim=1)
    fixed = [[0, height, 0, width], [0, 0, 0, 0], [0, 3, 0, 2], [height - 2, height, width - 1, width], [2, 5, 3, 3]]
    boxes[:len(fixed)] = torch.tensor(fixed)[:batch]
    partners = {"perm": torch.randperm(batch, generator=g), "flip": torch.arange(batch - 1, -1, -1),
                "repeats": torch.randint(0, batch, (batch,), generator=g), "self": torch.arange(batch)}
    return weight, boxes.to(torch.int32), partners[partner_kind]


def expected_pairs(x, weight, boxes, partner, height_dim, width_dim, box):
    return reference.mix_pairs(x, weight, boxes, partner, *((height_dim, width_dim) if box else (None, None)))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", PAIR_LAYOUTS)
@pytest.mark.parametrize("batch", (1, 3, 7))
def test_mix_pairs_parity_with_reference(backend, device, dtype, layout, batch):
    if dtype not in (torch.float32, torch.uint8) and layout not in ("nchw", "channels_last"):
        pytest.skip("fp16/bf16 take the same index math as fp32; two layouts suffice")
    x, height_dim, width_dim = pair_input(layout, batch, dtype)
    x = x.to(device)
    x_before = x.clone()
    height, width = x.size(height_dim), x.size(width_dim)
    for partner_kind in ("perm", "flip", "repeats", "self"):
        weight, boxes, partner = (t.to(device) for t in pair_params(batch, height, width, partner_kind))
        for box in (True, False):
            dims = (height_dim, width_dim) if box else (-1, -1)
            expected = expected_pairs(x, weight, boxes, partner, height_dim, width_dim, box)
            out = mix_ops.mix_pairs(x, weight, boxes, partner, *dims, backend)
            msg = f"{partner_kind} box={box}"
            assert out.shape == x.shape and out.dtype == dtype and out.stride() == expected.stride() or \
                layout in ("channel_slice", "spatial_slice"), msg
            assert_mixed_close(out, expected, dtype, msg)
            assert torch.equal(x, x_before), "the caller's x was modified"
            inplace, _, _ = pair_input(layout, batch, dtype)
            inplace = inplace.to(device)
            mix_ops.mix_pairs_inplace(inplace, weight, boxes, partner, *dims, backend)
            assert torch.equal(inplace, out), f"in place differs from out of place: {msg}"


PARTNER_MAPS = {
    "flip_odd": [6, 5, 4, 3, 2, 1, 0],  # the middle sample is its own partner
    "cycles": [1, 2, 0, 4, 3, 5, 6],  # a 3-cycle, a 2-cycle, two fixed points
    "one_cycle": [1, 2, 3, 4, 5, 6, 0],
    "chains": [1, 2, 2, 2, 0, 4, 5],  # trees that feed a fixed point: 6 -> 5 -> 4 -> 0 -> 1 -> 2
    "into_cycle": [1, 0, 1, 2, 3, 3, 5],  # a chain that feeds a 2-cycle
    "everyone_reads_0": [0, 0, 0, 0, 0, 0, 0],
}


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
@pytest.mark.parametrize("partner_map", PARTNER_MAPS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.uint8))
@pytest.mark.parametrize("layout", ("nchw", "nhwc", "video"))
def test_inplace_kernel_reads_every_partner_before_overwriting_it(partner_map, dtype, layout):
    """The C++ in-place order (readers before the sample they read, a saved line per cycle) on partner maps that
    are no involution, against the out-of-place mix; CutMix rows (weight 1) and Mixup rows (weight lam) together."""
    x, height_dim, width_dim = pair_input(layout, 7, dtype, height=9, width=11)
    partner = torch.tensor(PARTNER_MAPS[partner_map])
    weight, boxes, _ = pair_params(7, 9, 11, "self", seed=3)
    for dims in ((height_dim, width_dim), (-1, -1)):
        expected = reference.mix_pairs(x, weight, boxes, partner, *dims) if dims[0] >= 0 else \
            reference.mixup_pairs(x, weight, partner)
        inplace = x.clone()
        mix_ops.mix_pairs_inplace(inplace, weight, boxes, partner, *dims, "cpu")
        assert_mixed_close(inplace, expected, dtype, f"{partner_map} {dims}")


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
def test_inplace_cutmix_writes_only_the_boxes():
    """In place, a sample with weight 1 keeps every element outside its box as it was (NaN payloads included: the
    kernel does not rewrite them), and takes the partner's elements inside."""
    x, _, _ = pair_input("channels_last", 5, torch.float32, height=8, width=6)
    x[:, :, 0, 0] = float("nan")
    weight = torch.ones(5)
    boxes = torch.tensor([[1, 4, 2, 5]] * 5, dtype=torch.int32)
    partner = torch.tensor([4, 3, 2, 1, 0])
    before = x.clone()
    mix_ops.mix_pairs_inplace(x, weight, boxes, partner, 2, 3, "cpu")
    inside = reference.box_mask(boxes, 8, 6)[:, None]
    assert torch.equal(x.view(torch.int32)[~inside.expand_as(x)], before.view(torch.int32)[~inside.expand_as(x)])
    assert torch.equal(x[inside.expand_as(x)], before[partner][inside.expand_as(x)])


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype,layout", [(torch.float32, layout) for layout in PAIR_LAYOUTS]
                         + [(dtype, "channels_last") for dtype in (torch.float16, torch.bfloat16, torch.float64)])
@pytest.mark.parametrize("partner_kind", ["perm", "self", "repeats"])
def test_adjoint_is_the_gradient_of_the_reference_mix(backend, device, dtype, layout, partner_kind):
    """mix_pairs_unchecked's adjoint (with the inverse permutation, or the readers' lists for repeated partners)
    against torch's autograd through the reference formula, in float64."""
    g, height_dim, width_dim = pair_input(layout, 7, dtype, seed=1)
    weight, boxes, partner = pair_params(7, 7, 9, partner_kind)
    weight = weight.to(compute_dtype(dtype))
    inverse = torch.argsort(partner) if partner_kind != "repeats" else None
    for dims in ((height_dim, width_dim), (-1, -1)):
        x = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        spatial = dims if dims[0] >= 0 else (None, None)
        mixed = reference.mix_pairs(x, weight.double(), boxes, partner, *spatial)
        expected, = torch.autograd.grad(mixed, x, g.double())
        args = [t.to(device) if t is not None else None for t in (g, weight, boxes, partner, inverse)]
        actual = mix_ops.mix_pairs_unchecked(*args, *dims, backend, True)
        assert actual.stride() == _layout.empty_like_rows(args[0]).stride()
        assert_close(actual, expected, dtype, f"dims {dims}")


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
@pytest.mark.parametrize("partner_kind", ["perm", "repeats"])
def test_cuda_adjoint_call_site(monkeypatch, partner_kind):
    """The "cuda" branch of the adjoint (mix_pairs_cuda answered by its CPU body) wires the inverse permutation, or
    the readers' lists (a Triton kernel, hence the interpreter), as the kernel expects."""
    if partner_kind == "repeats" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the readers' lists come from a Triton kernel: CPU tensors need TRITON_INTERPRET=1")
    monkeypatch.setattr(_native, "native", CudaKernelsOnCpu)
    g, height_dim, width_dim = pair_input("channels_last", 7, torch.float16, seed=2)
    weight, boxes, partner = pair_params(7, 7, 9, partner_kind)
    inverse = torch.argsort(partner) if partner_kind == "perm" else None
    args = (g, weight, boxes, partner, inverse, height_dim, width_dim)
    assert_close(mix_ops.mix_pairs_unchecked(*args, "cuda", True),
                 mix_ops.mix_pairs_unchecked(*args, "reference", True), torch.float16)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mix_pairs_gradient_mixed_modes(backend, device):
    """grad_x[j] = W_j g_j + sum_{i: partner[i] = j} (1 - W_i) g_i with W_i 0 in box i and weight_i outside: CutMix,
    Mixup and unmixed samples in one batch, partners repeated."""
    x = small_float64(device, batch=5)
    weight = torch.tensor([1.0, 0.3, 1.0, 0.0, 0.8], dtype=torch.float64, device=device)
    boxes = torch.tensor([[0, 2, 1, 3], [0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 0, 2], [0, 2, 0, 3]], dtype=torch.int32,
                         device=device)
    partner = torch.tensor([3, 3, 0, 1, 4], device=device)
    assert torch.autograd.gradcheck(lambda x: mix_ops.mix_pairs(x, weight, boxes, partner, 2, 3, backend), (x,))
    grad = torch.randn(x.shape, dtype=torch.float64, device=device)
    mix_ops.mix_pairs(x, weight, boxes, partner, 2, 3, backend).backward(grad)
    inside = reference.box_mask(boxes, 2, 3)[:, None]
    own = torch.where(inside, 0.0, weight.view(5, 1, 1, 1))
    expected = own * grad
    expected.index_add_(0, partner, (1 - own) * grad)
    assert_close(x.grad, expected, torch.float64)


BAD_PAIRS = [
    (dict(weight=torch.rand(5)), ValueError, r"weight must have shape \(6,\)"),
    (dict(weight=torch.ones(6, dtype=torch.int64)), TypeError, "weight must be floating point"),
    (dict(partner=torch.arange(5)), ValueError, r"partner must have shape \(6,\)"),
    (dict(partner=torch.arange(6.0)), TypeError, "partner must hold integers"),
    (dict(partner=torch.tensor([1, 0, 3, 10**9, 2, 2])), ValueError, r"partner holds indices outside \[0, 6\)"),
    (dict(partner=torch.tensor([1, 0, -1, 3, 2, 2])), ValueError, r"partner holds indices outside \[0, 6\)"),
    (dict(boxes=torch.zeros(6, 3, dtype=torch.int32)), ValueError, r"boxes must have shape \(6, 4\)"),
    (dict(boxes=torch.tensor([[0, 5, 0, 2]] * 6, dtype=torch.int32)), ValueError, "boxes must hold boxes"),
    (dict(boxes=torch.tensor([[3, 2, 0, 2]] * 6, dtype=torch.int32)), ValueError, "boxes must hold boxes"),
    (dict(boxes=torch.tensor([[0, 2, -1, 2]] * 6, dtype=torch.int32)), ValueError, "boxes must hold boxes"),
    (dict(height_dim=0, width_dim=3), ValueError, "height_dim and width_dim must be two trailing dims"),
]


@pytest.mark.parametrize("backend,device", with_cpu_kernel([pytest.param("reference", "cpu", id="reference-cpu")]))
@pytest.mark.parametrize("bad,error,match", BAD_PAIRS)
@pytest.mark.parametrize("inplace", [False, True])
def test_mix_pairs_bad_arguments(backend, device, bad, error, match, inplace):
    args = dict(weight=torch.rand(6), boxes=torch.tensor([[0, 2, 0, 2]] * 6, dtype=torch.int32),
                partner=torch.arange(6), height_dim=2, width_dim=3)
    args.update(bad)
    op = mix_ops.mix_pairs_inplace if inplace else mix_ops.mix_pairs
    call = lambda x, *params: op(x, *params, args["height_dim"], args["width_dim"], backend)  # noqa: E731
    assert_rejected_untouched(call, error, match, torch.randn(6, 3, 4, 4), args["weight"], args["boxes"],
                              args["partner"])


FUZZ_IN_SUBPROCESS = """
import torch
from fastmix.ops import mix as mix_ops
from fastmix.reference import mix as reference

g = torch.Generator().manual_seed(0)
draw = lambda low, high, *shape: torch.randint(low, high, shape, generator=g)
corrupt = lambda: bool(draw(0, 4, 1) == 0)  # each argument is bad one time in four
rejected = accepted = 0
for trial in range(300):
    batch, height, width = (int(v) for v in draw(1, 6, 3))
    x = torch.rand(batch, 2, height, width, generator=g)
    if trial % 2:
        x = (x * 255).to(torch.uint8)
    partner = draw(-2, batch + 2, batch + int(draw(-1, 2, 1))) if corrupt() else draw(0, batch, batch)
    y0, x0 = draw(0, height + 1, batch), draw(0, width + 1, batch)
    boxes = torch.stack([y0, y0 + draw(0, height + 1 - y0.max(), batch), x0,
                         x0 + draw(0, width + 1 - x0.max(), batch)], dim=1).to(torch.int32)
    if corrupt():
        boxes = draw(-1, max(height, width) + 2, batch + int(draw(-1, 2, 1)), 4).to(torch.int32)
    weight = torch.rand(batch + (int(draw(-1, 2, 1)) if corrupt() else 0), generator=g)
    for backend in ("cpu", "reference"):
        for op in (mix_ops.mix_pairs, mix_ops.mix_pairs_inplace):
            target = x.clone()
            try:
                out = op(target, weight, boxes, partner, 2, 3, backend)
            except (ValueError, TypeError):
                rejected += 1
                assert torch.equal(target, x), "a rejected call wrote into x"
                continue
            accepted += 1
            expected = reference.mix_pairs(x, weight, boxes, partner, 2, 3)
            assert torch.equal(target if out is None else out, expected)
print("done", rejected, accepted)
"""


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
def test_fuzz_bad_lengths_and_indices_never_crash(tmp_path):
    """Random lengths, partner indices and boxes, many out of range: every call raises a ValueError/TypeError or
    matches the reference. In a subprocess, so that an out-of-bounds access in the kernel fails the test."""
    result = subprocess.run([sys.executable, "-c", FUZZ_IN_SUBPROCESS], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _, rejected, accepted = result.stdout.split()
    assert int(rejected) > 100 and int(accepted) > 20, result.stdout


@pytest.mark.parametrize("backend,device", with_cpu_kernel([pytest.param("reference", "cpu", id="reference-cpu")]))
def test_inplace_into_an_expanded_batch_is_refused(backend, device):
    """Samples sharing memory (an expanded batch) cannot take different results: refused as torch's copy_ does."""
    x = torch.rand(1, 3, 4, 4).expand(3, 3, 4, 4)
    args = (torch.rand(3), torch.zeros(3, 4, dtype=torch.int32), torch.tensor([2, 1, 0]), 2, 3, backend)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        mix_ops.mix_pairs_inplace(x, *args)


@pytest.mark.parametrize("backend,device", with_cpu_kernel([pytest.param("reference", "cpu", id="reference-cpu")]))
def test_mix_pairs_of_empty_samples(backend, device):
    """Samples without elements (NHWC with zero channels: the spatial divisors are 0) mix to an empty output."""
    x = torch.rand(3, 4, 5, 0)
    weight, boxes, partner = pair_params(3, 4, 5, "flip")
    for dims in ((1, 2), (-1, -1)):
        assert mix_ops.mix_pairs(x, weight, boxes, partner, *dims, backend).shape == x.shape
        mix_ops.mix_pairs_inplace(x, weight, boxes, partner, *dims, backend)
