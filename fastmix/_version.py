"""Package version and the CUDA local-version suffix of a wheel. Torch-free: setup.py loads this file."""

from __future__ import annotations

import re

__version__ = "0.1.0"


def cuda_local_version(nvcc_version_output: str | None) -> str:
    """``+cuXYZ`` for the CUDA release named in ``nvcc --version`` output, ``""`` for a CPU-only build.

    ``"... release 13.0, V13.0.88"`` gives ``"+cu130"``; ``None`` (no CUDA toolkit) gives ``""``.
    """
    if nvcc_version_output is None:
        return ""
    match = re.search(r"release (\d+)\.(\d+)", nvcc_version_output)
    if match is None:
        raise ValueError(f"cannot find 'release X.Y' in nvcc output: {nvcc_version_output!r}")
    major, minor = match.groups()
    return f"+cu{major}{minor}"
