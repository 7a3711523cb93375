"""``fastmix.info()`` / ``python -m fastmix info``: versions, the native build and every backend's availability."""

from __future__ import annotations

import platform

import torch

from fastmix import _backend, _native
from fastmix._version import __version__


def _cpu_isa(C) -> str | None:
    """The instruction set of the vectorised CPU kernels, or why FASTMIX_CPU_ISA cannot be honoured."""
    if C is None:
        return None
    try:
        return C.gmm2_cpu_isa()
    except ValueError as error:
        return str(error)


def info() -> dict:
    """A dict of versions, the native build, the GPU, and for each backend and device: available and why not."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    C = _native._C
    native = {
        "importable": C is not None,
        "built_with_cuda": bool(C is not None and C.built_with_cuda),
        "cuda_build_version": _native.format_cuda_version(C.cuda_build_version) if C is not None and C.built_with_cuda else None,
        "cuda_archs": C.cuda_archs if C is not None else None,
        "cuda_driver_version": (
            _native.format_cuda_version(C.cuda_driver_version()) if C is not None and C.built_with_cuda else None
        ),
        "cpu_isa": _cpu_isa(C),
    }
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}"}
    backends = {}
    for device in ("cuda", "cpu"):
        for name in _backend.BACKENDS:
            reason = _backend.unavailable_reason(name, device)
            backends[f"{name}@{device}"] = {"available": not reason, "reason": reason}
    return {
        "fastmix": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "torch_cuda": torch.version.cuda,
        "gpu": gpu,
        "native": native,
        "backends": backends,
    }


def format_info(report: dict) -> str:
    lines = [f"fastmix {report['fastmix']} (python {report['python']}, torch {report['torch']}, "
             f"triton {report['triton']}, torch CUDA {report['torch_cuda']})"]
    gpu = report["gpu"]
    lines.append(f"GPU: {gpu['name']} (sm_{gpu['capability'].replace('.', '')})" if gpu else "GPU: none visible")
    native = report["native"]
    if not native["importable"]:
        lines.append("native core fastmix._C: not importable")
    elif native["built_with_cuda"]:
        lines.append(f"native core fastmix._C: CUDA {native['cuda_build_version']}, archs {native['cuda_archs']}, "
                     f"driver CUDA {native['cuda_driver_version'] if native['cuda_driver_version'] != '0.0' else 'none'}")
    else:
        lines.append("native core fastmix._C: CPU only (built without CUDA)")
    if native["importable"]:
        lines.append(f"  vectorised CPU kernels (gmm): {native['cpu_isa']}")
    for key, state in report["backends"].items():
        lines.append(f"  {key:<18} {'yes' if state['available'] else 'no '}  {state['reason']}")
    return "\n".join(lines)
