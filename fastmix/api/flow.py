"""Flow-Mixup: the Mixing module ``z' = [z, z_mixed]`` with a halved backward (Flow-Mixup paper, eq. 2-3, Fig. 1-2)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fastmix import _backend, _checks, _random
from fastmix._dtypes import compute_dtype
from fastmix.ops import flow as flow_ops


class FlowMixParams(NamedTuple):
    """What one Mixing call drew, enough to rebuild its targets with ``flow_mix_labels``.

    ``lam`` (B,) holds p per sample (all equal unless ``per_sample``), float32 (float64 for float64 z);
    ``perm`` (B,) int64 the index shuffle; ``flow_size`` the flow size of the input; ``keep_original`` whether
    the original flow went forward.
    """

    lam: torch.Tensor
    perm: torch.Tensor
    flow_size: int
    keep_original: bool

    @property
    def output_flow_size(self) -> int:
        return 2 * self.flow_size if self.keep_original else self.flow_size


def flow_mix(
    z: torch.Tensor,
    *,
    alpha: float = 3.0,
    keep_original: bool = True,
    per_sample: bool = False,
    flow_size: int = 1,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, FlowMixParams]:
    """The Mixing module of Flow-Mixup (Flow-Mixup paper, section III.C): returns ``(z_out, params)``.

    Forward (eq. 2): ``z' = [z, z_mixed]`` concatenated along the flow dimension, which is folded into the batch
    (dim 0), with ``z_mixed[i] = p z[i] + (1 - p) z[perm[i]]``, ``p ~ Beta(alpha, alpha)`` and ``perm`` a random
    shuffle. Backward (eq. 3): ``grad = (grad' + grad_m) / 2``, the gradient of the original flow plus the one
    that flows back through the mixing, halved so its magnitude stays that of one flow.
    ``keep_original=False`` (the paper's Op=False) is plain mixup: ``z' = z_mixed``, ``grad = grad_m``.

    Non-finite z follows eq. 2 as written on every backend: +-inf stays +-inf where the partner is finite or the
    same infinity, NaN or +inf meeting -inf gives NaN; the backward follows eq. 3 the same way.

    Choices where the paper is open: eq. 2 draws one ``p`` per mixing call, the default here; ``per_sample=True``
    draws ``p_i`` per sample i instead. The paper shuffles "(z_copy, y)" into two mini-copies; here the first copy
    keeps its order and the second is shuffled, so the mixed flow stays aligned with the original one.

    Args:
        z: (flow_size * B, ...) floating features, batch first, any trailing shape and memory format; the output
            keeps z's dtype and dimension order. Mixing math is fp32 (fp64 for fp64 z).
        alpha: the Beta concentration, > 0 (3.0 in the paper's experiments): a Python or numpy number or a 0-d
            tensor (read on the host).
        keep_original: the original flow goes forward (output flow size doubles); False gives plain mixup.
        per_sample: one ``p`` per sample instead of one per call.
        flow_size: how many flow blocks of B samples z holds, one after another along dim 0 (2 after one Mixing
            module with the original flow kept). Every block is mixed with the same ``p`` and ``perm`` (Fig. 2b).
        generator: the torch.Generator (on z's device) that draws ``p`` then ``perm``; all drawing is on the device.
            Triton draws both inside one kernel from one device seed taken from the generator; the other backends
            use PyTorch's samplers, so one seeded generator gives different draws on Triton than on the others.
        backend: "cuda", "triton", "reference", or None for the default (see ``fastmix.info()``).

    Returns:
        ``z_out`` ((2 if keep_original else 1) * flow_size * B, ...) and the ``FlowMixParams`` drawn.
    """
    _checks.check_batch_input("z", z)
    alpha = _checks.check_positive_scalar("alpha", alpha)
    keep_original = _checks.check_bool("keep_original", keep_original)
    per_sample = _checks.check_bool("per_sample", per_sample)
    if isinstance(flow_size, bool) or not isinstance(flow_size, int) or flow_size < 1:
        raise ValueError(f"flow_size must be a positive int, got {flow_size!r}")
    if z.size(0) % flow_size:
        raise ValueError(f"z's batch size {z.size(0)} is not a multiple of flow_size={flow_size}")
    _checks.check_generator(generator, z.device)
    name = _backend.resolve(backend, z.device, cuda_default="triton")  # its parameters and mix: 3 launches
    batch = z.size(0) // flow_size
    lam_dtype = compute_dtype(z.dtype)
    if name == "triton":  # one seed, then p and the shuffle from one kernel
        lam, perm = flow_ops.flow_params(_random.draw_seed(generator, z.device), alpha, batch, per_sample, lam_dtype)
    else:
        lam = _random.sample_beta(alpha, batch if per_sample else 1, z.device, generator, lam_dtype)
        lam = lam.expand(batch).contiguous()
        perm = torch.randperm(batch, generator=generator, device=z.device)
    z_out = flow_ops.flow_mix(z, lam, perm, flow_size, keep_original, name)
    return z_out, FlowMixParams(lam, perm, flow_size, keep_original)


def flow_mix_labels(y: torch.Tensor, params: FlowMixParams, *, num_classes: int | None = None) -> torch.Tensor:
    """The targets of one Mixing call: ``[y, p y + (1 - p) y[perm]]`` per flow block (eq. 2), or the mix alone.

    Args:
        y: the labels of the Mixing module's input, flow_size * B rows: int class indices with ``num_classes``,
            or float one-hot, soft or multi-hot (B, K) labels.
        params: what ``flow_mix`` returned with the features.

    Returns:
        float32 (float64 for float64 y) labels with the output's flow size. Gradients flow to float y unhalved.
    """
    if not isinstance(params, FlowMixParams):
        raise TypeError(f"params must be the FlowMixParams returned by flow_mix, got {type(params).__name__}")
    rows = params.flow_size * params.perm.numel()
    _checks.check_tensor("y", y)
    if y.dim() == 0 or y.size(0) != rows:
        raise ValueError(f"y must have {rows} samples (flow_size x B of the mixing call), got shape {tuple(y.shape)}")
    labels = _checks.labels_to_float(y, rows, params.lam.device, num_classes)
    blocks = labels.unflatten(0, (params.flow_size, params.perm.numel()))
    mixed = torch.lerp(blocks[:, params.perm], blocks, params.lam.to(labels.dtype).unsqueeze(1)).flatten(0, 1)
    return torch.cat([labels, mixed]) if params.keep_original else mixed


class FlowMixup(nn.Module):
    """The Mixing module to drop between layers: ``flow_mix`` in training mode, the identity in eval mode.

    Several modules compose (Fig. 2b): give each later module the one that runs before it as ``previous``; it then
    mixes within each flow block of its input, and ``targets(y)`` on the last module builds the targets for the
    final flow size. ``params`` holds the last training call's ``FlowMixParams`` (None after an eval call).
    """

    def __init__(self, alpha: float = 3.0, keep_original: bool = True, per_sample: bool = False,
                 previous: FlowMixup | None = None, backend: str | None = None):
        super().__init__()
        if previous is not None and not isinstance(previous, FlowMixup):
            raise TypeError(f"previous must be a FlowMixup or None, got {type(previous).__name__}")
        self.alpha = _checks.check_positive_scalar("alpha", alpha)
        self.keep_original = _checks.check_bool("keep_original", keep_original)
        self.per_sample = _checks.check_bool("per_sample", per_sample)
        self.backend = backend
        self._previous = (previous,) if previous is not None else ()  # a sibling in the network, not a child
        self.params: FlowMixParams | None = None

    @property
    def previous(self) -> FlowMixup | None:
        return self._previous[0] if self._previous else None

    def input_flow_size(self) -> int:
        """The flow size this module's input has: the previous module's output flow size, else 1."""
        return self.previous.output_flow_size() if self.previous is not None else 1

    def output_flow_size(self) -> int:
        return self.params.output_flow_size if self.params is not None else self.input_flow_size()

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            self.params = None
            return z
        z_out, self.params = flow_mix(z, alpha=self.alpha, keep_original=self.keep_original,
                                      per_sample=self.per_sample, flow_size=self.input_flow_size(),
                                      generator=generator, backend=self.backend)
        return z_out

    def targets(self, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """The targets for this module's output: y through every module of the chain, in order, as float labels."""
        labels = self.previous.targets(y, num_classes) if self.previous is not None else y
        if self.params is None:
            _checks.check_tensor("y", labels)
            return _checks.labels_to_float(labels, labels.size(0) if labels.dim() else -1, labels.device, num_classes)
        return flow_mix_labels(labels, self.params, num_classes=num_classes)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, keep_original={self.keep_original}, per_sample={self.per_sample}"
