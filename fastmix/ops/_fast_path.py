"""A thin eager path for the custom ops: ``EagerOp``, ``unit_column_rows``, ``rows_with_output`` and the loss kernels'
row operands (``label_arguments``, ``per_row_buffer``).

Calling a ``torch.library.custom_op`` that has a registered autograd costs about 60-100 us of host time per forward
and backward (measured on CPU with torch 2.13, 1 thread: an op that only allocates its outputs took 100-150 us for
forward + backward against 45-65 us for the same work in an ``autograd.Function``), as much as a fused loss kernel
takes at training batch sizes. ``EagerOp`` runs the op's own implementation, ``setup_context`` and backward through
an ``autograd.Function`` in eager mode, and the custom op itself when torch.compile traces the call, where the op
stays opaque to the compiler. Both paths run the same functions (the eager forward may be the op's implementation
less the argument checks its one caller, the public API, has made), so ``opcheck`` on the op and the eager parity
tests check one implementation.
"""

from __future__ import annotations

from typing import Callable

import torch

from fastmix import _layout, _native


def unit_column_rows(x: torch.Tensor) -> torch.Tensor:
    """A (B, K) tensor as rows with unit column stride: itself when it already is (the common case, checked without
    ``_layout.rows_view``'s general walk over the dims), else ``_layout.rows_view(x)``."""
    if x.dim() == 2 and (x.stride(1) == 1 or x.size(1) <= 1):
        return x
    return _layout.rows_view(x)


def rows_with_output(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_rows, out, out_rows)``: x as (B, F) rows with unit column stride, a new tensor like x in its dimension
    order, and that tensor's rows. A contiguous x (the common case) gets a contiguous output without ``_layout``'s
    general walk over the dims."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if x.is_contiguous() else _layout.empty_like_rows(x)
    return _layout.rows_view(x), out, _layout.rows_view(out)


def label_arguments(labels: torch.Tensor, dtype: torch.dtype) -> tuple:
    """Labels as the C++ loss kernels take them through ``_native.launch``, pointer and row stride: int64 class
    indices (B,) with row stride 0, or (B, K) rows in ``dtype``."""
    if labels.dim() == 1:
        return _native.Buffer(labels.contiguous(), torch.int64, labels.numel()), 0
    return (_native.Buffer(unit_column_rows(labels.to(dtype)), dtype, rows=True),)


def per_row_buffer(values: torch.Tensor, dtype: torch.dtype) -> _native.Buffer:
    """A (B,) per-row operand in ``dtype``, of any stride, as (B, 1) rows (pointer and stride): the gradient of a mean
    or sum is an expanded scalar, passed with stride 0 and not copied."""
    return _native.Buffer(values.to(dtype)[:, None], dtype, rows=True)


class EagerOp:
    """``op(*args)`` under torch.compile, else ``forward(*args)`` with ``setup_context`` and ``backward`` (the
    functions the op registers, ``backward`` calling the backward's implementation rather than its op); an op with no
    autograd (no ``backward``), or a call with no input that needs a gradient, runs ``forward(*args)`` alone. The
    backward is first order only unless ``differentiable_backward``: a linear op's backward made of differentiable
    calls (the op's own ``EagerOp``) is left to autograd to differentiate again."""

    def __init__(self, op, forward: Callable, setup_context: Callable | None = None, backward: Callable | None = None,
                 *, differentiable_backward: bool = False):
        self.op = op
        self.forward = forward
        self.function = None
        if backward is None:
            return
        # First order only, unless the backward's own calls are differentiable. once_differentiable's wrapper (a
        # no_grad block, then a node that raises if differentiated) matters only when the backward is itself recorded
        # (create_graph=True); the usual backward runs with grad mode off and calls ``backward`` directly.
        recorded_backward = backward if differentiable_backward else torch.autograd.function.once_differentiable(
            backward)

        class Function(torch.autograd.Function):
            # forward(ctx, ...) rather than a separate setup_context: apply() then skips binding the arguments to
            # forward's signature (inspect.signature, about 20 us a call).
            @staticmethod
            def forward(ctx, *args):
                output = forward(*args)
                setup_context(ctx, args, output)
                return output

            @staticmethod
            def backward(ctx, *grads):
                return recorded_backward(ctx, *grads) if torch.is_grad_enabled() else backward(ctx, *grads)

        Function.__name__ = Function.__qualname__ = f"Eager_{forward.__name__}"
        self.function = Function
        # Function.apply's Python layer (about 3 us a call on CPU) binds arguments for a setup_context staticmethod
        # (none here) and unwraps tensors left over from a finished functorch transform, then calls the C++ apply;
        # outside functorch transforms that C++ apply is called directly.
        self.direct_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, Function)

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.op(*args)
        if self.function is not None and torch.is_grad_enabled():
            for arg in args:
                if isinstance(arg, torch.Tensor) and arg.requires_grad:
                    if torch._C._are_functorch_transforms_active():
                        return self.function.apply(*args)
                    return self.direct_apply(*args)
        return self.forward(*args)  # no graph to record (e.g. a data batch): the same outputs, no Function
