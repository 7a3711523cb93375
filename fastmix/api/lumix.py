"""LUMix label weights and loss (LUMix paper, eq. 3-8 and Algorithm 1).

Convention, for both functions: ``lam`` is the weight of ``y_a`` (eq. 2: ``y~ = lam y_A + (1 - lam) y_B``), so
``lam_s = p_a / (p_a + p_b)`` (eq. 5) and the mixed target is ``lam y_a + (1 - lam) y_b``. Algorithm 1 is the same
rule with its ``y2`` as ``y_a`` (it weights ``y2`` by ``lam`` and puts ``prob2`` in the numerator of ``lam_s``).
With ``fastmix.cutmix``, ``y_a`` is the label of the image pasted into (weight ``params.lam``, its kept area) and
``y_b`` the partner's label.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from fastmix import _backend, _checks, _random
from fastmix._dtypes import compute_dtype
from fastmix.ops import lumix as lumix_ops


class LUMixLambda(NamedTuple):
    """The label weight of eq. 3 and the two random parts it was built from, each (B,)."""

    lam: torch.Tensor
    lam_r: torch.Tensor
    lam_s: torch.Tensor


def _check_logits(logits) -> torch.Tensor:
    _checks.check_tensor("logits", logits)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() != 2 or logits.size(0) == 0 or logits.size(1) == 0:
        raise ValueError(f"logits must have shape (B, K) with B, K >= 1, got shape {tuple(logits.shape)}")
    return logits


def _check_labels(name: str, labels, logits: torch.Tensor) -> torch.Tensor:
    """Class indices (B,) as int64 (the op checks that they lie in [0, K)), or float rows (B, K); detached (labels
    get no gradient)."""
    _checks.check_tensor(name, labels)
    if labels.device != logits.device:
        raise ValueError(f"{name} is on {labels.device} but logits are on {logits.device}")
    batch, n_classes = logits.shape
    if labels.is_floating_point():
        if labels.shape != (batch, n_classes):
            raise ValueError(f"float labels {name} must have the logits' shape {(batch, n_classes)}, "
                             f"got {tuple(labels.shape)}")
        return labels.detach()
    if labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name} must hold integer class indices or float labels, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"integer labels {name} must have shape (B,) = ({batch},), got {tuple(labels.shape)}")
    return labels.detach().long()


def _check_label_pair(y_a, y_b, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y_a = _check_labels("y_a", y_a, logits)
    y_b = _check_labels("y_b", y_b, logits)
    if y_a.dim() != y_b.dim():
        raise ValueError("y_a and y_b must be the same kind: both class indices (B,) or both float rows (B, K)")
    return y_a, y_b


def _check_weight(name: str, value, logits: torch.Tensor) -> torch.Tensor:
    """A per-sample weight: a number in [0, 1] (numpy scalars too), or a float tensor of shape () or (B,) (its values
    are not checked: that would synchronise); returned detached, (B,), fp32/fp64."""
    dtype = compute_dtype(logits.dtype)
    batch = logits.size(0)
    value = value
    if _checks.is_real_number(value):
        value = _checks.check_real(name, value, 0.0, 1.0)
        return torch.full((batch,), value, dtype=dtype, device=logits.device)
    _checks.check_tensor(name, value)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a float tensor or a number, got dtype {value.dtype}")
    if value.shape not in ((), (batch,)):
        raise ValueError(f"{name} must have shape () or (B,) = ({batch},), got {tuple(value.shape)}")
    if value.device != logits.device:
        raise ValueError(f"{name} is on {value.device} but logits are on {logits.device}")
    return value.detach().to(dtype).expand(batch)


def lumix_lambda(lam0, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, *, r1: float = 0.4,
                 r2: float = 0.1, alpha: float = 2.0, generator: torch.Generator | None = None,
                 return_parts: bool = False, backend: str | None = None):
    """LUMix's label weight of ``y_a`` (LUMix paper, eq. 3-5): ``lam = (1 - r1 - r2) lam0 + r1 lam_r + r2 lam_s``.

    ``lam_r ~ Beta(alpha, alpha)`` per sample, drawn on the logits' device from ``generator``;
    ``lam_s = p_a / (p_a + p_b)`` (eq. 5) from the softmax of the detached logits (eq. 4). For float label rows,
    ``p_a = sum_k y_a,k p_k / sum_k y_a,k`` (the score of the class for one-hot rows, as in eq. 5; the expected
    score for soft rows; the mean score of the positives for multi-hot rows; 0 for an all-zero row), and
    ``lam_s = 0.5`` when ``p_a + p_b = 0``. See the module docstring for which label the weight belongs to.

    Args:
        lam0: the CutMix weight of ``y_a`` (its kept-area fraction), a number in [0, 1] or a float tensor () or (B,).
        logits: (B, K) network outputs; only their detached softmax is used.
        y_a, y_b: class indices (B,) or float one-hot/soft/multi-hot rows (B, K), both of one kind.
        r1: weight of the random term ``lam_r`` (eq. 3), >= 0. Paper default 0.4 (Table 3).
        r2: weight of the score term ``lam_s`` (eq. 3), >= 0, with ``r1 + r2 <= 1``. Paper default 0.1.
        alpha: Beta concentration of ``lam_r``, > 0. Paper default 2.0 (Table 10).
        generator: torch.Generator on the logits' device, or None for the default.
        return_parts: return ``LUMixLambda(lam, lam_r, lam_s)`` instead of ``lam`` alone.
        backend: "cpu" (C++), "triton", "reference", or None (``FASTMIX_BACKEND``, else Triton on CUDA tensors and
            the C++ kernel on CPU tensors). Triton draws ``lam_r`` inside its kernel from one device seed taken
            from ``generator`` (one launch for the seed, one for everything else); the others draw it with
            PyTorch's Beta sampler, so one seeded generator gives different draws on Triton than on the others.

    Returns:
        ``lam`` (B,) fp32 (fp64 for fp64 logits), no gradient.
    """
    logits = _check_logits(logits)
    lam0 = _check_weight("lam0", lam0, logits)
    y_a, y_b = _check_label_pair(y_a, y_b, logits)
    r1, r2 = check_ratios(r1, r2)
    alpha = _checks.check_positive_finite("alpha", alpha)
    return_parts = _checks.check_bool("return_parts", return_parts)
    _checks.check_generator(generator, logits.device)
    backend = _backend.resolve(backend, logits.device, cuda_default="triton", cpu_default="cpu",
                               supported=lumix_ops.BACKENDS)
    if backend == "triton":
        seed = _random.draw_seed(generator, logits.device)
        lam, lam_r, lam_s = lumix_ops.lumix_lambda_sampled_call(lam0, seed, logits.detach(), y_a, y_b, r1, r2, alpha)
    else:
        lam_r = _random.sample_beta(alpha, logits.size(0), logits.device, generator, lam0.dtype)
        lam, lam_s = lumix_ops.lumix_lambda_call(lam0, lam_r, logits.detach(), y_a, y_b, r1, r2, backend)
    return LUMixLambda(lam, lam_r, lam_s) if return_parts else lam


def check_ratios(r1, r2) -> tuple[float, float]:
    """Eq. 3's weights: r1, r2 >= 0 with r1 + r2 <= 1."""
    r1 = _checks.check_real("r1", r1, 0.0, math.inf)
    r2 = _checks.check_real("r2", r2, 0.0, math.inf)
    if r1 + r2 > 1:
        raise ValueError(f"r1 + r2 must be <= 1, got r1={r1}, r2={r2}")
    return r1, r2


def lumix_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam, *, eta: float = 1.0,
               reduction: str = "mean", backend: str | None = None) -> torch.Tensor:
    """LUMix loss (LUMix paper, eq. 6-8): ``L = L0 + eta R`` per sample, reduced over the batch.

    ``L0 = -sum_k y_k log p_k`` is the soft-target cross-entropy against ``y = lam y_a + (1 - lam) y_b`` and
    ``R = sum_k y_k max(0, b_k - p_k)`` (eq. 7) with ``p`` the softmax of the logits and ``b`` the binarised union
    of both labels as Algorithm 1 builds it: ``b_k = 1`` where ``y_a,k > min_j y_a,j`` or ``y_b,k > min_j y_b,j``
    (eq. 8 prints a wedge, but Algorithm 1 sets ``b`` from each label in turn, an OR). For class indices that is
    the two labelled classes; with K = 1 no class exceeds its row's minimum, so ``b = 0``. The Triton kernel forms
    ``y`` in registers and never stores it.

    Args:
        logits: (B, K) fp32/fp16/bf16/fp64, any strides; accumulation is fp32 (fp64 for fp64).
        y_a, y_b: class indices (B,) or float rows (B, K), both of one kind; no gradient flows to them.
        lam: weight of ``y_a``, a number in [0, 1] or a float tensor () or (B,), e.g. from ``lumix_lambda``; no
            gradient.
        eta: weight of the hinge R (eq. 6), >= 0. The paper gives no value; 1.0 is Algorithm 1's loss line.
        reduction: "mean" (over the batch), "sum" or "none" (per-sample (B,)).
        backend: "cpu" (C++), "triton", "reference", or None (``FASTMIX_BACKEND``, else Triton on CUDA tensors and
            the C++ kernel on CPU tensors). There is no CUDA C++ kernel for this op: asking for "cuda" is a ValueError.

    Returns:
        The loss, fp32 (fp64 for fp64 logits); differentiable in ``logits`` (first order).
    """
    logits = _check_logits(logits)
    y_a, y_b = _check_label_pair(y_a, y_b, logits)
    lam = _check_weight("lam", lam, logits)
    eta = _checks.check_real("eta", eta, 0.0, math.inf)
    _checks.check_reduction(reduction)
    name = _backend.resolve(backend, logits.device, cuda_default="triton", cpu_default="cpu",
                            supported=lumix_ops.BACKENDS)
    loss_rows, _ = lumix_ops.lumix_loss_call(logits, y_a, y_b, lam, eta, name)
    return _checks.reduce_rows(loss_rows, reduction)
