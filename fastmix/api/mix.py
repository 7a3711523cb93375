"""Per-sample Mixup and CutMix (CutMix: LUMix paper, eq. 1-2), parameters drawn on the device.

``x_mixed[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]]`` (Mixup) or ``x[partner[i]]`` pasted into ``x[i]`` inside
``boxes[i]`` (CutMix), and ``y_mixed[i] = lam[i] y[i] + (1 - lam[i]) y[partner[i]]`` (eq. 2): ``lam`` weighs a
sample's own label, for CutMix its kept-area fraction. One kernel launch mixes the whole batch.

Where the parameters come from: on the kernel backends ("triton", "cuda") one parameter kernel
(``fastmix::mix_params``) draws them from a seed drawn on the device, and mixes the labels; a call is then three
launches (seed, parameters and labels, mix), with no host sync. On "cpu" the kernel's C++ twin draws the same
numbers from the same seed (one random stream for the kernel backends). The reference draws them with torch's
sampler (``sample``), by the same rules.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastmix import _backend, _checks, _random
from fastmix._dtypes import compute_dtype
from fastmix.ops import mix as mix_ops

PAIRINGS = ("perm", "flip")
LAYOUTS = {"NCHW": (2, 3), "NHWC": (1, 2)}


class MixParams(NamedTuple):
    """The mixing parameters of a batch, enough to reproduce or log it (all on x's device).

    lam: (B,) float32, the weight of sample i's own label (CutMix: its kept-area fraction).
    partner: (B,) int64, the sample mixed into sample i.
    boxes: (B, 4) int32 ``(y0, y1, x0, x1)``, half-open, the region of sample i taken from its partner; empty
        ``(0, 0, 0, 0)`` for samples mixed by Mixup.
    cutmix: (B,) bool, True where sample i was mixed by CutMix.

    Where one draw serves the whole batch (``per_sample=False``, timm's "batch" mode) every row holds it (expanded
    views of it on the reference backend).
    """

    lam: torch.Tensor
    partner: torch.Tensor
    boxes: torch.Tensor
    cutmix: torch.Tensor


def check_minmax(minmax) -> tuple[float, float] | None:
    if minmax is None:
        return None
    if not isinstance(minmax, (tuple, list)) or len(minmax) != 2:
        raise ValueError(f"minmax must be None or a pair (lo, hi), got {minmax!r}")
    lo, hi = (_checks.check_real("minmax", v, 0.0, 1.0) for v in minmax)
    if not 0.0 < lo < hi:
        raise ValueError(f"minmax must satisfy 0 < lo < hi <= 1, got {tuple(minmax)}")
    return lo, hi


def check_pairing(pairing) -> str:
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    return pairing


def check_inplace(x: torch.Tensor) -> None:
    """``inplace=True`` needs an x that can take the result: no grad, and no two elements sharing memory."""
    if x.requires_grad:
        raise ValueError("inplace=True cannot write into an x that requires grad; use inplace=False")
    if x.is_contiguous():  # the common case (a collated batch): no two elements share memory
        return
    extent = 0  # the largest offset reachable through the dims seen so far (innermost first)
    dims = [(size, stride) for size, stride in zip(x.shape, x.stride()) if size > 1] if x.numel() else []
    for size, stride in sorted(dims, key=lambda dim: dim[1]):
        if stride <= extent:
            raise ValueError(f"inplace=True cannot write into an x whose elements share memory (an expanded or "
                             f"overlapping view: shape {tuple(x.shape)}, strides {x.stride()}); use inplace=False")
        extent += (size - 1) * stride


def spatial_dims(x: torch.Tensor, layout) -> tuple[int, int]:
    """(height_dim, width_dim) for CutMix: the last two dims of an image (B, C, H, W) or video (B, C, T, H, W) batch
    in "NCHW" (any memory format), the two before the channels of (B, H, W, C) or (B, T, H, W, C) in "NHWC"."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be a 4-D image batch or a 5-D video batch ({layout}) for CutMix, "
                         f"got shape {tuple(x.shape)}")
    height_dim, width_dim = (dim + x.dim() - 4 for dim in LAYOUTS[layout])
    if x.size(height_dim) == 0 or x.size(width_dim) == 0:
        raise ValueError(f"x must have a height and width >= 1 for CutMix (no box fits in a zero-size side), "
                         f"got shape {tuple(x.shape)}")
    return height_dim, width_dim


def box_draws(minmax) -> int:
    """The uniforms ``sample_boxes`` takes per box: a centre (y, x), or with ``minmax`` two sides and an origin."""
    return 2 if minmax is None else 4


def sample_boxes(lam: torch.Tensor, height: int, width: int, minmax, generator,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One box per lam, as timm 1.0.31 draws them; (N, 4) int32 ``(y0, y1, x0, x1)``.

    Without ``minmax`` (timm ``rand_bbox``): sides ``cut_h = int(H sqrt(1 - lam))``, ``cut_w = int(W sqrt(1 - lam))``
    (in float64), centre ``(cy, cx)`` uniform over the pixels, ``y0 = clip(cy - cut_h // 2)``,
    ``y1 = clip(cy + (cut_h + 1) // 2)`` and the same for x, clipped to the image: an unclipped box has exactly the
    drawn sides (older timm releases used ``cut // 2`` on both ends, one pixel short for odd sides). With
    ``minmax = (lo, hi)`` (timm ``rand_bbox_minmax``): sides uniform integers in ``[int(S lo), int(S hi))`` drawn
    independently, origin uniform over every position that keeps the box inside.
    ``uniform``: (N, ``box_draws(minmax)``) float64 uniforms in [0, 1) taken from the caller's one draw; drawn here
    otherwise. The image sides are built on the device (``linspace``), so nothing is copied from the host.
    """
    count = lam.numel()
    if uniform is None:
        uniform = torch.rand((count, box_draws(minmax)), generator=generator, device=lam.device, dtype=torch.float64)
    sides = torch.linspace(height, width, 2, dtype=torch.float64, device=lam.device)  # exactly (H, W)
    if minmax is None:
        cut = torch.floor(sides * torch.sqrt(1.0 - lam.double())[:, None])
        start = torch.floor(uniform * sides) - torch.div(cut, 2, rounding_mode="floor")  # centre - cut // 2
        low, high = start.clamp_min(0), torch.minimum(start + cut, sides)  # start + cut = centre + (cut + 1) // 2
    else:
        lo, hi = minmax
        low_h, low_w = int(height * lo), int(width * lo)
        span_h, span_w = max(int(height * hi), low_h + 1) - low_h, max(int(width * hi), low_w + 1) - low_w
        lows = torch.linspace(low_h, low_w, 2, dtype=torch.float64, device=lam.device)
        spans = torch.linspace(span_h, span_w, 2, dtype=torch.float64, device=lam.device)
        cut = torch.floor(uniform[:, :2] * spans) + lows
        low = torch.floor(uniform[:, 2:] * (sides - cut + 1))
        high = low + cut
    return torch.stack((low, high), dim=2).view(count, 4).to(torch.int32)


def kept_fraction(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``1 - box area / (H W)`` (CutMix eq. 2 with the clipped box), float32."""
    area = (boxes[:, 1::2] - boxes[:, 0::2]).prod(dim=1)
    return (1.0 - area.double() / (height * width)).float()


def smooth(labels: torch.Tensor, smoothing: float, multi_label: bool = False) -> torch.Tensor:
    """timm's smoothing: ``y (1 - s) + s / K`` (for one-hot labels ``off = s/K``, ``on = 1 - s + off``), or with
    ``multi_label`` every label towards 0.5: ``y (1 - s) + s / 2`` (1 -> 1 - s/2, 0 -> s/2)."""
    if smoothing == 0.0:
        return labels
    return labels * (1.0 - smoothing) + smoothing * (0.5 if multi_label else 1.0 / labels.size(1))


def mix_labels(labels: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``lam y + (1 - lam) y[partner]`` (eq. 2), as one ``lerp``."""
    return torch.lerp(labels[partner], labels, lam.to(labels.dtype)[:, None])


class Sampling(NamedTuple):
    """What a call draws, as timm's ``Mixup`` describes it: ``draws`` "batch" (one draw for the batch), "pair" (one
    per pair (i, B-1-i)), "elem" (one per sample) or "half" (one per sample of the first B // 2, the rest unmixed);
    partners a random permutation (``permute``) or the flipped batch; a mixer is on when its alpha is > 0; ``mix_prob``
    the chance a draw mixes at all; ``switch_prob`` the chance of CutMix when both mixers are on; CutMix boxes from
    ``minmax`` or from lam, lam corrected to the kept fraction with ``correct_lam`` (always with ``minmax``)."""

    draws: str
    permute: bool
    mixup_alpha: float
    cutmix_alpha: float
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    minmax: tuple[float, float] | None = None
    correct_lam: bool = True
    layout: str = "NCHW"


class Labels(NamedTuple):
    """Checked labels: ``y`` (int class indices (B,) or dense (B, K)), ``classes`` K, the smoothing ``s`` and whether
    they are multi-label (smoothed towards 0.5)."""

    y: torch.Tensor
    classes: int
    smoothing: float
    multi_label: bool


def draw_count(draws: str, batch: int) -> int:
    """How many independent draws a batch takes (``Sampling.draws``)."""
    return {"batch": 1, "pair": (batch + 1) // 2, "elem": batch, "half": batch // 2}[draws]


def per_sample(draws: str, values: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Each sample's row of ``values`` (``lam, boxes, cutmix``): row 0 for all ("batch"), row min(i, B-1-i)
    ("pair"), row i ("elem"), row i for the first B // 2 and unmixed rows (lam 1, no box) for the rest ("half")."""
    if draws == "batch":
        return tuple(v.expand(batch, *v.shape[1:]) for v in values)
    if draws == "pair":
        rows = torch.arange(batch, device=values[0].device)
        rows = torch.minimum(rows, rows.flip(0))
        return tuple(v[rows] for v in values)
    if draws == "half":
        lam, boxes, cutmix = values
        rest = batch - lam.size(0)
        return (torch.cat([lam, lam.new_ones(rest)]), torch.cat([boxes, boxes.new_zeros(rest, 4)]),
                torch.cat([cutmix, cutmix.new_zeros(rest)]))
    return values


def sample(x: torch.Tensor, sampling: Sampling, generator) -> MixParams:
    """Draws one batch's parameters with torch's sampler (the reference backend) from one
    ``torch.rand`` (gate, switch, boxes, Beta boosts), one Gamma draw (both Beta distributions) and, with
    ``permute``, one ``torch.randperm``."""
    batch, device = x.size(0), x.device
    count = draw_count(sampling.draws, batch)
    alphas = [alpha for alpha in (sampling.cutmix_alpha, sampling.mixup_alpha) if alpha > 0]  # CutMix's first
    cutmix_on = sampling.cutmix_alpha > 0
    if cutmix_on:
        height_dim, width_dim = spatial_dims(x, sampling.layout)
        height, width = x.size(height_dim), x.size(width_dim)
    first_box_draw = 2  # rows 0 and 1: the gate and the mixer switch
    first_beta_draw = first_box_draw + (box_draws(sampling.minmax) if cutmix_on else 0)
    uniform = torch.rand((first_beta_draw + 2 * len(alphas), count), dtype=torch.float64, device=device,
                         generator=generator)
    lams = _random.sample_betas(alphas, count, device, generator,
                                uniform[first_beta_draw:].view(len(alphas), 2, count))
    mixed = uniform[0] < sampling.mix_prob
    if len(alphas) == 2:
        cutmix = uniform[1] < sampling.switch_prob
        lam = torch.where(cutmix, lams[0], lams[1])
        cutmix = cutmix & mixed
    else:
        lam = lams[0]
        cutmix = mixed if cutmix_on else torch.zeros_like(mixed)
    if cutmix_on:
        boxes = sample_boxes(lam, height, width, sampling.minmax, generator,
                             uniform[first_box_draw:first_beta_draw].T) * cutmix[:, None]
        if sampling.correct_lam or sampling.minmax is not None:
            lam = torch.where(cutmix, kept_fraction(boxes, height, width), lam)
    else:
        boxes = torch.zeros((count, 4), dtype=torch.int32, device=device)
    lam = torch.where(mixed, lam, 1.0).float()
    lam, boxes, cutmix = per_sample(sampling.draws, (lam, boxes, cutmix), batch)
    if sampling.permute:
        partner = torch.randperm(batch, generator=generator, device=device)
    else:
        partner = torch.arange(batch - 1, -1, -1, device=device)
    return MixParams(lam, partner, boxes, cutmix)


def samples_in_kernel(backend: str, device: torch.device) -> bool:
    """Whether a call on ``backend`` draws its parameters in the Triton parameter kernel: on the kernel backends,
    where Triton runs on ``device``."""
    return backend in ("triton", "cuda") and not _backend.unavailable_reason("triton", device.type)


def box_range(minmax, height: int, width: int) -> list[int] | None:
    """``(low_h, span_h, low_w, span_w)``: minmax box sides are ``low + randint(span)`` (``sample_boxes``)."""
    if minmax is None:
        return None
    lo, hi = minmax
    low_h, low_w = int(height * lo), int(width * lo)
    return [low_h, max(int(height * hi), low_h + 1) - low_h, low_w, max(int(width * hi), low_w + 1) - low_w]


def float_labels(labels: Labels) -> torch.Tensor:
    """The smoothed float (B, K) labels (the torch path of ``mix_batch``)."""
    y = labels.y
    y = y.float() if labels.multi_label and not y.is_floating_point() else y
    dense = _checks.labels_to_float(y, y.size(0), y.device, labels.classes)
    return smooth(dense, labels.smoothing, labels.multi_label)


def draw(x: torch.Tensor, labels: Labels | None, sampling: Sampling, generator, backend: str,
         height_dim: int, width_dim: int):
    """One call's parameters: ``(params, weight, inverse, y_mixed)``, the weight and partner inverse the mix kernel
    takes and the mixed labels (None without ``labels``); ``height_dim, width_dim`` from ``spatial_dims`` for
    CutMix (else -1, -1). On "cpu" and the kernel backends the parameter call
    (``fastmix::mix_params``: the Triton kernel or its C++ twin) draws them from one seed and mixes the labels;
    the reference draws them with torch's sampler (``sample``)."""
    y = None if labels is None else labels.y
    if backend == "cpu" or samples_in_kernel(backend, x.device):
        kernel_labels = None if y is None or y.requires_grad else y  # gradients to y: labels mixed by torch ops
        if backend != "cpu" and kernel_labels is not None and not y.is_floating_point() and y.dim() == 1:
            check_classes_on_cpu(y, labels.classes)  # the C++ parameter call checks them itself
        height = x.size(height_dim) if height_dim >= 0 else 1
        width = x.size(width_dim) if width_dim >= 0 else 1
        classes, smoothing, multi_label = (1, 0.0, False) if labels is None else labels[1:]
        lam, weight, boxes, partner, inverse, cutmix, y_mixed = mix_ops.mix_params_call(
            _random.draw_seed(generator, x.device), kernel_labels, classes, smoothing, multi_label, x.size(0), height,
            width, sampling.draws, sampling.permute, sampling.mixup_alpha, sampling.cutmix_alpha, sampling.mix_prob,
            sampling.switch_prob, box_range(sampling.minmax, height, width), sampling.correct_lam,
            compute_dtype(x.dtype), backend)
        params = MixParams(lam, partner, boxes, cutmix)
        if kernel_labels is None:
            y_mixed = None if labels is None else mix_labels(float_labels(labels), lam, partner)
        return params, weight, inverse, y_mixed
    params = sample(x, sampling, generator)
    weight = torch.where(params.cutmix, 1.0, params.lam).to(compute_dtype(x.dtype))
    y_mixed = None if labels is None else mix_labels(float_labels(labels), params.lam, params.partner)
    return params, weight, torch.argsort(params.partner), y_mixed


def mix_batch(x: torch.Tensor, labels: Labels, sampling: Sampling, generator, backend: str, inplace: bool):
    """Checks x's spatial dims (CutMix) before anything is drawn, draws the parameters (``draw``), mixes x in one
    launch (``fastmix::mix_pairs_unchecked``; CutMix samples paste their partner's box with weight 1 outside it, the
    others interpolate with lam over an empty box) and the labels; returns ``(x_mixed, y_mixed, params)``."""
    height_dim, width_dim = spatial_dims(x, sampling.layout) if sampling.cutmix_alpha > 0 else (-1, -1)
    params, weight, inverse, y_mixed = draw(x, labels, sampling, generator, backend, height_dim, width_dim)
    boxes = params.boxes.contiguous()  # expanded rows of one draw ("batch" mode) on the reference
    if inplace:
        mix_ops.mix_pairs_inplace_call(x, weight, boxes, params.partner, height_dim, width_dim, backend)
        return x, y_mixed, params
    x_mixed = mix_ops.mix_pairs_unchecked_call(x, weight, boxes, params.partner, inverse, height_dim, width_dim,
                                                backend, False)
    return x_mixed, y_mixed, params


def check_classes_on_cpu(y: torch.Tensor, classes: int) -> None:
    """Class indices in [0, K) for CPU tensors in eager mode on the parameter kernel's path, a ValueError: the
    Triton interpreter runs no device asserts. On a GPU the kernel's compiled-in device assert checks them, as
    ``torch._assert_async`` would, with no launch of its own."""
    if _checks.host_reads_values(y):
        _checks.check_on_device(((y >= 0) & (y < classes)).all(), f"y holds class indices outside [0, {classes})")


def prepare(x, y, num_classes, label_smoothing, generator, backend, inplace, multi_label=False):
    """Checks shared by mixup, cutmix and Mixup; returns (``Labels``, backend name).

    ``multi_label`` (timm's argument): y must be dense (B, K) multi-hot labels (bool, int or float), smoothed
    towards 0.5. On CPU tensors the C++ kernel (``fastmix::mix_pairs``) is the default for Mixup and CutMix: on a
    2-core Xeon, 1 thread, fp32 (32, 3, 224, 224), the op takes 1.5x (Mixup) and 1.25x (CutMix) the time of
    ``x.clone()``, the reference 12x and 19x."""
    _checks.check_batch_input("x", x, allow_uint8=True)
    if _checks.check_bool("multi_label", multi_label):
        _checks.check_tensor("y", y)
        if y.dim() != 2:
            raise ValueError(f"multi_label=True takes dense labels y of shape (B, K), got shape {tuple(y.shape)}")
    classes = _checks.check_labels(y, x.size(0), x.device, num_classes, dense=multi_label)
    smoothing = _checks.check_real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    _checks.check_generator(generator, x.device)
    if _checks.check_bool("inplace", inplace):
        check_inplace(x)
    name = _backend.resolve(backend, x.device, cpu_default="cpu", supported=mix_ops.BACKENDS)
    return Labels(y, classes, smoothing, multi_label), name


def mixup(x: torch.Tensor, y: torch.Tensor, *, alpha: float = 1.0, per_sample: bool = True, pairing: str = "perm",
          num_classes: int | None = None, label_smoothing: float = 0.0, multi_label: bool = False,
          generator: torch.Generator | None = None, inplace: bool = False, backend: str | None = None):
    """Mixup with per-sample ``lam ~ Beta(alpha, alpha)``: returns ``(x_mixed, y_mixed, params)``.

    Args:
        x: (B, ...) fp32/fp16/bf16/fp64 or uint8 (math in fp32, rounded half to even and saturated), any trailing
            shape and memory format; the output keeps x's dtype and dimension order.
        y: int class indices (B,) with ``num_classes``, or float one-hot/soft/multi-hot labels (B, K).
        per_sample: one lam per sample (True) or one for the whole batch (False, timm's "batch" mode).
        pairing: "perm" (a random permutation) or "flip" (sample i with B-1-i, as timm). B=1 mixes with itself.
        label_smoothing: s in [0, 1); labels become ``y (1 - s) + s / K`` before mixing (timm's on/off values for
            int labels; the same affine map for float labels).
        multi_label: y holds dense (B, K) multi-hot labels (bool/int/float), smoothed to ``y (1 - s) + s / 2`` (timm).
        generator: the torch.Generator (on x's device) every parameter is drawn from; on the kernel backends and
            "cpu" it gives one 64-bit seed per call (one ``torch.randint`` on the device), from which the parameter
            kernel (or its C++ twin) draws everything.
        inplace: write the result into x (x must not require grad, nor be an expanded or self-overlapping view).
            Otherwise x is never modified.
        backend: "cuda", "triton", "reference", "cpu" (the C++ kernel with OpenMP; the default for CPU tensors when
            fastmix._C is built), or None for the default.

    Returns:
        ``x_mixed``, ``y_mixed`` float32 (B, K) (float64 for float64 labels), and ``MixParams``. Gradients flow to
        x (both partners) and to float y.
    """
    labels, name = prepare(x, y, num_classes, label_smoothing, generator, backend, inplace, multi_label=multi_label)
    sampling = Sampling("elem" if _checks.check_bool("per_sample", per_sample) else "batch",
                        check_pairing(pairing) == "perm", _checks.check_positive_finite("alpha", alpha), 0.0)
    return mix_batch(x, labels, sampling, generator, name, inplace)


def cutmix(x: torch.Tensor, y: torch.Tensor, *, alpha: float = 1.0, minmax=None, correct_lam: bool = True,
           per_sample: bool = True, pairing: str = "perm", num_classes: int | None = None,
           label_smoothing: float = 0.0, multi_label: bool = False, layout: str = "NCHW",
           generator: torch.Generator | None = None, inplace: bool = False, backend: str | None = None):
    """CutMix (LUMix paper, eq. 1-2) with one box per sample: returns ``(x_mixed, y_mixed, params)``.

    Each box is drawn as timm 1.0.31 draws it (``sample_boxes``) from ``lam ~ Beta(alpha, alpha)``, or from
    ``minmax``; ``x[partner[i]]`` is pasted into ``x[i]`` inside it. With ``correct_lam`` (always with ``minmax``,
    as timm) ``lam = 1 - box area / (H W)`` after clipping: the exact kept fraction of sample i.

    Args:
        x: an image batch (B, C, H, W) or a video batch (B, C, T, H, W) (one box per sample, the same on every
            frame, as torchvision's CutMix), float or uint8 (copied exactly), in ``layout``: "NCHW" means channels
            before the spatial dims in any memory format (channels_last included), "NHWC" means (B, H, W, C) or
            (B, T, H, W, C) as a uint8 loader produces. H and W must be >= 1 (a zero-size side raises a ValueError).
        minmax: None or ``(lo, hi)`` with 0 < lo < hi <= 1: box sides drawn as fractions of the image sides.
        per_sample: one box (and lam) per sample, or one shared by the batch (False, timm's "batch" mode).
        Other arguments as in ``fastmix.mixup``.

    Returns:
        ``x_mixed`` like x, ``y_mixed`` float32 (B, K), ``MixParams``. Gradient: each output element's gradient goes
        to the one input element it was copied from.
    """
    labels, name = prepare(x, y, num_classes, label_smoothing, generator, backend, inplace, multi_label=multi_label)
    sampling = Sampling("elem" if _checks.check_bool("per_sample", per_sample) else "batch",
                        check_pairing(pairing) == "perm", 0.0, _checks.check_positive_finite("alpha", alpha),
                        minmax=check_minmax(minmax), correct_lam=_checks.check_bool("correct_lam", correct_lam),
                        layout=layout)
    return mix_batch(x, labels, sampling, generator, name, inplace)
