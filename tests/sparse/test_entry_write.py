"""The resident merged weight's entry write (edged.sparse.entry_write): torch's numbers, bit for bit."""

import pytest
import torch

from edged.sparse.entry_write import write_entries


def _case(device, dtype):
    g = torch.Generator().manual_seed(0)
    merged = torch.randn(300, 200, generator=g).to(dtype)
    index = torch.randperm(merged.numel(), generator=g)[:2500].sort().values  # unique, like a mask's entries
    values = torch.randn(2500, generator=g) * 1e-2  # small updates: the rounding to the compute dtype matters
    return merged.to(device), index.to(device), merged.flatten()[index].to(device), values.to(device)


def _torch_reference(merged, index, base, values):
    expected = merged.clone().flatten()
    expected[index] = base + values.to(merged.dtype)
    return expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_cuda_kernel_writes_torchs_numbers_bit_for_bit(dtype):
    merged, index, base, values = _case("cuda", dtype)
    expected = _torch_reference(merged, index, base, values)
    write_entries(merged.view(-1), index, base, values)
    assert torch.equal(merged.flatten(), expected)
