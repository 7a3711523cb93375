"""Per-sample Mixup and CutMix (CutMix: LUMix paper, eq. 1-2), parameters drawn on the device.

``x_mixed[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]]`` (Mixup) or ``x[partner[i]]`` pasted into ``x[i]`` inside
``boxes[i]`` (CutMix), and ``y_mixed[i] = lam[i] y[i] + (1 - lam[i]) y[partner[i]]`` (eq. 2): ``lam`` weighs a
sample's own label, for CutMix its kept-area fraction. One kernel launch mixes the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastmix import _backend, _checks, _random
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

    Where one draw serves the whole batch (``per_sample=False``, timm's "batch" mode) these are expanded views of it.
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


def sample_partner(batch: int, pairing: str, generator, device) -> torch.Tensor:
    """A uniform random permutation ("perm"; a sample may draw itself) or ``B - 1 - i`` ("flip", as timm pairs)."""
    if pairing == "perm":
        return torch.randperm(batch, generator=generator, device=device)
    return torch.arange(batch - 1, -1, -1, device=device)


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


def apply(x: torch.Tensor, labels: torch.Tensor, params: MixParams, height_dim: int, width_dim: int, backend: str,
          inplace: bool):
    """Mixes x and the float labels with ``params`` in one launch (``fastmix::mix_pairs``): CutMix samples paste
    their partner's box (weight 1 outside it), the others interpolate with lam over an empty box."""
    weight = torch.where(params.cutmix, 1.0, params.lam)
    args = (weight, params.boxes, params.partner, height_dim, width_dim, backend)
    if inplace:
        mix_ops.mix_pairs_inplace(x, *args)
        x_mixed = x
    else:
        x_mixed = mix_ops.mix_pairs(x, *args)
    return x_mixed, mix_labels(labels, params.lam, params.partner)


def prepare(x, y, num_classes, label_smoothing, generator, backend, inplace, multi_label=False):
    """Checks shared by mixup and cutmix; returns (smoothed float labels, backend name).

    ``multi_label`` (timm's argument): y must be dense (B, K) multi-hot labels (bool, int or float), smoothed
    towards 0.5. On CPU tensors the C++ kernel (``fastmix::mix_pairs``) is the default for Mixup and CutMix: on a
    2-core Xeon, 1 thread, fp32 (32, 3, 224, 224), the op takes 1.5x (Mixup) and 1.25x (CutMix) the time of
    ``x.clone()``, the reference 12x and 19x."""
    _checks.check_batch_input("x", x, allow_uint8=True)
    if _checks.check_bool("multi_label", multi_label):
        _checks.check_tensor("y", y)
        if y.dim() != 2:
            raise ValueError(f"multi_label=True takes dense labels y of shape (B, K), got shape {tuple(y.shape)}")
        y = y if y.is_floating_point() else y.float()
    labels = _checks.labels_to_float(y, x.size(0), x.device, num_classes)
    labels = smooth(labels, _checks.check_real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True),
                    multi_label)
    _checks.check_generator(generator, x.device)
    if _checks.check_bool("inplace", inplace):
        check_inplace(x)
    return labels, _backend.resolve(backend, x.device, cpu_default="cpu", supported=mix_ops.BACKENDS)


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
        generator: the torch.Generator (on x's device) every parameter is drawn from.
        inplace: write the result into x (x must not require grad, nor be an expanded or self-overlapping view).
            Otherwise x is never modified.
        backend: "cuda", "triton", "reference", "cpu" (the C++ kernel with OpenMP; the default for CPU tensors when
            fastmix._C is built), or None for the default.

    Returns:
        ``x_mixed``, ``y_mixed`` float32 (B, K) (float64 for float64 labels), and ``MixParams``. Gradients flow to
        x (both partners) and to float y.
    """
    labels, name = prepare(x, y, num_classes, label_smoothing, generator, backend, inplace, multi_label=multi_label)
    alpha = _checks.check_positive_finite("alpha", alpha)
    pairing = check_pairing(pairing)
    batch = x.size(0)
    lam = _random.sample_beta(alpha, batch if _checks.check_bool("per_sample", per_sample) else 1, x.device,
                              generator).expand(batch)
    partner = sample_partner(batch, pairing, generator, x.device)
    boxes = torch.zeros((batch, 4), dtype=torch.int32, device=x.device)
    params = MixParams(lam, partner, boxes, torch.zeros(batch, dtype=torch.bool, device=x.device))
    return (*apply(x, labels, params, -1, -1, name, inplace), params)


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
    alpha = _checks.check_positive_finite("alpha", alpha)
    minmax = check_minmax(minmax)
    correct_lam = _checks.check_bool("correct_lam", correct_lam)
    pairing = check_pairing(pairing)
    height_dim, width_dim = spatial_dims(x, layout)
    batch, height, width = x.size(0), x.size(height_dim), x.size(width_dim)
    count = batch if _checks.check_bool("per_sample", per_sample) else 1
    draws = box_draws(minmax)  # one torch.rand for the boxes and the Beta draws
    uniform = torch.rand((draws + 2, count), dtype=torch.float64, device=x.device, generator=generator)
    lam = _random.sample_betas((alpha,), count, x.device, generator, uniform[draws:].view(1, 2, count))[0]
    boxes = sample_boxes(lam, height, width, minmax, generator, uniform[:draws].T)
    lam = kept_fraction(boxes, height, width) if correct_lam or minmax is not None else lam.float()
    partner = sample_partner(batch, pairing, generator, x.device)
    params = MixParams(lam.expand(batch), partner, boxes.expand(batch, 4),
                       torch.ones(batch, dtype=torch.bool, device=x.device))
    return (*apply(x, labels, params, height_dim, width_dim, name, inplace), params)
