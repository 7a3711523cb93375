"""The one dtype rule: fastmix computes and accumulates in float64 for float64 inputs and in float32 for every other
dtype (fp16, bf16, uint8, integer labels), and returns weights, labels and losses in that dtype."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, float32 otherwise (module docstring)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
