"""Precision-critical float arguments of the Triton kernels.

A Python float argument reaches a kernel as fp32 on a GPU but as float64 under the interpreter, so an fp64 kernel
would compute with a rounded constant on a GPU only. An int arrives exactly in both, so a float travels as its
float64 bit pattern (``float64_bits``) and the kernel decodes it (``float64_from_bits``), then rounds it to its
accumulation type itself: fp32 kernels see the value a GPU launch would give them, fp64 kernels the exact one.
"""

from __future__ import annotations

import struct

import triton
import triton.language as tl


def float64_bits(value: float) -> int:
    """The IEEE-754 binary64 bits of ``value`` as a signed 64-bit int."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


@triton.jit
def float64_from_bits(bits):
    """The float64 whose bits ``float64_bits`` packed."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True)
