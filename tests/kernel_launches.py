"""Counting what an op would launch on a GPU, from a run on CPU tensors.

``count_launches()`` records, while active: every aten op that is a kernel launch on a GPU (views, allocations
and metadata are free), every Triton kernel launch (run by the interpreter; the torch ops the interpreter itself
runs are not counted), every call into fastmix._C, and the ops that would synchronise a GPU with the host.
Custom ops (``fastmix::*``) are opened up: what their implementation launches is counted, not the op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import traceback

import torch
from torch._library.custom_ops import OPDEFS
from torch.utils._python_dispatch import TorchDispatchMode

from fastmix import _native

aten = torch.ops.aten
# No kernel runs on a GPU for these: allocation, views, metadata.
FREE_OPS = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default, aten.new_empty.default,
            aten.new_empty_strided.default, aten._unsafe_view.default, aten._reshape_alias.default,
            aten.detach.default, aten.detach_.default, aten.alias.default, aten.sym_size.int, aten.sym_stride.int,
            aten.sym_numel.default, aten.sym_storage_offset.default, aten.is_same_size.default,
            aten.set_.source_Storage_storage_offset}
# Ops that wait for the GPU (a value read back on the host, or an output size that depends on the data) or copy
# host data to the device.
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.nonzero_static.default,
            aten.masked_select.default, aten._unique2.default, aten.unique_consecutive.default,
            aten.bincount.default, aten.repeat_interleave.Tensor, aten.is_nonzero.default, aten.equal.default,
            aten.allclose.default, aten.lift_fresh.default, aten.item.default}


@dataclasses.dataclass
class TritonLaunch:
    """One Triton launch: the kernel, its arguments by name (tensors described, ``_described``) and its launch options
    (num_warps, ...)."""

    kernel: object
    arguments: dict
    options: dict


@dataclasses.dataclass
class Launches:
    aten: list = dataclasses.field(default_factory=list)
    triton: list = dataclasses.field(default_factory=list)
    native: list = dataclasses.field(default_factory=list)
    syncs: list = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.aten) + len(self.triton) + len(self.native)

    def summary(self) -> str:
        names = [str(op) for op in self.aten] + [f"triton:{launch.kernel.__name__}" for launch in self.triton]
        return f"{self.total} launches ({', '.join(names + [f'_C.{name}' for name in self.native])})"


def _described(value):
    """A kernel argument as recorded: a tensor as (dtype, shape, strides), since holding it would keep it alive past
    the op (a leaf's gradient is then copied into ``.grad`` instead of taken, a launch a GPU run does not make)."""
    return (value.dtype, tuple(value.shape), value.stride()) if isinstance(value, torch.Tensor) else value


def _is_sync(func, args) -> bool:
    if func in SYNC_OPS:
        return True
    if func is aten.index.Tensor:  # boolean-mask indexing has a data-dependent size
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
    return False


def _caller_in_fastmix() -> str:
    """``file:line`` of the innermost fastmix frame on the stack (the code that issued the op)."""
    for frame in reversed(traceback.extract_stack()):
        path = pathlib.Path(frame.filename)
        if "fastmix" in path.parts and "tests" not in path.parts:
            return f"{'/'.join(path.parts[path.parts.index('fastmix'):])}:{frame.lineno}"
    return "?"


class _Counter(TorchDispatchMode):
    def __init__(self, launches: Launches):
        super().__init__()
        self.launches = launches
        self.inside_kernel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastmix":  # run its Python implementation with this mode on, to see inside
            with self:
                return OPDEFS[func._schema.name]._init_fn(*args, **kwargs)
        if not self.inside_kernel:
            if _is_sync(func, args):
                self.launches.syncs.append(f"{func} at {_caller_in_fastmix()}")
            elif func not in FREE_OPS and not func.is_view:
                self.launches.aten.append(func)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _inside_kernel(counter: _Counter):
    counter.inside_kernel += 1
    try:
        yield
    finally:
        counter.inside_kernel -= 1


class _CountingNative:
    """fastmix._C with every call counted as one launch."""

    def __init__(self, counter: _Counter, module):
        self._counter, self._module = counter, module

    def __getattr__(self, name):
        function = getattr(self._module, name)

        def call(*args, **kwargs):
            self._counter.launches.native.append(name)
            with _inside_kernel(self._counter):
                return function(*args, **kwargs)

        return call


@contextlib.contextmanager
def count_launches():
    """Yields a ``Launches`` filled by what runs inside the block (module docstring). Triton must run under its
    interpreter (TRITON_INTERPRET=1)."""
    from triton.runtime import interpreter

    launches = Launches()
    counter = _Counter(launches)
    run = interpreter.InterpretedFunction.run
    native = _native.native

    def counted_run(self, *args, grid, warmup, **kwargs):
        if not warmup:
            names = self.arg_names
            given = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
            arguments = {name: _described(value) for name, value in given.items()}
            options = {k: v for k, v in kwargs.items() if k not in names}
            launches.triton.append(TritonLaunch(self.fn, arguments, options))
        with _inside_kernel(counter):
            return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = counted_run
    _native.native = lambda: _CountingNative(counter, native())
    try:
        with counter:
            yield launches
    finally:
        interpreter.InterpretedFunction.run = run
        _native.native = native
