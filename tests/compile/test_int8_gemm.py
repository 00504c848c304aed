"""INT8 Linear layers (dense torch._int_mm and cuSPARSELt int8 2:4) against the fp16 dense layer,
with activation scales from the calibration range collector."""

import pytest
import torch
from torch import nn

from edged.compile.int8_gemm import QMAX, calibrated_amax, quantize, weight_scales
from edged.compile.semi_structured import probe

CUSPARSELT_OK, CUSPARSELT_WHY = probe()


def test_weight_scales_are_per_output_channel_and_round_trip_within_half_a_step():
    w = torch.randn(32, 64) * torch.linspace(0.1, 3.0, 32)[:, None]  # (out, in), rows of different size
    scale = weight_scales(w)  # (out,)
    q = quantize(w, scale[:, None])
    assert q.dtype == torch.int8 and int(q.abs().max()) == QMAX
    assert torch.all((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6)


def test_calibrated_amax_is_the_max_input_of_each_layer():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    batches = [torch.randn(4, 16), 3 * torch.randn(4, 16)]
    amax = calibrated_amax(model, ["0", "2"], batches)
    assert amax["0"] == pytest.approx(max(float(b.abs().max()) for b in batches), rel=1e-6)
    with torch.no_grad():
        hidden = max(float(model[1](model[0](b)).abs().max()) for b in batches)
    assert amax["2"] == pytest.approx(hidden, rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
@pytest.mark.parametrize("tokens", [(1, 197), (4, 197)])
def test_int8_layers_match_fp16_dense_within_int8_tolerance(tokens):
    from edged.compile.int8_gemm import Int8Linear, Int8SparseLinear
    from edged.compile.semi_structured import DTYPE, max_rel_error
    from edged.compile.sparse_tuning import random_2_4_linear

    layer = random_2_4_linear(3072, 768, bias=True)
    x = torch.randn(*tokens, 768, device="cuda", dtype=DTYPE)
    amax = float(x.abs().max())
    with torch.inference_mode():
        ref = layer(x)
        for int8 in (Int8Linear(layer.weight, layer.bias, amax), Int8SparseLinear(layer.weight, layer.bias, amax)):
            y = int8(x)
            assert y.shape == ref.shape and y.dtype == DTYPE and y.is_contiguous()
            assert max_rel_error(y, ref) < 0.05, type(int8).__name__


def _quantize_case(device):
    torch.manual_seed(0)
    x = (torch.randn(37, 48) * 40).to(device, torch.float16)
    x[0, :4] = torch.tensor([2.5, 3.5, -0.5, -1.5])  # ties round to even, as torch.round
    return x


def test_quantize_rows_pads_with_zero_rows_and_dequantize_rows_scales_each_column():
    from edged.compile.int8_kernels import dequantize_rows, quantize_rows

    x = _quantize_case("cpu")
    q = quantize_rows(x, 1.0, 48)
    assert q.shape == (48, 48) and q.dtype == torch.int8 and not q[37:].any()
    assert q[0, :4].tolist() == [2, 4, 0, -2] and int(q.abs().max()) == QMAX
    acc = torch.randint(-1000, 1000, (48, 20), dtype=torch.int32)
    scale, bias = torch.rand(20), torch.randn(20).half()
    y = dequantize_rows(acc, scale, bias, 37)
    assert y.shape == (37, 20) and y.dtype == torch.float16
    torch.testing.assert_close(y, (acc[:37].float() * scale + bias).half())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_triton_quantize_and_dequantize_equal_the_torch_ops():
    from edged.compile.int8_kernels import dequantize_rows, quantize_rows

    x = _quantize_case("cuda")
    assert torch.equal(quantize_rows(x, 0.7, 48).cpu(), quantize_rows(x.cpu(), 0.7, 48))
    acc = torch.randint(-1000, 1000, (48, 20), dtype=torch.int32)
    scale, bias = torch.rand(20), torch.randn(20).half()
    for b in (bias, None):
        got = dequantize_rows(acc.cuda(), scale.cuda(), None if b is None else b.cuda(), 37)
        torch.testing.assert_close(got.cpu(), dequantize_rows(acc, scale, b, 37), rtol=1e-3, atol=1e-3)
