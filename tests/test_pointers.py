"""``_native.launch``: the one path from a tensor to a native kernel checks device, dtype, size and layout first."""

import pytest
import torch

from fastmix import _native
from helpers import assert_close

pytestmark = pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
CPU = torch.device("cpu")


def mix_rows(x_rows, weights, out_rows):
    """``out = W @ x`` by the zeta mix kernel's CPU body, through ``launch``."""
    batch, features = x_rows.shape
    _native.launch("zeta_mix_emulate", CPU, _native.Buffer(x_rows, dtype=x_rows.dtype, rows=True),
                   _native.Buffer(weights, dtype=torch.float32, numel=batch * batch),
                   _native.Buffer(out_rows, dtype=x_rows.dtype, rows=True), batch, features,
                   _native.DTYPE_CODES[x_rows.dtype])


def test_rows_pass_their_stride_and_the_kernel_sees_the_right_values():
    wide = torch.randn(5, 12)
    x_rows = wide[:, 2:9]  # rows strided inside a wider tensor: stride 12, 7 features
    weights = torch.softmax(torch.randn(5, 5), dim=1)
    out_wide = torch.full((5, 10), float("nan"))
    out_rows = out_wide[:, 1:8]
    mix_rows(x_rows, weights, out_rows)
    assert_close(out_rows, weights.double() @ x_rows.double(), torch.float32)
    assert out_wide[:, 0].isnan().all() and out_wide[:, 8:].isnan().all()  # nothing outside the rows was written


@pytest.mark.parametrize(
    "case,error,match",
    [
        ("dtype", TypeError, "argument 1 must be torch.float32, got torch.float64"),
        ("numel", ValueError, "argument 1 must hold 16 elements, got 25"),
        ("transposed_weights", ValueError, "argument 1 must be contiguous"),
        ("column_stride", ValueError, "argument 0 must be 2-D rows with unit column stride"),
        ("device", ValueError, "argument 2 is on meta, the kernel runs on cpu"),
    ],
)
def test_a_bad_buffer_raises_before_the_kernel_runs(case, error, match):
    x_rows, out_rows, weights = torch.randn(4, 6), torch.zeros(4, 6), torch.rand(4, 4)
    if case == "dtype":
        weights = weights.double()
    elif case == "numel":
        weights = torch.rand(5, 5)
    elif case == "transposed_weights":
        weights = weights.t()
    elif case == "column_stride":
        x_rows = torch.randn(6, 4).t()
    elif case == "device":
        out_rows = torch.empty(4, 6, device="meta")
    before = out_rows.clone() if case != "device" else None
    with pytest.raises(error, match=match):
        mix_rows(x_rows, weights, out_rows)
    if before is not None:
        assert torch.equal(out_rows, before)


def test_plain_tensors_must_be_contiguous_and_scalars_pass_through():
    keys = torch.rand(3, 3)
    weights = torch.empty(3, 3)
    with pytest.raises(ValueError, match="fastmix._C.zeta_weights_emulate argument 0 must be contiguous"):
        _native.launch("zeta_weights_emulate", CPU, keys.t(), weights, 3, 2.0, 1.0, True, 0)
    norm = 1 + 2 ** -2.0 + 3 ** -2.0
    _native.launch("zeta_weights_emulate", CPU, keys, weights, 3, 2.0, norm, True, 0)
    assert_close(weights.sum(dim=1), torch.ones(3), torch.float32)  # the rows of W sum to 1 (eq. 3)
