"""The mix API's sampling and argument handling: timm 1.0.31's box rule re-derived on fixed draws and in the mean,
one random draw per kind per call, numpy scalars and bool flags, zero-size images, in-place writes, label sizes,
and CutMix on video batches."""

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from triton.runtime.errors import InterpreterError

import fastmix
from fastmix import _random
from fastmix.api import mix as mix_api
from helpers import assert_rejected_untouched, backend_params, make_labels, seeded, with_cpu_kernel

BACKENDS = with_cpu_kernel(backend_params())
RANDOM_OPS = {"rand", "randn", "randint", "randperm", "bernoulli", "normal", "uniform", "exponential",
              "_standard_gamma", "multinomial", "random"}


class RandomDraws(TorchDispatchMode):
    """Counts the random-number ops dispatched inside the ``with`` block."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__.rstrip("_")
        if name in RANDOM_OPS:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def timm_box(height, width, lam, centre_y, centre_x):
    """timm 1.0.31 ``rand_bbox`` for one lam and centre, in Python integers."""
    ratio = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    return (min(max(centre_y - cut_h // 2, 0), height), min(max(centre_y + (cut_h + 1) // 2, 0), height),
            min(max(centre_x - cut_w // 2, 0), width), min(max(centre_x + (cut_w + 1) // 2, 0), width))


def test_boxes_are_timms_rand_bbox_on_fixed_draws():
    """Every lam and centre of a grid (odd and even sides, boxes clipped on each border) gives timm's box."""
    height, width = 7, 10
    lam_values = torch.linspace(0.0, 0.999, 37, dtype=torch.float32)
    centres = torch.rand((200, 2), generator=seeded("cpu", 1), dtype=torch.float64)
    lam = lam_values.repeat_interleave(len(centres))
    uniform = centres.repeat(len(lam_values), 1)
    boxes = mix_api.sample_boxes(lam, height, width, None, None, uniform)
    expected = [timm_box(height, width, float(value), int(u[0] * height), int(u[1] * width))
                for value, u in zip(lam.tolist(), uniform.tolist())]
    assert boxes.dtype == torch.int32 and boxes.tolist() == [list(box) for box in expected]
    unclipped = (boxes[:, 0] > 0) & (boxes[:, 1] < height) & (boxes[:, 2] > 0) & (boxes[:, 3] < width)
    sides = torch.stack([(height * (1 - lam.double()).sqrt()).floor(), (width * (1 - lam.double()).sqrt()).floor()], 1)
    assert unclipped.sum() > 100
    assert torch.equal((boxes[:, 1::2] - boxes[:, 0::2])[unclipped].double(), sides[unclipped]), "exact drawn sides"


def test_minmax_boxes_on_fixed_draws():
    """timm ``rand_bbox_minmax``: side ``randint(int(S lo), int(S hi))``, origin ``randint(0, S - side + 1)``."""
    height, width, lo, hi = 20, 16, 0.2, 0.8
    uniform = torch.rand((500, 4), generator=seeded("cpu", 2), dtype=torch.float64)
    boxes = mix_api.sample_boxes(torch.zeros(500), height, width, (lo, hi), None, uniform)
    for box, (u_h, u_w, u_y, u_x) in zip(boxes.tolist(), uniform.tolist()):
        cut_h = int(height * lo) + int(u_h * (int(height * hi) - int(height * lo)))
        cut_w = int(width * lo) + int(u_w * (int(width * hi) - int(width * lo)))
        y0, x0 = int(u_y * (height - cut_h + 1)), int(u_x * (width - cut_w + 1))
        assert box == [y0, y0 + cut_h, x0, x0 + cut_w]


def expected_kept_fraction(height, width, centre_offset):
    """E[1 - area / (H W)] for lam ~ Beta(1, 1) = U(0, 1) and uniform pixel centres, exactly: the sides are
    constant between the breakpoints (k / S)^2 of 1 - lam, and the clipped lengths along y and x are independent.
    ``centre_offset(cut)`` is how far the box reaches past the centre pixel: (cut + 1) // 2 in timm 1.0.31."""
    def mean_length(side, cut):
        return sum(min(c + centre_offset(cut), side) - max(c - cut // 2, 0) for c in range(side)) / side

    breaks = sorted({(k / side) ** 2 for side in (height, width) for k in range(side + 1)})
    total = 0.0
    for low, high in zip(breaks, breaks[1:]):
        middle = math.sqrt((low + high) / 2)  # sqrt(1 - lam) inside this interval
        cut_h, cut_w = int(height * middle), int(width * middle)
        total += (high - low) * mean_length(height, cut_h) * mean_length(width, cut_w)
    return 1 - total / (height * width)


def test_mean_kept_fraction_is_timms():
    """The mean corrected lam of CutMix(alpha=1) matches the exact mean of timm 1.0.31's rule, and is far from the
    older rule's (``c + cut // 2``), so the sample tells the two apart."""
    height, width, count = 5, 7, 40000
    lam = fastmix.cutmix(torch.zeros(count, 1, height, width), torch.zeros(count, 2), generator=seeded("cpu", 3))[2].lam
    current = expected_kept_fraction(height, width, lambda cut: (cut + 1) // 2)
    older = expected_kept_fraction(height, width, lambda cut: cut // 2)
    standard_error = lam.double().std().item() / math.sqrt(count)
    assert abs(lam.double().mean().item() - current) < 4 * standard_error
    assert abs(current - older) > 12 * standard_error


def test_sample_betas_draws_every_row_from_one_gamma_call():
    alphas = (0.3, 4.0)
    with RandomDraws() as draws:
        lam = _random.sample_betas(alphas, 40000, "cpu", seeded("cpu", 4))
    assert draws.counts == {"_standard_gamma": 1, "rand": 1}
    assert lam.shape == (2, 40000) and ((lam >= 0) & (lam <= 1)).all()
    for row, alpha in zip(lam, alphas):
        variance = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
        assert abs(row.mean().item() - 0.5) < 4 * math.sqrt(variance / row.numel())
        assert abs(row.var().item() - variance) < 0.05 * variance
    uniform = torch.rand((2, 2, 5), generator=seeded("cpu", 5), dtype=torch.float64)
    again = [_random.sample_betas(alphas, 5, "cpu", seeded("cpu", 6), uniform) for _ in range(2)]
    assert torch.equal(again[0], again[1]), "the caller's uniforms and the seed fix the draw"


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("minmax", [None, (0.2, 0.7)])
def test_one_random_draw_of_each_kind_per_call(mode, minmax):
    x = torch.zeros(6, 3, 8, 8)
    mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=minmax, mode=mode, num_classes=3,
                          generator=seeded("cpu"), backend="reference")
    with RandomDraws() as draws:
        mixer.sample(x)
    assert draws.counts == {"rand": 1, "_standard_gamma": 1}
    with RandomDraws() as draws:
        fastmix.cutmix(x, torch.zeros(6, 3), minmax=minmax, generator=seeded("cpu"), backend="reference")
    assert draws.counts == {"rand": 1, "_standard_gamma": 1, "randperm": 1}


@pytest.mark.parametrize("backend,device", with_cpu_kernel(backend_params(("triton",))))
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_kernel_backends_draw_one_seed_per_call(backend, device, mode):
    """On the kernel backends and "cpu" the generator gives one seed per call; the parameter kernel (or its C++
    twin) draws the rest."""
    x, y = torch.zeros(6, 3, 8, 8, device=device), torch.zeros(6, 3, device=device)
    mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, num_classes=3, generator=seeded(device),
                          backend=backend)
    with RandomDraws() as draws:
        mixer(x, y)
        fastmix.cutmix(x, y, minmax=(0.2, 0.7), generator=seeded(device), backend=backend)
        fastmix.mixup(x, y, generator=seeded(device), backend=backend)
    assert draws.counts == {"randint": 3}


def test_numpy_scalars_are_numbers():
    x = torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    numpy_args = dict(alpha=np.float32(0.8), num_classes=np.int64(5), label_smoothing=np.float64(0.1))
    python_args = {name: value.item() for name, value in numpy_args.items()}
    for fn in (fastmix.mixup, fastmix.cutmix):
        got = fn(x, y, generator=seeded("cpu"), **numpy_args)
        want = fn(x, y, generator=seeded("cpu"), **python_args)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    cut = fastmix.cutmix(x, y, minmax=(np.float32(0.25), np.float64(0.75)), num_classes=np.int32(5))
    assert cut[1].shape == (6, 5)
    mixer = fastmix.Mixup(np.float32(0.8), np.float32(1.0), None, np.float64(0.9), np.float32(0.5), "elem",
                          np.bool_(True), np.float32(0.1), np.int64(5))
    assert mixer.num_classes == 5 and type(mixer.num_classes) is int and mixer.correct_lam is True
    assert mixer(x, y)[1].shape == (6, 5)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x, y: fastmix.mixup(x, y, per_sample=1), "per_sample"),
        (lambda x, y: fastmix.mixup(x, y, inplace=None), "inplace"),
        (lambda x, y: fastmix.mixup(x, y, multi_label="yes"), "multi_label"),
        (lambda x, y: fastmix.cutmix(x, y, correct_lam=0), "correct_lam"),
        (lambda x, y: fastmix.cutmix(x, y, per_sample=torch.tensor(True)), "per_sample"),
        (lambda x, y: fastmix.Mixup(correct_lam=1), "correct_lam"),
        (lambda x, y: fastmix.Mixup(multi_label=1), "multi_label"),
        (lambda x, y: fastmix.Mixup(inplace="False"), "inplace"),
        (lambda x, y: fastmix.FastCollateMixup(correct_lam=np.int64(1)), "correct_lam"),
    ],
)
def test_flags_must_be_bools(call, name):
    x, y = torch.rand(4, 3, 6, 6), torch.rand(4, 3)
    assert_rejected_untouched(call, TypeError, f"{name} must be a bool", x, y)


@pytest.mark.parametrize("shape", [(2, 3, 0, 5), (2, 3, 4, 0), (2, 3, 2, 0, 5)])
def test_zero_size_sides_raise_before_drawing(shape):
    """No box fits in a zero-size side (timm's randint raises there too): a ValueError naming x, nothing drawn."""
    x, y = torch.zeros(shape), torch.zeros(2, 3)
    generator = seeded("cpu")
    state = generator.get_state()
    with pytest.raises(ValueError, match="x must have a height and width >= 1"):
        fastmix.cutmix(x, y, generator=generator)
    with pytest.raises(ValueError, match="x must have a height and width >= 1"):
        fastmix.Mixup(cutmix_alpha=1.0, num_classes=3, generator=generator)(x, y)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    "make_x",
    [
        lambda: torch.rand(1, 3, 5, 5).expand(4, 3, 5, 5),  # one sample seen four times
        lambda: torch.rand(4, 1, 5, 5).expand(4, 3, 5, 5),  # one channel seen three times
        lambda: torch.rand(200).as_strided((4, 3, 5, 5), (30, 8, 2, 1)),  # rows that interleave
    ],
)
def test_inplace_refuses_self_overlapping_x(make_x):
    x, y = make_x(), torch.zeros(4, 2)
    generator = seeded("cpu")
    state = generator.get_state()
    for fn in (fastmix.mixup, fastmix.cutmix):
        assert_rejected_untouched(lambda x, y: fn(x, y, inplace=True, generator=generator), ValueError,
                                  "inplace=True cannot write into an x whose elements share memory", x, y)
    mixer = fastmix.Mixup(cutmix_alpha=1.0, num_classes=2, inplace=True, generator=generator)
    assert_rejected_untouched(mixer, ValueError, "elements share memory", x, y)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("layout", ["channels_last", "spatial_slice", "batch_slice"])
def test_inplace_takes_strided_views(layout):
    base = torch.rand(8, 3, 6, 9, generator=seeded("cpu", 7))
    x = {"channels_last": base.to(memory_format=torch.channels_last), "spatial_slice": base[:, :, :, 2:7],
         "batch_slice": base[::2]}[layout]
    y = torch.rand(x.size(0), 4)
    for fn in (fastmix.mixup, fastmix.cutmix):
        expected = fn(x, y, generator=seeded("cpu"))[0]
        target = x.clone(memory_format=torch.preserve_format) if layout != "batch_slice" else base.clone()[::2]
        out = fn(target, y, generator=seeded("cpu"), inplace=True)[0]
        assert out is target and torch.equal(target, expected)


def test_label_tensors_too_large_to_index_raise():
    x = torch.rand(4, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3])
    for call in (lambda: fastmix.mixup(x, y, num_classes=10**12), lambda: fastmix.cutmix(x, y, num_classes=2**30),
                 lambda: fastmix.Mixup(num_classes=10**12)(x, y)):
        with pytest.raises(ValueError, match=r"num_classes=\d+ with a batch of 4 needs a \(4, \d+\) label tensor"):
            call()
    with pytest.raises(TypeError, match="num_classes must be an int"):
        fastmix.mixup(x, y, num_classes=5.0)


def cutmix_by_slicing(x, boxes, partner, height_dim):
    """CutMix written with slices: sample i takes its partner's box on every frame and channel."""
    out = x.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        index = [i] + [slice(None)] * (x.dim() - 1)
        source = [int(partner[i])] + [slice(None)] * (x.dim() - 1)
        index[height_dim] = source[height_dim] = slice(y0, y1)
        index[height_dim + 1] = source[height_dim + 1] = slice(x0, x1)
        out[tuple(index)] = x[tuple(source)]
    return out


@pytest.mark.parametrize("backend,device", [*BACKENDS, pytest.param(None, "cpu", id="default-cpu")])
@pytest.mark.parametrize("layout", ["NCDHW", "channels_last_3d", "NTHWC"])
def test_cutmix_on_video_batches(backend, device, layout):
    """(B, C, T, H, W) as torchvision's CutMix takes it: one box per sample over H and W, the same on every frame."""
    video = torch.rand(5, 2, 3, 7, 6, generator=seeded("cpu", 8))
    if layout == "channels_last_3d":
        video = video.to(memory_format=torch.channels_last_3d)
    elif layout == "NTHWC":
        video = video.permute(0, 2, 3, 4, 1).contiguous()
    x = video.to(device)
    y = make_labels("one_hot", 5, 4, device)
    data_layout, height_dim = ("NHWC", 2) if layout == "NTHWC" else ("NCHW", 3)
    x_mixed, y_mixed, params = fastmix.cutmix(x, y, layout=data_layout, generator=seeded(device), backend=backend)
    assert torch.equal(x_mixed, cutmix_by_slicing(x, params.boxes, params.partner, height_dim))
    assert (params.boxes[:, 1] - params.boxes[:, 0] > 0).any(), "some box is not empty"
    mixer = fastmix.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=4, layout=data_layout,
                          generator=seeded(device), backend=backend)
    x_mixed, _, params = mixer(x, y, return_params=True)
    assert torch.equal(x_mixed, cutmix_by_slicing(x, params.boxes, params.partner, height_dim))


@pytest.mark.parametrize("call", [fastmix.mixup, fastmix.cutmix,
                                  lambda x, y, **kw: fastmix.Mixup(cutmix_alpha=1.0, **kw)(x, y)])
def test_parameter_kernel_asserts_class_indices_on_the_device(device_asserts, call):
    """On the GPU path no host-side check of class indices runs: the parameter kernel asserts each in [0, K) as it
    mixes the labels, and valid ones pass."""
    x = torch.rand(5, 3, 6, 7)
    labels = torch.tensor([0, 1, 2, 3, 1])
    call(x, labels, num_classes=4, generator=seeded("cpu"), backend="triton")
    for bad in (-1, 4):
        wrong = labels.clone()
        wrong[3] = bad
        with pytest.raises(InterpreterError, match="y holds class indices outside"):
            call(x, wrong, num_classes=4, generator=seeded("cpu"), backend="triton")
