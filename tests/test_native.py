"""The CUDA kernels' per-thread bodies (csrc/*.h), run on the CPU over the launch grids the launchers compute.

This checks the index arithmetic (tails, row blocks, strides, int64 offsets) and the fp16/bf16 conversions of
the CUDA code without a GPU; GPU runs are in the parity tests with backend "cuda".
"""

import pytest
import torch

from fastmix import _native
from fastmix.reference import zeta as reference
from helpers import assert_close

pytestmark = pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def emulate_weights(keys, gamma, self_dominant):
    weights = torch.empty_like(keys)
    norm = float(sum(n ** -gamma for n in range(1, keys.size(0) + 1)))
    _native._C.zeta_weights_emulate(keys.data_ptr(), weights.data_ptr(), keys.size(0), gamma, norm, self_dominant,
                                    _native.DTYPE_CODES[keys.dtype])
    return weights


def emulate_mix(x_rows, weights, out_rows):
    _native._C.zeta_mix_emulate(x_rows.data_ptr(), x_rows.stride(0), weights.data_ptr(), out_rows.data_ptr(),
                                out_rows.stride(0), x_rows.size(0), x_rows.size(1), _native.DTYPE_CODES[x_rows.dtype])


@pytest.mark.parametrize("batch", [1, 2, 3, 16, 17, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("self_dominant", [True, False])
def test_weights_kernel_body(batch, dtype, self_dominant):
    keys = torch.rand(batch, batch, generator=torch.Generator().manual_seed(batch), dtype=dtype)
    keys[0, :] = keys[0, 0]  # ties break by column, as the reference's stable sort does
    assert_close(emulate_weights(keys, 2.8, self_dominant), reference.zeta_weights(keys, 2.8, self_dominant), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,features", [(1, 5), (3, 257), (16, 256), (17, 600), (33, 1000)])
def test_mix_kernel_body(dtype, batch, features):
    g = torch.Generator().manual_seed(features)
    wide = torch.randn(batch, features + 7, generator=g).to(dtype)
    x_rows = wide[:, 3:3 + features]  # row stride != features
    weight_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    weights = torch.rand(batch, batch, generator=g, dtype=weight_dtype)
    weights /= weights.sum(1, keepdim=True)
    out = torch.full((batch, features + 2), 7.0, dtype=dtype)
    out_rows = out[:, :features]
    emulate_mix(x_rows, weights, out_rows)
    assert_close(out_rows, reference.zeta_mix(x_rows, weights), dtype)
    assert torch.all(out[:, features:] == 7.0), "wrote past the row"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_conversions_round_like_torch(dtype):
    """Scaling by a diagonal W makes the kernel's float->half/bf16 store round exactly like torch's cast."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 1e-4, 3e-8, 6e4, 7e4, 1.0 + 2 ** -11, 1e-40])
    values = torch.cat([torch.randn(4000, generator=g), torch.tensor([0.0, 6.1e-5, 65504.0, 2.0 ** -24])])
    x = values.to(dtype).expand(len(scale), -1).contiguous()
    weights = torch.diag(scale)
    out = torch.empty_like(x)
    emulate_mix(x, weights, out)
    expected = (x.float() * scale[:, None]).to(dtype)
    same = out.view(torch.int16) == expected.view(torch.int16)
    assert same.all(), f"{int((~same).sum())} conversions differ"

