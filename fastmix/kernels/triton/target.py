"""The GPU a Triton launch will run on, for launch options that depend on it."""

from __future__ import annotations

import torch


def capability(device: torch.device) -> int | None:
    """The compute capability of the GPU holding ``device`` as 10 x major + minor (90 for sm_90), a host query of
    the driver (no sync); None off CUDA (CPU tensors under the interpreter). tests/triton_aot.py substitutes the
    target it compiles for, so each target's specialisations get that target's launch options."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor
