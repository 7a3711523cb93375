"""``_native.launch``: the one path from a tensor to a native kernel checks device, dtype, size and layout first."""

import pytest
import torch

from fastmix import _native
from helpers import assert_close, make_batch

pytestmark = pytest.mark.skipif(_native._C is None, reason="fastmix._C is not built")
CPU = torch.device("cpu")


def mix_rows(x_rows, weight, partner, out_rows, boxes=None):
    """``out[i] = w[i] x[i] + (1 - w[i]) x[partner[i]]`` by the C++ mix kernel (no boxes), through ``launch``."""
    batch, features = x_rows.shape
    boxes = torch.zeros(batch, 4, dtype=torch.int32) if boxes is None else boxes
    _native.launch("mix_pairs_cpu", CPU, _native.Buffer(x_rows, x_rows.dtype, rows=True),
                   _native.Buffer(out_rows, x_rows.dtype, rows=True), batch, features,
                   _native.Buffer(weight, torch.float32, batch), _native.Buffer(boxes, torch.int32, batch * 4),
                   _native.Buffer(partner, torch.int64, batch), 1, 1, 1, 1, False, _native.DTYPE_CODES[x_rows.dtype])


def test_rows_pass_their_stride_and_the_kernel_sees_the_right_values():
    wide = torch.randn(5, 12)
    x_rows = wide[:, 2:9]  # rows strided inside a wider tensor: stride 12, 7 features
    weight, partner = torch.rand(5), torch.tensor([3, 0, 4, 1, 2])
    out_wide = torch.full((5, 10), float("nan"))
    out_rows = out_wide[:, 1:8]
    mix_rows(x_rows, weight, partner, out_rows)
    expected = weight.double()[:, None] * x_rows.double() + (1 - weight.double())[:, None] * x_rows[partner].double()
    assert_close(out_rows, expected, torch.float32)
    assert out_wide[:, 0].isnan().all() and out_wide[:, 8:].isnan().all()  # nothing outside the rows was written


@pytest.mark.parametrize(
    "case,error,match",
    [
        ("dtype", TypeError, "argument 4 must be torch.float32, got torch.float64"),
        ("numel", ValueError, "argument 4 must hold 4 elements, got 5"),
        ("transposed_boxes", ValueError, "argument 5 must be contiguous"),
        ("column_stride", ValueError, "argument 0 must be 2-D rows with unit column stride"),
        ("device", ValueError, "argument 1 is on meta, the kernel runs on cpu"),
    ],
)
def test_a_bad_buffer_raises_before_the_kernel_runs(case, error, match):
    x_rows, out_rows, weight, boxes = torch.randn(4, 6), torch.zeros(4, 6), torch.rand(4), None
    partner = torch.tensor([1, 0, 3, 2])
    if case == "dtype":
        weight = weight.double()
    elif case == "numel":
        weight = torch.rand(5)
    elif case == "transposed_boxes":
        boxes = torch.zeros(4, 4, dtype=torch.int32).t()
    elif case == "column_stride":
        x_rows = torch.randn(6, 4).t()
    elif case == "device":
        out_rows = torch.empty(4, 6, device="meta")
    before = out_rows.clone() if case != "device" else None
    with pytest.raises(error, match=match):
        mix_rows(x_rows, weight, partner, out_rows, boxes)
    if before is not None:
        assert torch.equal(out_rows, before)


def test_plain_tensors_must_be_contiguous_and_scalars_pass_through():
    x_rows, out_rows, weight = torch.randn(3, 5), torch.empty(3, 5), torch.ones(3)
    strided_partner = torch.tensor([0, 9, 1, 9, 2, 9])[::2]
    with pytest.raises(ValueError, match="fastmix._C.mix_pairs_cpu argument 6 must be contiguous"):
        mix_rows(x_rows, weight, strided_partner, out_rows)
    mix_rows(x_rows, weight, strided_partner.contiguous(), out_rows)
    assert torch.equal(out_rows, x_rows)  # weight 1: every sample keeps itself


class CudaKernelsOnCpu:
    """fastmix._C with each ``*_cuda`` kernel answered by its CPU body (``*_emulate``: the same arguments, less the
    stream, which ``launch`` adds on CUDA devices only)."""

    def __getattr__(self, name):
        return getattr(_native._C, name.replace("_cuda", "_emulate"))


@pytest.fixture
def cuda_call_sites_on_cpu(monkeypatch):
    """The ops' "cuda" branches run on CPU tensors: their argument wiring is checked without a GPU."""
    monkeypatch.setattr(_native, "native", CudaKernelsOnCpu)


@pytest.mark.parametrize("keep_original", [True, False])
def test_flow_cuda_call_sites(cuda_call_sites_on_cpu, keep_original):
    from fastmix.ops import flow as flow_ops

    g = torch.Generator().manual_seed(1)
    z = make_batch("channels_last", 10, torch.float32, "cpu")  # flow_size 2, 5 samples
    lam, perm = torch.rand(5, generator=g), torch.randperm(5, generator=g)
    out = flow_ops.flow_mix(z, lam, perm, 2, keep_original, "cuda")
    assert_close(out, flow_ops.flow_mix(z, lam, perm, 2, keep_original, "reference"), torch.float32)
    grad = torch.randn(out.shape, generator=g)
    assert_close(flow_ops.flow_mix_backward(grad, lam, perm, 2, keep_original, "cuda"),
                 flow_ops.flow_mix_backward(grad, lam, perm, 2, keep_original, "reference"), torch.float32)


def test_pair_mix_cuda_call_site(cuda_call_sites_on_cpu):
    from fastmix.ops import mix as mix_ops

    g = torch.Generator().manual_seed(2)
    x = make_batch("spatial_slice", 6, torch.float16, "cpu")
    lam, partner = torch.rand(6, generator=g), torch.randperm(6, generator=g)
    assert_close(mix_ops.mixup_pairs(x, lam, partner, "cuda"), mix_ops.mixup_pairs(x, lam, partner, "reference"),
                 torch.float16)


def test_cutmix_pairs_cuda_call_site(cuda_call_sites_on_cpu):
    from fastmix.ops import mix as mix_ops

    x = make_batch("channels_last", 4, torch.bfloat16, "cpu")  # (4, 3, 12, 10)
    boxes = torch.tensor([[0, 12, 0, 10], [2, 7, 3, 9], [0, 0, 0, 0], [5, 12, 0, 4]], dtype=torch.int32)
    partner = torch.tensor([1, 0, 3, 2])
    assert_close(mix_ops.cutmix_pairs(x, boxes, partner, 2, 3, "cuda"),
                 mix_ops.cutmix_pairs(x, boxes, partner, 2, 3, "reference"), torch.bfloat16)
