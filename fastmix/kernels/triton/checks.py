"""Value checks inside the Triton kernels: what ``torch._assert_async`` does on a GPU, without its launches.

A kernel that reads class or sample indices asserts their range with ``tl.device_assert`` as it loads them.
Launched with ``**DEVICE_ASSERTS`` the assert is compiled in (Triton drops it otherwise) and a failing one stops
the kernel with a device-side assert, as ``torch._assert_async`` does: the next CUDA call raises. The integer
overflow checks that the same debug switch turns on stay off (``sanitize_overflow``). Triton's interpreter ignores
the launch option, so the ops check CPU tensors in eager mode on the host before the launch
(``fastmix._checks.host_reads_values``), where the check costs no sync and raises a ValueError naming the argument.
"""

DEVICE_ASSERTS = {"debug": True, "sanitize_overflow": False}
