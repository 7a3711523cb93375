"""``fastmix.info()`` / ``python -m fastmix info``: versions, the native build, every backend's availability, and per
op its backends and the one that runs by default on CPU and on CUDA tensors."""

from __future__ import annotations

import platform

import torch

from fastmix import _backend, _native
from fastmix._version import __version__


BACKEND_NOTATION = ("cuda = the CUDA kernels of fastmix._C; triton = the Triton kernels; cpu = the C++ CPU kernels of "
                    "fastmix._C; reference = pure PyTorch (also the tests' oracle). 'default on CPU/CUDA' is what runs "
                    "on CPU/CUDA tensors without backend= (FASTMIX_BACKEND overrides it process-wide); a backend "
                    "named with backend= must be available, never a silent fallback. '-' : the op is plain PyTorch "
                    "ops, with no backend choice.")


def op_backends() -> dict[str, tuple[tuple, str | None, str | None]]:
    """Public op -> (its backends, its default on CUDA tensors, its default on CPU tensors), as each public call
    passes them to ``_backend.resolve`` (tests/test_info.py checks that they match)."""
    from fastmix.ops import balancemix as balancemix_ops
    from fastmix.ops import flow as flow_ops
    from fastmix.ops import gmm as gmm_ops
    from fastmix.ops import lamix as lamix_ops
    from fastmix.ops import lumix as lumix_ops
    from fastmix.ops import mix as mix_ops
    from fastmix.ops import zeta as zeta_ops

    mix_backends = mix_ops.BACKENDS
    return {
        "zeta_mixup": (zeta_ops.BACKENDS, "triton", "cpu"),
        "mixup": (mix_backends, "cuda", "cpu"),
        "cutmix": (mix_backends, "cuda", "cpu"),
        "Mixup, FastCollateMixup": (mix_backends, "cuda", "cpu"),
        "lamix_inputs": (mix_backends, "cuda", "cpu"),
        "flow_mix": (flow_ops.BACKENDS, "triton", "reference"),
        "lumix_lambda": (lumix_ops.BACKENDS, "triton", "cpu"),
        "lumix_loss": (lumix_ops.BACKENDS, "triton", "cpu"),
        "lamix_loss": (lamix_ops.BACKENDS, "triton", "cpu"),
        "balancemix_loss": (balancemix_ops.BACKENDS, "triton", "cpu"),
        "fit_gmm2": (gmm_ops.BACKENDS, gmm_ops.CUDA_DEFAULT, "cpu"),
        "gmm_posterior": (gmm_ops.POSTERIOR_BACKENDS, "triton", "reference"),
    }


def _default_backend(device: str, supported: tuple, cuda_default: str, cpu_default: str) -> str:
    """The backend that runs without backend= on ``device`` tensors here, or why none can."""
    if device == "cuda" and not torch.cuda.is_available():
        return f"{cuda_default} (no CUDA device here)"
    try:
        return _backend.resolve(None, torch.device(device), cuda_default, cpu_default, supported)
    except (ValueError, RuntimeError, StopIteration) as error:
        return f"none ({error or 'no backend available'})"


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
    ops = {op: {"backends": list(supported),
                "default_cpu": _default_backend("cpu", supported, cuda_default, cpu_default) if supported else None,
                "default_cuda": _default_backend("cuda", supported, cuda_default, cpu_default) if supported else None}
           for op, (supported, cuda_default, cpu_default) in op_backends().items()}
    return {
        "fastmix": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "torch_cuda": torch.version.cuda,
        "gpu": gpu,
        "native": native,
        "backends": backends,
        "ops": ops,
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
    lines.append("ops: backends | default on CPU tensors | default on CUDA tensors")
    for op, state in report["ops"].items():
        lines.append(f"  {op:<24} {', '.join(state['backends']) or '-':<30} | {state['default_cpu'] or '-':<10} | "
                     f"{state['default_cuda'] or '-'}")
    lines.append(f"  ({BACKEND_NOTATION})")
    return "\n".join(lines)
