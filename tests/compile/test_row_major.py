"""The tiled copy that makes a feature-major 2:4 result row-major (edged.compile.row_major)."""

import pytest
import torch

from edged.compile.row_major import row_major


def test_row_major_leaves_a_row_major_tensor_alone_and_copies_other_layouts():
    y = torch.randn(5, 7)
    assert row_major(y) is y
    strided = torch.randn(7, 5).t()  # (5, 7) with strides (1, 5)
    out = row_major(strided)
    assert out.is_contiguous() and torch.equal(out, strided)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
@pytest.mark.parametrize("tokens, features", [(8, 16), (197, 768), (1576, 3072), (130, 70)])
def test_on_cuda_a_feature_major_result_is_copied_exactly_and_keeps_its_leading_dims(tokens, features):
    feature_major = torch.randn(features, tokens, device="cuda", dtype=torch.float16)  # D (out, T) row-major
    y = feature_major.t()  # (T, out), strides (1, T): what the 2:4 kernels return
    out = row_major(y)
    assert out.is_contiguous() and torch.equal(out, y.contiguous())
    narrowed = torch.randn(features, tokens + 11, device="cuda", dtype=torch.float16)[:, :tokens].t()  # padded T'
    assert torch.equal(row_major(narrowed), narrowed.contiguous())
    if tokens % 2 == 0:  # (batch, sequence, out), as a Linear over a 3-D input returns it
        y3 = y.view(2, tokens // 2, features)
        out3 = row_major(y3)
        assert out3.shape == y3.shape and out3.is_contiguous() and torch.equal(out3, y3.contiguous())
