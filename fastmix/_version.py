"""Package version and the CUDA local-version suffix of a wheel. Torch-free: setup.py loads this file."""

from __future__ import annotations

import re

__version__ = "0.1.0"


def cuda_local_version(compiler_output: str | None) -> str:
    """``+cuXYZ`` for the CUDA release a compiler reports, ``""`` for a CPU-only build.

    Reads ``nvcc --version`` (``"... release 13.0, V13.0.88"`` gives ``"+cu130"``) or ``clang -v`` for a CUDA
    tree (``"Found CUDA installation: /opt/cuda, version 12.9"`` gives ``"+cu129"``); ``None`` (no CUDA compiler)
    gives ``""``.
    """
    if compiler_output is None:
        return ""
    match = re.search(r"release (\d+)\.(\d+)", compiler_output) or re.search(
        r"Found CUDA installation: .*, version (\d+)\.(\d+)", compiler_output
    )
    if match is None:
        raise ValueError(f"cannot find 'release X.Y' or a CUDA installation's version in: {compiler_output!r}")
    major, minor = match.groups()
    return f"+cu{major}{minor}"
