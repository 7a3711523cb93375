"""A CUDA 12 toolkit for clang, assembled from NVIDIA's PyPI packages, for the +cu12x wheel.

    python scripts/cuda12_toolkit.py [--dest .cuda12]

PyPI carries every CUDA 12 piece a clang CUDA build needs except a `fatbinary` executable: headers (runtime, crt,
CCCL), `libcudart_static.a`, `libdevice.10.bc`, `ptxas`, and `libnvfatbin` (the library behind `fatbinary`). This
script installs them at pinned versions and lays out the tree clang expects (`--cuda-path`):

    include/   lib64/libcudart_static.a   nvvm/libdevice/libdevice.10.bc   bin/ptxas   bin/fatbinary

`bin/fatbinary` is a launcher for `fatbinary()` below, which packs clang's cubins and PTX with libnvfatbin 12, so
every tool that touches device code is from CUDA 12 and the fat binary is one that CUDA 12 drivers read. Run it once
per machine; `scripts/build_wheels.py` then finds the tree and builds the +cu12x wheel with clang.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "12.9"
PACKAGES = {
    "nvidia-cuda-nvcc-cu12": "12.9.86",
    "nvidia-cuda-runtime-cu12": "12.9.79",
    "nvidia-cuda-cccl-cu12": "12.9.27",
    "nvidia-nvfatbin-cu12": "12.9.82",
}
# The clang CUDA wrapper force-includes this cuRAND header; fastmix uses no cuRAND, so an empty one stands in.
CURAND_STUB = "curand_mtgp32_kernel.h"


def assemble(dest: Path) -> Path:
    """Install the pinned packages and lay out ``dest/cuda-12.9``; returns that tree."""
    tree = dest / f"cuda-{RELEASE}"
    with tempfile.TemporaryDirectory(prefix="fastmix-cuda12-") as tmp:
        pins = [f"{name}=={version}" for name, version in PACKAGES.items()]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tmp, *pins], check=True)
        nvidia = Path(tmp) / "nvidia"
        shutil.rmtree(tree, ignore_errors=True)
        for part in ("bin", "include", "lib64", "nvvm"):
            (tree / part).mkdir(parents=True)
        for headers in ("cuda_runtime", "cuda_nvcc", "cuda_cccl"):
            shutil.copytree(nvidia / headers / "include", tree / "include", dirs_exist_ok=True)
        for library in ("libcudart_static.a", "libcudadevrt.a", "libculibos.a"):
            shutil.copy2(nvidia / "cuda_runtime" / "lib" / library, tree / "lib64")
        shutil.copy2(nvidia / "nvfatbin" / "lib" / "libnvfatbin.so.12", tree / "lib64")
        shutil.copytree(nvidia / "cuda_nvcc" / "nvvm" / "libdevice", tree / "nvvm" / "libdevice")
        shutil.copy2(nvidia / "cuda_nvcc" / "bin" / "ptxas", tree / "bin")
    (tree / "include" / CURAND_STUB).write_text("// fastmix uses no cuRAND; clang's CUDA wrapper includes this file\n")
    launcher = tree / "bin" / "fatbinary"
    launcher.write_text(
        f"#!{sys.executable} -I\nimport sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        f"from cuda12_toolkit import fatbinary\nsys.exit(fatbinary(sys.argv[1:], {str(tree / 'lib64')!r}))\n"
    )
    launcher.chmod(0o755)
    return tree


def parse_fatbinary_arguments(args: list[str]) -> tuple[str, list[tuple[str, str, str]]]:
    """The output file and the (kind, sm, file) images of a clang `fatbinary` command line.

    clang runs ``fatbinary -64 --create OUT --image3=kind=elf,sm=80,file=X ... --image3=kind=ptx,sm=90,file=Y``.
    """
    output, images = None, []
    rest = iter(args)
    for arg in rest:
        if arg == "-64":
            continue
        if arg == "--create":
            output = next(rest, None)
        elif arg.startswith("--image3="):
            fields = dict(field.split("=", 1) for field in arg.removeprefix("--image3=").split(","))
            if fields.get("kind") not in ("elf", "ptx") or "sm" not in fields or "file" not in fields:
                raise ValueError(f"fatbinary: cannot read the image {arg!r}")
            images.append((fields["kind"], fields["sm"], fields["file"]))
        else:
            raise ValueError(f"fatbinary: unsupported argument {arg!r} (this front end takes what clang passes)")
    if output is None or not images:
        raise ValueError("fatbinary: needs --create FILE and at least one --image3=kind=...,sm=...,file=...")
    return output, images


def fatbinary(args: list[str], library_dir: str) -> int:
    """Write the fat binary a clang `fatbinary` command line asks for, with libnvfatbin (its default options)."""
    output, images = parse_fatbinary_arguments(args)
    lib = ctypes.CDLL(os.path.join(library_dir, "libnvfatbin.so.12"))
    lib.nvFatbinGetErrorString.restype = ctypes.c_char_p

    def check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"fatbinary: {what}: {lib.nvFatbinGetErrorString(status).decode()}")

    handle = ctypes.c_void_p()
    options = (ctypes.c_char_p * 1)(b"-64")
    check(lib.nvFatbinCreate(ctypes.byref(handle), options, 1), "nvFatbinCreate")
    try:
        for kind, sm, path in images:
            code = Path(path).read_bytes()
            name = os.path.basename(path).encode()
            if kind == "elf":
                check(lib.nvFatbinAddCubin(handle, code, ctypes.c_size_t(len(code)), sm.encode(), name), path)
            else:  # PTX is passed as a NUL-terminated string
                ptx = code + b"\0"
                check(lib.nvFatbinAddPTX(handle, ptx, ctypes.c_size_t(len(ptx)), sm.encode(), name, b""), path)
        size = ctypes.c_size_t()
        check(lib.nvFatbinSize(handle, ctypes.byref(size)), "nvFatbinSize")
        buffer = ctypes.create_string_buffer(size.value)
        check(lib.nvFatbinGet(handle, buffer), "nvFatbinGet")
        Path(output).write_bytes(buffer.raw)
    finally:
        lib.nvFatbinDestroy(ctypes.byref(handle))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(ROOT / ".cuda12"), help="folder for the tree (git-ignored)")
    print(assemble(Path(parser.parse_args().dest).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
