"""``fastmix.Mixup`` / ``fastmix.FastCollateMixup`` against timm 1.0.31's formulas, statistics, argument order and
training-loop use (timm itself does not install here)."""

import numpy as np
import pytest
import torch
from scipy import stats

import fastmix
from fastmix.reference import mix as reference
from helpers import SAMPLERS, assert_close, backend_params, make_batch, make_labels, seeded, with_cpu_kernel

MODES = ("batch", "pair", "elem")
BACKENDS = with_cpu_kernel(backend_params())


def timm_mix(x, params, mode):
    """timm's ``_mix_batch/_mix_pair/_mix_elem`` (flip partners, Python loops) for given lam, mode and box."""
    batch = x.size(0)
    lam, boxes, cutmix = params.lam.tolist(), params.boxes.tolist(), params.cutmix.tolist()
    x = x.clone()
    if mode == "batch":
        if lam[0] == 1:
            return x
        if cutmix[0]:
            y0, y1, x0, x1 = boxes[0]
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
            return x
        return x * lam[0] + x.flip(0) * (1 - lam[0])
    x_orig = x.clone()
    for i in range(batch // 2 if mode == "pair" else batch):
        j = batch - 1 - i
        if lam[i] == 1:
            continue
        if cutmix[i]:
            y0, y1, x0, x1 = boxes[i]
            x[i][:, y0:y1, x0:x1] = x_orig[j][:, y0:y1, x0:x1]
            if mode == "pair":
                x[j][:, y0:y1, x0:x1] = x_orig[i][:, y0:y1, x0:x1]
        else:
            x[i] = x_orig[i] * lam[i] + x_orig[j] * (1 - lam[i])
            if mode == "pair":
                x[j] = x_orig[j] * lam[i] + x_orig[i] * (1 - lam[i])
    return x


def timm_target(target, classes, lam, smoothing):
    """timm ``mixup_target``: smoothed one-hot (off = s/K, on = 1 - s + off) mixed with its flip."""
    off, on = smoothing / classes, 1 - smoothing + smoothing / classes
    y1 = torch.full((target.size(0), classes), off, device=target.device).scatter_(1, target[:, None], on)
    return lam[:, None] * y1 + (1 - lam[:, None]) * y1.flip(0)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [2, 8])
def test_output_equals_timms_for_the_drawn_parameters(backend, device, mode, batch):
    x = make_batch("nchw", batch, torch.float32, device)
    y = make_labels("int", batch, 5, device)
    x_before = x.clone()
    mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, mode=mode, num_classes=5,
                          generator=seeded(device, batch), backend=backend)
    kinds = set()
    for _ in range(12):
        x_mixed, y_mixed, params = mixer(x, y, return_params=True)
        assert_close(x_mixed, timm_mix(x, params, mode), torch.float32)
        assert_close(y_mixed, timm_target(y, 5, params.lam, 0.1), torch.float32)
        kinds.update(zip(params.cutmix.tolist(), (params.lam == 1).tolist()))
    assert torch.equal(x, x_before), "x is not mutated"
    assert (True, False) in kinds and (False, False) in kinds, "both mixers ran"


@pytest.mark.parametrize("backend,device", SAMPLERS)
@pytest.mark.parametrize("mode", MODES)
def test_statistics_per_mode(backend, device, mode):
    """Both samplers (torch's, and the parameter kernel's or its C++ twin's) follow timm's statistics in every mode:
    rates within 4 standard deviations. The draws are a call's (``Mixup.sample``), without the mix. Triton's draws
    are its C++ twin's (tests/test_mix.py's parity test), so under the slow interpreter an eighth of them suffices
    there: the twin has the full test's power."""
    draws_per_mode = 300 if mode == "batch" else 4000  # batch mode: one draw per call, so many calls of a small batch
    draws_per_mode //= 8 if backend == "triton" else 1
    batch = 8 if mode == "batch" else draws_per_mode
    x = torch.zeros(batch, 1, 16, 16, device=device)
    mixer = fastmix.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.7, switch_prob=0.4, mode=mode, num_classes=2,
                          generator=seeded(device), backend=backend)
    draws = [mixer.sample(x) for _ in range(draws_per_mode if mode == "batch" else 1)]  # a call's draw, no mix
    lam = torch.cat([d.lam[:1] if mode == "batch" else d.lam for d in draws]).cpu()
    cutmix = torch.cat([d.cutmix[:1] if mode == "batch" else d.cutmix for d in draws]).cpu()
    tolerance = 4 * (0.25 / draws_per_mode) ** 0.5  # 4 standard deviations of a rate (at most 1/2 / sqrt(n))
    assert abs((lam == 1).float().mean().item() - 0.3) < tolerance, "gate: mixed with probability prob"
    assert abs(cutmix.float().mean().item() - 0.7 * 0.4) < tolerance, "cutmix with prob * switch_prob"
    for d in draws:
        if mode == "batch":
            assert (d.lam == d.lam[0]).all() and (d.boxes == d.boxes[0]).all() and (d.cutmix == d.cutmix[0]).all()
        if mode == "pair":  # one draw per pair (i, B-1-i)
            assert torch.equal(d.lam, d.lam.flip(0)) and torch.equal(d.boxes, d.boxes.flip(0))
        assert torch.equal(d.partner.cpu(), torch.arange(batch - 1, -1, -1))
        kept = 1 - reference.box_mask(d.boxes, 16, 16).float().mean(dim=(1, 2))
        assert_close(d.lam[d.cutmix], kept[d.cutmix], torch.float32, "correct_lam: lam is the kept area")
        assert (d.boxes[~d.cutmix] == 0).all(), "no box where CutMix did not run"
    if mode != "batch":
        mixup_lam = lam[(~cutmix) & (lam != 1)].double().numpy()
        assert stats.kstest(mixup_lam, stats.beta(0.8, 0.8).cdf).pvalue > 1e-3  # Beta(0.8, 0.8)


@pytest.mark.parametrize("backend,device", SAMPLERS)
def test_correct_lam_false_keeps_the_beta_draw_but_minmax_always_corrects(backend, device):
    count = 500 if backend == "triton" else 2000  # Triton's draws are its C++ twin's ("cpu")
    x = torch.zeros(count, 1, 16, 16, device=device)  # the draws are a call's (Mixup.sample), without the mix
    raw = fastmix.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False, mode="elem", num_classes=2,
                        generator=seeded(device), backend=backend)
    params = raw.sample(x)
    kept = 1 - reference.box_mask(params.boxes, 16, 16).float().mean(dim=(1, 2))
    assert params.cutmix.all() and (params.lam != kept).float().mean() > 0.9
    assert stats.kstest(params.lam.double().cpu().numpy(), "uniform").pvalue > 1e-3  # Beta(1, 1)
    minmax = fastmix.Mixup(mixup_alpha=0.0, cutmix_minmax=(0.3, 0.6), correct_lam=False, mode="elem",
                           num_classes=2, generator=seeded(device), backend=backend)
    assert minmax.cutmix_alpha == 1.0
    params = minmax.sample(x)
    kept = 1 - reference.box_mask(params.boxes, 16, 16).float().mean(dim=(1, 2))
    assert_close(params.lam, kept, torch.float32)
    sides = (params.boxes[:, 1] - params.boxes[:, 0]).unique().tolist()
    assert sides == list(range(int(16 * 0.3), int(16 * 0.6)))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_odd_batches(backend, device, mode):
    """B = 7 in every mode: the output is timm's for the drawn parameters, and the middle sample pairs with itself."""
    x = make_batch("channels_last", 7, torch.float32, device)
    y = make_labels("soft", 7, 4, device)
    mixer = fastmix.Mixup(cutmix_alpha=1.0, mode=mode, num_classes=4, generator=seeded(device), backend=backend)
    x_mixed, y_mixed, params = mixer(x, y, return_params=True)
    assert_close(x_mixed, timm_mix(x, params, mode), torch.float32)
    smoothed = y * 0.9 + 0.1 / 4
    lam = params.lam[:, None]
    assert_close(y_mixed, lam * smoothed + (1 - lam) * smoothed.flip(0), torch.float32)
    assert x_mixed.is_contiguous(memory_format=torch.channels_last)
    assert_close(x_mixed[3], x[3], torch.float32)  # the middle sample pairs with itself
    assert_close(y_mixed[3], y[3] * 0.9 + 0.1 / 4, torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_uint8_nhwc_batches(backend, device):
    x = (make_batch("nchw", 6, torch.float32, device).permute(0, 2, 3, 1) * 60 + 128).clamp(0, 255).to(torch.uint8)
    mixer = fastmix.Mixup(cutmix_alpha=1.0, mode="elem", num_classes=3, layout="NHWC", generator=seeded(device),
                          backend=backend)
    x_mixed, _, params = mixer(x, torch.tensor([0, 1, 2, 0, 1, 2], device=device), return_params=True)
    nchw = timm_mix(x.permute(0, 3, 1, 2).float(), params, "elem")
    assert x_mixed.dtype == torch.uint8
    assert torch.equal(x_mixed.permute(0, 3, 1, 2), reference.store(nchw, torch.uint8))


def test_disabled_mixer_returns_x_and_smoothed_targets():
    x = torch.randn(4, 3, 8, 8)
    mixer = fastmix.Mixup(num_classes=3)
    mixer.mixup_enabled = False
    x_out, y_out = mixer(x, torch.tensor([0, 1, 2, 0]))
    assert x_out is x
    assert_close(y_out[0], torch.tensor([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]), torch.float32)


def test_inplace_and_seeded_reproducibility():
    x = make_batch("nchw", 6, torch.float32, "cpu")
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    first = fastmix.Mixup(cutmix_alpha=1.0, mode="elem", num_classes=3, generator=seeded("cpu", 1))(x, y)
    again = fastmix.Mixup(cutmix_alpha=1.0, mode="elem", num_classes=3, generator=seeded("cpu", 1))(x, y)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    target = x.clone()
    mixer = fastmix.Mixup(cutmix_alpha=1.0, mode="elem", num_classes=3, inplace=True, generator=seeded("cpu", 1))
    out = mixer(target, y)
    assert out[0] is target and torch.equal(target, first[0])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"mode": "half"}, ValueError, "mode must be one of"),
        ({"prob": 1.5}, ValueError, r"prob must be in \[0, 1\]"),
        ({"prob": -0.1}, ValueError, r"prob must be in \[0, 1\]"),
        ({"switch_prob": 2.0}, ValueError, r"switch_prob must be in \[0, 1\]"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing must be"),
        ({"cutmix_minmax": (0.6, 0.3)}, ValueError, "minmax must satisfy"),
        ({"cutmix_minmax": (0.1, 0.3, 0.5)}, ValueError, "minmax must be None or a pair"),
        ({"mixup_alpha": -1.0}, ValueError, "mixup_alpha must be"),
        ({"cutmix_alpha": float("inf")}, ValueError, "cutmix_alpha must be"),
        ({"mixup_alpha": 0.0}, ValueError, "must enable a mixer"),
        ({"layout": "HWC"}, ValueError, "layout must be"),
        ({"prob": "1"}, TypeError, "prob must be a real number"),
        ({"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        ({"num_classes": 10.0}, TypeError, "num_classes must be an int"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastmix.Mixup(**kwargs)


def test_bad_call_inputs():
    mixer = fastmix.Mixup(cutmix_alpha=1.0, num_classes=4)
    x = torch.randn(6, 3, 4, 4)
    with pytest.raises(ValueError, match="y must have the batch size"):
        mixer(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be a 4-D image batch"):
        mixer(x[:, 0], torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes=4"):
        mixer(x, torch.rand(6, 5))


def test_fast_collate_mixes_uint8_samples_like_mixup():
    """timm FastCollateMixup: (uint8 CHW, int label) samples in, a mixed uint8 batch and float targets out."""
    images = [(torch.arange(3 * 8 * 6) * (i + 3) % 256).to(torch.uint8).view(3, 8, 6) for i in range(5)]
    samples = [(image.numpy() if i % 2 else image, i % 3) for i, image in enumerate(images)]
    kwargs = dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=3, backend="reference")
    collate = fastmix.FastCollateMixup(generator=seeded("cpu", 2), **kwargs)
    x, target = collate(samples)
    expected = fastmix.Mixup(generator=seeded("cpu", 2), **kwargs)(torch.stack(images), torch.tensor([0, 1, 2, 0, 1]))
    assert x.dtype == torch.uint8 and torch.equal(x, expected[0])
    assert target.dtype == torch.float32 and torch.equal(target, expected[1])
    with pytest.raises(TypeError, match="uint8 images"):
        collate([(image.float(), 0) for image in images])


def smoothed_multi_hot(target, smoothing):
    """timm 1.0.31 ``mixup_target(multi_label=True)``: every label moves towards 0.5, ``y (1 - s) + s / 2``."""
    return target.float() * (1 - smoothing) + 0.5 * smoothing


def test_arguments_in_timms_positional_order():
    """timm 1.0.31: (mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode, correct_lam,
    label_smoothing, num_classes, multi_label), the same for FastCollateMixup."""
    for cls in (fastmix.Mixup, fastmix.FastCollateMixup):
        mixer = cls(0.8, 0.5, (0.2, 0.6), 0.9, 0.4, "pair", False, 0.2, 7, True)
        assert (mixer.mixup_alpha, mixer.cutmix_alpha, mixer.cutmix_minmax, mixer.mix_prob, mixer.switch_prob,
                mixer.mode, mixer.correct_lam, mixer.label_smoothing, mixer.num_classes, mixer.multi_label) == (
                    0.8, 1.0, (0.2, 0.6), 0.9, 0.4, "pair", False, 0.2, 7, True)
        assert mixer.mixup_enabled is True
        default = cls()
        assert (default.mixup_alpha, default.cutmix_alpha, default.label_smoothing, default.num_classes,
                default.multi_label) == (1.0, 0.0, 0.1, 1000, False)
    with pytest.raises(TypeError):
        fastmix.Mixup(0.8, 0.5, None, 0.9, 0.4, "pair", False, 0.2, 7, True, "NHWC")  # layout is keyword-only


@pytest.mark.parametrize("mode", MODES)
def test_multi_label_targets_are_timms(mode):
    x = make_batch("nchw", 6, torch.float32, "cpu")
    target = (torch.rand(6, 5, generator=seeded("cpu", 3)) < 0.4).to(torch.int64)
    mixer = fastmix.Mixup(0.8, 1.0, None, 1.0, 0.5, mode, True, 0.2, 5, True, generator=seeded("cpu"))
    x_mixed, y_mixed, params = mixer(x, target, return_params=True)
    y1 = smoothed_multi_hot(target, 0.2)
    assert_close(y_mixed, params.lam[:, None] * y1 + (1 - params.lam[:, None]) * y1.flip(0), torch.float32)
    assert_close(x_mixed, timm_mix(x, params, mode), torch.float32)
    mixer.mixup_enabled = False
    unmixed = mixer(x, target.bool())[1]
    assert_close(unmixed, torch.where(target.bool(), 0.9, 0.1), torch.float32, "0 -> s/2, 1 -> 1 - s/2")
    with pytest.raises(ValueError, match=r"multi_label=True takes dense labels y of shape \(B, K\)"):
        mixer(x, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match="y has 4 classes but num_classes=5"):
        mixer(x, torch.zeros(6, 4))


def uint8_samples(count, seed=0):
    """``count`` (uint8 CHW image, int label) samples, numpy arrays and tensors alternating, labels all distinct."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, 8, 6), generator=g, dtype=torch.uint8) for _ in range(count)]
    return [(image.numpy() if i % 2 else image, i) for i, image in enumerate(images)]


@pytest.mark.parametrize("batch", [12, 13])
def test_fast_collate_half_mode(batch):
    """timm's "half": elem parameters for the first B/2 samples, each mixed with sample B-1-i; B/2 samples and
    targets come back, the targets mixed from the full batch's labels."""
    samples = uint8_samples(batch)
    args = (0.8, 1.0, None, 1.0, 0.5, "half", True, 0.1, batch)
    x, target = fastmix.FastCollateMixup(*args, generator=seeded("cpu", 4))(samples)
    images = torch.stack([torch.as_tensor(image) for image, _ in samples])
    params = fastmix.FastCollateMixup(*args, generator=seeded("cpu", 4)).sample(images)
    half = batch // 2
    assert x.shape == (half, 3, 8, 6) and x.dtype == torch.uint8 and target.shape == (half, batch)
    assert (params.lam[half:] == 1).all() and not params.cutmix[half:].any()
    assert (params.lam[:half] < 1).all() and params.cutmix[:half].any() and not params.cutmix[:half].all()
    expected = reference.store(timm_mix(images.float(), params, "elem"), torch.uint8)[:half]
    assert torch.equal(x, expected)
    assert_close(target, timm_target(torch.arange(batch), batch, params.lam, 0.1)[:half], torch.float32)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["numpy and tensors", "tensors"])
def test_fast_collate_mixes_a_new_batch_and_leaves_the_samples_alone(backend, mode, kind):
    """The collate mixes its own stack of the samples in place: exactly Mixup's out-of-place result on that stack
    (flip partners: every pair a cycle the in-place order must break), and the samples' memory is never written."""
    samples = uint8_samples(7)
    if kind == "tensors":
        samples = [(torch.as_tensor(image), label) for image, label in samples]
    originals = [torch.as_tensor(image).clone() for image, _ in samples]
    kwargs = dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, num_classes=7, backend=backend)
    x, target = fastmix.FastCollateMixup(generator=seeded("cpu", 5), **kwargs)(samples)
    images = torch.stack(originals)
    expected = fastmix.Mixup(generator=seeded("cpu", 5), **kwargs)(images, torch.arange(7))
    assert torch.equal(x, expected[0]) and torch.equal(target, expected[1])
    assert not torch.equal(x, images)  # something was mixed
    assert all(torch.equal(torch.as_tensor(image), original) for (image, _), original in zip(samples, originals))


def test_fast_collate_mixup_enabled_and_multi_label():
    samples = uint8_samples(4)
    images = torch.stack([torch.as_tensor(image) for image, _ in samples])
    collate = fastmix.FastCollateMixup(num_classes=4, generator=seeded("cpu"))
    collate.mixup_enabled = False  # what timm's PrefetchLoader.mixup_enabled setter writes
    x, target = collate(samples)
    assert torch.equal(x, images)
    assert_close(target, timm_target(torch.arange(4), 4, torch.ones(4), 0.1), torch.float32)
    multi_hot = [np.array([1, 0, 1]), np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([0, 1, 0])]
    collate = fastmix.FastCollateMixup(cutmix_alpha=1.0, mode="pair", num_classes=3, multi_label=True,
                                       generator=seeded("cpu"))
    labelled = [(image, label) for (image, _), label in zip(samples, multi_hot)]
    x, target = collate(labelled)
    params = fastmix.FastCollateMixup(cutmix_alpha=1.0, mode="pair", num_classes=3, multi_label=True,
                                      generator=seeded("cpu")).sample(images)
    y1 = smoothed_multi_hot(torch.tensor(np.stack(multi_hot)), 0.1)
    assert_close(target, params.lam[:, None] * y1 + (1 - params.lam[:, None]) * y1.flip(0), torch.float32)


class LabelledImages(torch.utils.data.Dataset):
    """uint8 CHW images (numpy, as timm's datasets give them to a fast-collate loader) with labels i % 4."""

    def __init__(self, count):
        self.images = torch.randint(0, 256, (count, 3, 32, 32), generator=seeded("cpu", 9), dtype=torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].numpy(), index % 4


def mixed_rows(target, num_classes, smoothing):
    """Rows of a target batch that are not a smoothed one-hot (every batch's partners hold other labels)."""
    on = 1 - smoothing + smoothing / num_classes
    return int((target.max(dim=1).values < on - 1e-6).sum())


def test_timm_training_loop_with_mixup_off_epoch():
    """timm's train.py shape: ``mixup_args`` by keyword into FastCollateMixup (the prefetcher path) and, in timm's
    positional order, into Mixup (the plain path); from ``--mixup-off-epoch 1`` on, ``mixup_enabled = False``."""
    mixup_args = dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                      mode="batch", label_smoothing=0.1, num_classes=4)
    collate = fastmix.FastCollateMixup(**mixup_args, generator=seeded("cpu", 1))
    loader = torch.utils.data.DataLoader(LabelledImages(40), batch_size=4, collate_fn=collate, drop_last=True)
    mixup_fn = fastmix.Mixup(0.8, 1.0, None, 1.0, 0.5, "elem", True, 0.1, 4, generator=seeded("cpu", 2))
    plain = torch.utils.data.DataLoader(LabelledImages(40), batch_size=4, drop_last=True)
    mixed_batches, mixed_plain = [], []
    for epoch in range(3):
        if epoch >= 1:
            loader.collate_fn.mixup_enabled = False
            mixup_fn.mixup_enabled = False
        mixed_batches.append(sum(mixed_rows(target, 4, 0.1) > 0 for _, target in loader))
        count = 0
        for images, labels in plain:
            _, target = mixup_fn(images.float() / 255, labels)
            count += mixed_rows(target, 4, 0.1) > 0
        mixed_plain.append(count)
    assert mixed_batches == [10, 0, 0]
    assert mixed_plain == [10, 0, 0]
