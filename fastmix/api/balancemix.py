"""The BalanceMix loss (BalanceMix paper, eq. 10); the training-side logic is ``fastmix.methods.balancemix``."""

from __future__ import annotations

import torch

from fastmix import _backend, _checks
from fastmix._dtypes import compute_dtype
from fastmix.ops import balancemix as balancemix_ops


def balancemix_loss(logits: torch.Tensor, targets: torch.Tensor, label_weights: torch.Tensor | None = None, *,
                    backend: str | None = None) -> torch.Tensor:
    """The BalanceMix loss (BalanceMix paper, eq. 10): ``(1/B) sum_b sum_k w_bk BCE(sigmoid(logits_bk), targets_bk)``.

    ``label_weights`` is 1 on clean and re-labeled labels and p_G on ambiguous ones (``manage_labels`` returns it);
    None gives plain BCE summed over classes, the warm-up loss (Algorithm 1, line 10). Logits (B, K) in fp32, fp16,
    bf16 or fp64, any strides; the loss is a 0-dim float32 tensor (float64 for float64 logits) accumulated in that
    precision. Gradients flow to the logits (written by the loss's own pass, when the logits need one) and to float
    targets/weights. ``backend``: "cpu" (C++), "triton", "reference" or None (Triton on CUDA tensors, the C++ kernel
    on CPU tensors; there is no CUDA C++ kernel for this loss).
    """
    _checks.check_matrix("logits", logits)
    dtype, shape, device = compute_dtype(logits.dtype), logits.shape, logits.device
    targets = _checks.check_matrix("targets", targets, shape, device)
    targets = targets if targets.dtype == dtype else targets.to(dtype)
    if label_weights is not None:
        label_weights = _checks.check_matrix("label_weights", label_weights, shape, device)
        label_weights = label_weights if label_weights.dtype == dtype else label_weights.to(dtype)
    name = _backend.resolve(backend, device, cuda_default="triton", cpu_default="cpu",
                            supported=balancemix_ops.BACKENDS)
    needs_grad = logits.requires_grad and torch.is_grad_enabled()
    # checked here: the eager call skips the op's own checks (balancemix_ops._loss_and_grad)
    return balancemix_ops.balancemix_loss_call(logits, targets, label_weights, name, needs_grad)[0]
