"""The build: the wheel's CUDA local version, the driver guard, `python -m fastmix info`, and the release scripts
(toolchain detection, the architectures report, the CUDA 12 tree for clang)."""

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastmix import _native
from fastmix._version import __version__, cuda_local_version

NVCC_13 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"
CLANG_OVER_CUDA_12 = (
    "Debian clang version 22.1.8 (1~deb12u1)\nTarget: x86_64-pc-linux-gnu\n"
    "Found CUDA installation: /opt/fastmix/.cuda12/cuda-12.9, version 12.9\n"
)
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_local_version_from_nvcc_output():
    assert cuda_local_version(NVCC_13) == "+cu130"
    assert cuda_local_version("Cuda compilation tools, release 12.8, V12.8.93") == "+cu128"
    assert cuda_local_version(CLANG_OVER_CUDA_12) == "+cu129"  # the CUDA tree's version, not clang's 22.1
    assert cuda_local_version(None) == ""
    with pytest.raises(ValueError, match="release X.Y"):
        cuda_local_version("no version here")


@pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
def test_installed_version_names_the_cuda_build():
    installed = importlib.metadata.version("fastmix")
    C = _native._C
    suffix = f"+cu{C.cuda_build_version // 1000}{C.cuda_build_version % 1000 // 10}" if C.built_with_cuda else ""
    assert installed == __version__ + suffix


@pytest.mark.parametrize(
    "built,build,driver,devices,expected",
    [
        (False, 0, 0, 0, "built without CUDA"),
        (True, 13000, 0, 0, "no CUDA driver"),
        (True, 13000, 12080, 1, "supports CUDA 12.8, older than the CUDA 13.0"),
        (True, 12090, 11080, 1, "install a wheel built for CUDA 11.x"),
        (True, 13000, 13000, 0, "no CUDA device"),
        (True, 13000, 13020, 1, ""),
        (True, 12080, 13000, 2, ""),
        # minor version compatibility: a CUDA 12.9 (13.5) build runs on the oldest 12.x (13.x) driver
        (True, 12090, 12000, 1, ""),
        (True, 13050, 13000, 1, ""),
    ],
)
def test_driver_guard(built, build, driver, devices, expected):
    reason = _native.cuda_unavailable_reason_for(built, build, driver, devices)
    assert (expected in reason) if expected else reason == ""


def test_info_command_lists_every_backend():
    result = subprocess.run([sys.executable, "-m", "fastmix", "info"], capture_output=True, text=True, check=True)
    for backend in ("cuda@cuda", "triton@cuda", "reference@cuda", "cuda@cpu", "triton@cpu", "reference@cpu"):
        assert backend in result.stdout
    assert "native core fastmix._C" in result.stdout
    if _native._C is not None:
        assert f"vectorised CPU kernels (gmm): {_native._C.gmm2_cpu_isas()[0]}" in result.stdout


def test_info_names_a_forced_cpu_isa_or_why_not():
    if _native._C is None:
        pytest.skip("fastmix._C is not built")
    for isa, expected in (("baseline", "(gmm): baseline"), ("sse9", "FASTMIX_CPU_ISA=sse9 is not one this CPU runs")):
        result = subprocess.run([sys.executable, "-m", "fastmix", "info"], capture_output=True, text=True, check=True,
                                env={**os.environ, "FASTMIX_CPU_ISA": isa})
        assert expected in result.stdout


def load_script(name: str):
    path = SCRIPTS / f"{name}.py"
    if not path.exists():
        pytest.skip("the release scripts are not beside these tests (a smoke run against an installed wheel)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build_wheels():
    return load_script("build_wheels")


@pytest.fixture(scope="module")
def cuda12_toolkit():
    return load_script("cuda12_toolkit")


def test_architectures_from_cuobjdump_listings(build_wheels):
    nvcc_elf = "".join(f"ELF file    {i}: _C.{i}.sm_{sm}.cubin\n" for i, sm in enumerate((90, 100, 80, 86), 1))
    clang_elf = "ELF file    1: zeta-sm_89-d87213.sm_89.cubin\nELF file    2: mix-sm_80-0af2cf.sm_80.cubin\n"
    ptx = "PTX file    1: flow-sm_90-2e9064.sm_90.ptx\nPTX file    2: gmm-sm_90-05c547.sm_90.ptx\n"
    assert build_wheels.parse_architectures(nvcc_elf, "") == "SASS sm_80,sm_86,sm_90,sm_100; PTX none"
    assert build_wheels.parse_architectures(clang_elf, ptx) == "SASS sm_80,sm_89; PTX sm_90"
    assert build_wheels.parse_architectures("", "") == "SASS none; PTX none"


def test_stack_frames_from_the_resource_usage_dump(build_wheels):
    dump = """
Fatbin elf code:
================
arch = sm_80
identifier = zeta-sm_80-d87213.o

Resource usage:
 Common:
  GLOBAL:0
 Function _ZN7fastmix4zeta10mix_kernelIfEEvPKT_:
  REG:32 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:408 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN7fastmix4zeta10mix_kernelINS_4HalfEEEvPKT_:
  REG:32 STACK:64 SHARED:0 LOCAL:0 CONSTANT[0]:408 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90

Resource usage:
 Function _ZN7fastmix4zeta10mix_kernelINS_4HalfEEEvPKT_:
  REG:32 STACK:48 SHARED:0 LOCAL:0 CONSTANT[0]:584 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    half_kernel = "_ZN7fastmix4zeta10mix_kernelINS_4HalfEEEvPKT_"
    assert build_wheels.parse_stack_frames(dump) == {half_kernel: {"sm_80": 64, "sm_90": 48}}
    assert build_wheels.parse_stack_frames(dump.replace("STACK:64", "STACK:0").replace("STACK:48", "STACK:0")) == {}


def test_cuda_tree_detection(build_wheels, tmp_path):
    for name, header in (("cuda-12.9", "#define CUDA_VERSION 12090\n"), ("cuda-12.4", "#define CUDA_VERSION 12040\n")):
        (tmp_path / name / "include").mkdir(parents=True)
        (tmp_path / name / "include" / "cuda.h").write_text(f"#pragma once\n{header}")
    (tmp_path / "cuda-partial" / "include").mkdir(parents=True)  # no cuda.h: not a tree
    trees = build_wheels.find_cuda_trees(tmp_path)
    assert trees == [tmp_path / "cuda-12.4", tmp_path / "cuda-12.9"]
    assert [build_wheels.tree_release(tree) for tree in trees] == ["12.4", "12.9"]
    toolchain = build_wheels.clang_toolchain("/usr/bin/clang++-22", trees[1])
    assert toolchain.is_clang and toolchain.release == "12.9" and toolchain.cuda_home == trees[1]
    assert build_wheels.default_archs(toolchain.release) == "80;86;89;90;100;120"
    assert build_wheels.default_archs("12.4") == "80;86;89;90"


def test_clang_detection_takes_the_newest_versioned_clang(build_wheels, tmp_path):
    older, newer = tmp_path / "a", tmp_path / "b"
    for folder, names in ((older, ("clang++-19", "clang++-9", "clang++")), (newer, ("clang++-22", "clang++-22.bak"))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("#!/bin/sh\n")
            (folder / name).chmod(0o755)
    (older / "clang++-30").write_text("not executable")
    assert build_wheels.find_clang(os.pathsep.join(map(str, (older, newer)))) == str(newer / "clang++-22")
    (newer / "clang++-22").unlink()
    (newer / "clang++-22.bak").unlink()
    assert build_wheels.find_clang(str(older)) == str(older / "clang++-19")
    for name in ("clang++-19", "clang++-9"):
        (older / name).unlink()
    assert build_wheels.find_clang(str(older)) == str(older / "clang++")


def test_fatbinary_reads_the_command_line_clang_passes(cuda12_toolkit):
    args = ["-64", "--create", "/tmp/x.fatbin", "--image3=kind=elf,sm=80,file=/tmp/a.o",
            "--image3=kind=ptx,sm=90,file=/tmp/b.s"]
    output, images = cuda12_toolkit.parse_fatbinary_arguments(args)
    assert output == "/tmp/x.fatbin"
    assert images == [("elf", "80", "/tmp/a.o"), ("ptx", "90", "/tmp/b.s")]
    for bad, message in (
        (["--create", "x"], "at least one --image3"),
        (["--image3=kind=elf,sm=80,file=a"], "needs --create"),
        (["--create", "x", "--image3=kind=lto,sm=80,file=a"], "cannot read the image"),
        (["--create", "x", "--compress-all"], "unsupported argument"),
    ):
        with pytest.raises(ValueError, match=message):
            cuda12_toolkit.parse_fatbinary_arguments(bad)


def test_clang_builds_sass_and_ptx_against_the_cuda_12_tree(build_wheels, tmp_path):
    """With the tree from scripts/cuda12_toolkit.py and a clang: one kernel source gives a fat binary with CUDA 12
    SASS for each requested architecture and PTX for the newest, packed by the tree's fatbinary."""
    trees = [tree for tree in build_wheels.find_cuda_trees(SCRIPTS.parent / ".cuda12")
             if build_wheels.tree_release(tree).startswith("12.")]
    clang, cuobjdump = build_wheels.find_clang(), build_wheels.find_cuobjdump([])
    if not trees or clang is None or cuobjdump is None:
        pytest.skip("needs the CUDA 12 tree (python scripts/cuda12_toolkit.py), a clang++ and a cuobjdump")
    tree, obj = trees[-1], tmp_path / "flow.o"
    subprocess.run(
        [clang, "-x", "cuda", f"--cuda-path={tree}", f"-B{tree / 'bin'}", "-Wno-unknown-cuda-version",
         "--cuda-gpu-arch=sm_80", "--cuda-gpu-arch=sm_90", "--no-cuda-include-ptx=all", "--cuda-include-ptx=sm_90",
         "-DFASTMIX_WITH_CUDA", f"-I{SCRIPTS.parent / 'csrc'}", "-std=c++17", "-O3", "-c",
         str(SCRIPTS.parent / "csrc" / "flow.cu"), "-o", str(obj)],
        check=True, capture_output=True,
    )
    dump = {flag: subprocess.run([cuobjdump, flag, str(obj)], capture_output=True, text=True, check=True).stdout
            for flag in ("--list-elf", "--list-ptx", "--dump-resource-usage", "--dump-elf")}
    assert build_wheels.parse_architectures(dump["--list-elf"], dump["--list-ptx"]) == "SASS sm_80,sm_90; PTX sm_90"
    assert build_wheels.parse_stack_frames(dump["--dump-resource-usage"]) == {}  # accumulators stay in registers
    elf = dump["--dump-elf"]
    # each cubin names the ptxas that wrote it ("toolkit=129", or "toolkit=12.9" in the newer ELF ABI): the tree's
    stamps = {major + "." + minor for major, minor in re.findall(r"toolkit=(\d+?)\.?(\d)\b", elf)}
    assert stamps == {build_wheels.tree_release(tree)}


def setup_version(env: dict) -> subprocess.CompletedProcess:
    """`python setup.py --version` (the package version with its +cuXYZ) under the given build environment."""
    if not (SCRIPTS.parent / "setup.py").exists():
        pytest.skip("setup.py is not beside these tests (a smoke run against an installed wheel)")
    clean = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_HOME", "FASTMIX_BUILD_CUDA")}
    return subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True, text=True,
                          cwd=SCRIPTS.parent, env=clean | env)


def test_setup_names_a_clang_cuda_build_by_its_cuda_tree(build_wheels, tmp_path):
    rejected = setup_version({"CUDACXX": str(tmp_path / "no-such-compiler")})
    assert rejected.returncode != 0 and "is not an executable" in rejected.stderr
    assert setup_version({"FASTMIX_BUILD_CUDA": "0"}).stdout.split()[-1] == __version__
    clang = build_wheels.find_clang()
    trees = build_wheels.find_cuda_trees(SCRIPTS.parent / ".cuda12")
    if clang is None or not trees:
        pytest.skip("needs a clang++ and a CUDA tree (python scripts/cuda12_toolkit.py)")
    without_tree = setup_version({"CUDACXX": clang})
    assert without_tree.returncode != 0 and "set CUDA_HOME" in without_tree.stderr
    release = build_wheels.tree_release(trees[-1])
    version = setup_version({"CUDACXX": clang, "CUDA_HOME": str(trees[-1])}).stdout.split()[-1]
    assert version == f"{__version__}+cu{release.replace('.', '')}"
