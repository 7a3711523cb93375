"""Compiles every Triton kernel specialisation the public ops launch, ahead of time for real GPUs, without a GPU.

Run as a script with TRITON_INTERPRET unset (``python tests/triton_aot.py 80 90``): it imports the Triton kernels
as JIT functions, then runs every public op (tests/op_cases.py) over a grid of dtypes and sizes with the Triton
backend on CPU tensors, once per target, each launch turned into a compile-only warm-up for that target (a
stand-in driver names it), so each kernel is specialised exactly as a launch on that GPU would specialise it
(argument types, alignment, constexprs, num_warps, and the launch options that depend on the target: the launchers ask
``fastmix.kernels.triton.target.capability``, which answers the target compiled for), and compiled by Triton's
bundled ptxas; cuobjdump reads each cubin's registers and stack frame; for a kernel with a stack frame, ptxas -v
tells spills from local arrays, and the SASS how deep in loops the spill accesses sit. Prints one JSON line per
compiled specialisation.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import tempfile

# Kernels compile as JIT functions only when the interpreter is off at import time.
assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run with TRITON_INTERPRET unset"
import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import fastmix.kernels.triton  # noqa: E402
from fastmix.kernels.triton import target as launch_target  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from op_cases import CASES  # noqa: E402

# Shared memory per SM (bytes) and the register file, for the occupancy estimate.
SHARED_PER_SM = {80: 164 * 1024, 90: 228 * 1024}
REGISTERS_PER_SM, MAX_WARPS_PER_SM = 65536, 64
# (dtype, batch, classes) per op family: every dtype the ops accept, batch sizes that pick different blocks, and
# the class counts of ImageNet-1k and ImageNet-21k for the losses.
SIZES = {
    "images": [(dtype, batch, 10) for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
               for batch in (6, 256)],
    "logits": [(dtype, 64, classes) for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
               for classes in (10, 1000, 21843)],
    "gmm": [(torch.float64, batch, 3) for batch in (80, 5000)] + [(torch.float32, 80, 3)],
}
FAMILY = {"flow_mix": "images", "lumix_lambda": "logits", "lumix_loss": "logits", "lamix_loss": "logits",
          "balancemix_loss": "logits", "fit_gmm2": "gmm", "gmm_posterior": "gmm"}


class _CompileOnlyDriver:
    """A driver that names a GPU target: JIT functions specialise and compile for it, and launch nothing."""

    def __init__(self, capability: int):
        self.capability = capability

    def get_current_target(self):
        return GPUTarget("cuda", self.capability, 32)

    def get_current_device(self):
        return self.capability  # one specialisation cache per target

    def get_current_stream(self, device=None):
        return 0


@dataclasses.dataclass
class Compiled:
    kernel: str
    capability: int
    signature: dict
    constexprs: dict
    num_warps: int
    num_stages: int
    shared: int
    maxnreg: int | None
    registers: int = -1
    local_bytes: int = -1
    stack_bytes: int = -1
    spill_bytes: int = 0
    spill_loop_depth: int = 0
    programs_per_sm: int = 0
    occupancy: float = 0.0


def _resource_usage(cubin: bytes) -> tuple[int, int, int]:
    """(registers, local memory bytes, stack bytes) per thread of the kernel in ``cubin``, from the cuobjdump that
    Triton ships. Triton kernels have no local arrays, so local memory means register spills."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        report = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(path)],
                                capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"\b(REG|STACK|LOCAL):(\d+)", report))
    return int(usage["REG"]), int(usage["LOCAL"]), int(usage["STACK"])


def _spill_bytes(ptx: str, capability: int) -> int:
    """Bytes of register spill stores per thread, from Triton's ptxas run again with -v on the kernel's PTX (only
    for kernels with a stack frame, which is either spills or a local array)."""
    from triton.backends.nvidia import compiler as nvidia

    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "kernel.ptx"
        path.write_text(ptx)
        log = subprocess.run([nvidia.get_ptxas(capability).path, "-v", f"--gpu-name={arch}", str(path), "-o",
                              str(path.with_suffix(".cubin"))], capture_output=True, text=True, check=True).stderr
    return int(re.search(r"(\d+) bytes spill stores", log).group(1))


SASS_INSTRUCTION = re.compile(r"/\*([0-9a-f]+)\*/\s+([^;]*);")
SASS_BRANCH_TARGET = re.compile(r"\bBRA\b.*\b0x([0-9a-f]+)")
SASS_LOCAL_ACCESS = re.compile(r"\b(LDL|STL)\b")


def _spill_loop_depth(cubin: bytes) -> int:
    """The deepest loop nesting of a local load or store (a spill) in the kernel's SASS (cuobjdump -sass): the
    number of loops, each the address range from a backward branch's target to the branch, that hold it; 0 when
    none is in a loop. A persistent kernel's loop over work items is depth 1, a loop over values inside it 2."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", str(path)], capture_output=True, text=True,
                              check=True).stdout
    instructions = SASS_INSTRUCTION.findall(sass)
    assert instructions, "no instruction found in cuobjdump's SASS: its format changed"
    loops, accesses = [], []
    for address, instruction in instructions:
        address = int(address, 16)
        if (branch := SASS_BRANCH_TARGET.search(instruction)) and int(branch.group(1), 16) <= address:
            loops.append((int(branch.group(1), 16), address))
        if SASS_LOCAL_ACCESS.search(instruction):
            accesses.append(address)
    return max((sum(first <= address <= last for first, last in loops) for address in accesses), default=0)


def _programs_per_sm(registers: int, num_warps: int, shared: int, capability: int) -> int:
    """Programs an SM holds at once, limited by registers (allocated per warp in units of 256), warps and shared
    memory."""
    per_warp = -(-registers * 32 // 256) * 256
    return min(REGISTERS_PER_SM // max(per_warp * num_warps, 1), MAX_WARPS_PER_SM // num_warps,
               SHARED_PER_SM[capability] // shared if shared else 32, 32)


def compile_all(capabilities: list[int]) -> list[Compiled]:
    for module in pkgutil.iter_modules(fastmix.kernels.triton.__path__):
        importlib.import_module(f"fastmix.kernels.triton.{module.name}")
    os.environ["TRITON_INTERPRET"] = "1"  # lets the Triton backend take CPU tensors; the kernels stay JIT functions
    compiled: dict[tuple, Compiled] = {}
    compile_function = triton.compile

    def recording_compile(src, target=None, options=None):
        kernel = compile_function(src, target=target, options=options)
        key = (target.arch, kernel.hash)
        if key not in compiled:
            metadata = kernel.metadata
            constexprs = {".".join(src.fn.arg_names[i] if n == 0 else str(i) for n, i in enumerate(path)): value
                          for path, value in src.constants.items()}
            entry = Compiled(src.fn.__name__, target.arch, {k: v for k, v in src.signature.items()
                                                            if v != "constexpr"}, constexprs, metadata.num_warps,
                             metadata.num_stages, metadata.shared, metadata.maxnreg)
            entry.registers, entry.local_bytes, entry.stack_bytes = _resource_usage(kernel.asm["cubin"])
            if entry.stack_bytes or entry.local_bytes:
                entry.spill_bytes = _spill_bytes(kernel.asm["ptx"], target.arch)
                entry.spill_loop_depth = _spill_loop_depth(kernel.asm["cubin"])
            entry.programs_per_sm = _programs_per_sm(entry.registers, entry.num_warps, entry.shared, target.arch)
            entry.occupancy = entry.programs_per_sm * entry.num_warps / MAX_WARPS_PER_SM  # resident warps / maximum
            compiled[key] = entry
        return kernel

    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        # a target's first use creates its binder, which resets self.compile
        self.device_caches[driver.active.get_current_device()]
        self.compile = recording_compile
        run(self, *args, grid=grid, warmup=True, **kwargs)
        for arg in args:  # integer outputs (indices drawn in a kernel) stay valid indices for the host code after
            if isinstance(arg, torch.Tensor) and not (arg.is_floating_point() or arg.is_complex()):
                arg.data.zero_()  # .data: no version bump, so tensors saved for a backward stay usable

    JITFunction.run = compile_only
    # Compile-only launches write nothing, so what a kernel draws (parameters, permutations) is never computed: the
    # ops take their CUDA path (is_compiling: value checks on the device), and those checks are switched off.
    torch.compiler.is_compiling = lambda: True
    torch._assert_async = lambda *args, **kwargs: None
    device = torch.device("cpu")
    # One round of the public calls per target, the launchers told that target (their launch options depend on it).
    for target_capability in capabilities:
        driver.set_active(_CompileOnlyDriver(target_capability))
        launch_target.capability = lambda device, capability=target_capability: capability
        for case in CASES:
            if "triton" not in case.backends:
                continue
            for dtype, batch, classes in SIZES[FAMILY.get(case.name, "images")]:
                inputs = case.make_inputs(device, dtype, batch, classes)
                out = case.call(inputs, "triton", torch.Generator().manual_seed(0))
                if case.differentiable:
                    out.backward(torch.ones_like(out))
        for variant in VARIANTS:
            variant(device)
    return list(compiled.values())


def _mix_variants(device):
    """Mix-family specialisations no op case reaches: minmax boxes with a gate, dense (soft, multi-hot) labels,
    float labels with gradients (no labels in the parameter kernel), uint8 images, FastCollateMixup's "half" mode."""
    import fastmix
    from fastmix.ops import mix as mix_ops

    x = torch.rand(6, 3, 8, 10, device=device)
    soft = torch.rand(6, 4, device=device)
    fastmix.cutmix(x, soft, minmax=(0.2, 0.8), backend="triton")
    fastmix.Mixup(cutmix_alpha=1.0, cutmix_minmax=(0.2, 0.8), prob=0.5, mode="elem", num_classes=4,
                  backend="triton")(x, soft)
    fastmix.mixup(x, soft > 0.5, multi_label=True, backend="triton")
    seed = torch.zeros(1, dtype=torch.int64, device=device)  # float labels with gradients: none in the kernel
    mix_ops.mix_params(seed, None, 4, 0.1, False, 6, 1, 1, "elem", True, 1.0, 0.0, 1.0, 0.5, None, True, torch.float64)
    images = (x * 255).to(torch.uint8)
    fastmix.mixup(images, soft, backend="triton")
    fastmix.FastCollateMixup(cutmix_alpha=1.0, mode="half", num_classes=4, backend="triton")(
        [(image, 1) for image in images])


def _gmm_kernels_beyond_the_default_fit(device: torch.device) -> None:
    """The GMM kernels the op case (the default fit) does not launch: the kmeans++ races and seeded k-means, the
    "quantile" fit, the explicit-init EM with a re-seeded group (the unseeded k-means), the distributed fit's
    E-step and the split pass; the counting sort's count kernel at the benchmark's 160 groups (a histogram of 256 bins)
    and beyond 1,023 groups (atomics); the fused fit with its larger chunks."""
    import fastmix
    from fastmix.kernels.triton import gmm as triton_gmm
    from fastmix.ops import gmm as gmm_ops

    for dtype in (torch.float32, torch.float64):
        inputs = next(case for case in CASES if case.name == "fit_gmm2").make_inputs(device, dtype, 5000, 3)
        values, groups, n_groups = inputs["values"], inputs["groups"], inputs["classes"]
        for init in ("kmeans++", "quantile"):
            fastmix.fit_gmm2(values, groups, n_groups=n_groups, init=init, generator=torch.Generator().manual_seed(0),
                             backend="triton")
        # Launches compile only, so outputs hold no values: the explicit params are written here.
        weights = torch.full((n_groups, 2), 0.5, dtype=torch.float64)
        weights[0] = torch.tensor([1.0, 0.0], dtype=torch.float64)
        means = torch.tensor([[0.2, 0.8]], dtype=torch.float64).repeat(n_groups, 1)
        variances = torch.full((n_groups, 2), 0.05, dtype=torch.float64)
        fit = fastmix.fit_gmm2(values, groups, n_groups=n_groups, init=(weights, means, variances), backend="triton")
        int32_groups = groups.int()  # label_groups' ids: the counting sort's and the posterior's int32 specialisations
        fastmix.gmm_posterior(values, int32_groups, fit, backend="triton")
        sorted_values, offsets, count, lo, hi = gmm_ops.gmm2_segments(values, groups, n_groups, False, "triton")
        gmm_ops.gmm2_segments(values, int32_groups, n_groups, True, "triton")  # and omitted NaN
        for many_groups in (160, 2000):
            gmm_ops.gmm2_segments(values, int32_groups % many_groups, many_groups, True, "triton")
        # Enough values for the fused fit's larger chunks (fit_chunk) at the programs compiling runs with.
        many_values = values.repeat(-(-2 * triton_gmm.CHUNK * triton_gmm.INTERPRETED_PROGRAMS // values.numel()))
        fastmix.fit_gmm2(many_values, groups.repeat(many_values.numel() // groups.numel()), n_groups=n_groups,
                         backend="triton")
        gmm_ops.gmm2_estep(sorted_values, offsets, lo, hi - lo, weights, means, variances, "triton")
        gmm_ops.gmm2_split_statistics(sorted_values, offsets, lo, hi - lo, (lo + hi) / 2, means, "triton")


# Calls beyond the op cases, each specialising kernels the op cases leave out.
VARIANTS = (_mix_variants, _gmm_kernels_beyond_the_default_fit)


if __name__ == "__main__":
    for entry in compile_all([int(arg) for arg in sys.argv[1:]]):
        print(json.dumps(dataclasses.asdict(entry), default=str))
