import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tiny_model import tiny_classifier
from edged.methods.base import backbone_layers
from edged.sparse.delta import attach_deltas_, merge_deltas_


def _masks(model, fraction=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(l.weight.shape, generator=g) < fraction for n, l in backbone_layers(model).items()}


def test_value_gradients_equal_the_dense_gradient_at_masked_entries(digits_inputs):
    x, y = digits_inputs[0][:16], digits_inputs[1][:16]
    model = tiny_classifier().eval()
    F.cross_entropy(model(x), y).backward()
    dense = {n: p.grad.clone() for n, p in model.named_parameters()}
    masks = _masks(model)
    deltas = attach_deltas_(model, masks)
    F.cross_entropy(model(x), y).backward()
    for name, delta in deltas.items():
        expected = dense[name].reshape(dense[name].shape[0], -1)[delta.rows, delta.cols]
        torch.testing.assert_close(delta.values.grad, expected, rtol=1e-4, atol=1e-6)
    # no dense weight gradient is produced for any frozen weight
    assert all(p.grad is None or not p.requires_grad
               for n, p in model.named_parameters() if n.endswith("weight") and "head" not in n)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "sparse_delta" not in n)


def test_training_changes_only_masked_entries_and_optimizer_state_is_sized_to_them(digits_inputs):
    x, y = digits_inputs
    model = tiny_classifier().eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = _masks(model, 0.02)
    deltas = attach_deltas_(model, masks)
    values = [d.values for d in deltas.values()]
    optimizer = torch.optim.AdamW(values, lr=1e-2)
    for i in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x[i * 32 : (i + 1) * 32]), y[i * 32 : (i + 1) * 32]).backward()
        optimizer.step()
    nnz = sum(int(m.sum()) for m in masks.values())
    state_numbers = sum(t.numel() for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
    assert state_numbers == 2 * nnz  # exp_avg + exp_avg_sq, one number per trainable entry each
    merge_deltas_(model)
    after = dict(model.named_parameters())
    for name, old in before.items():
        new = after[name].detach()
        if name in masks:
            assert torch.equal(new[~masks[name]], old[~masks[name]])  # bit-identical outside the mask
            assert not torch.equal(new[masks[name]], old[masks[name]])  # and trained inside it
        else:
            assert torch.equal(new, old)


def test_merged_model_computes_what_the_delta_model_computed(digits_inputs):
    x = digits_inputs[0][:8]
    model = tiny_classifier().eval()
    deltas = attach_deltas_(model, _masks(model))
    with torch.no_grad():
        for d in deltas.values():
            d.values.normal_()
        expected = model(x)
    assert merge_deltas_(model) == len(deltas)
    assert not any(hasattr(m, "sparse_delta") for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_only_used_input_columns_are_saved_for_backward():
    layer = nn.Linear(64, 32)
    mask = torch.zeros(32, 64, dtype=torch.bool)
    mask[:, 5] = True
    mask[3, 9] = True
    attach_deltas_(layer, {"weight": mask})
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        layer(torch.randn(10, 64, requires_grad=True)).sum().backward()
    assert (10, 2) in saved and (10, 64) not in saved


def test_autocast_bf16_on_cpu_trains():
    layer = nn.Linear(32, 16)
    attach_deltas_(layer, {"weight": torch.rand(16, 32) < 0.1})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(4, 32))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert layer.sparse_delta.values.grad.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_cuda_autocast_value_gradients_match_the_dense_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(256, 128).cuda()
    x = torch.randn(4, 197, 256, device="cuda")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        layer(x).float().square().mean().backward()
    dense = layer.weight.grad.clone()
    mask = torch.rand(128, 256, device="cuda") < 0.01
    delta = attach_deltas_(layer, {"weight": mask})["weight"]
    with torch.autocast("cuda", dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    out.float().square().mean().backward()
    torch.testing.assert_close(delta.values.grad, dense[delta.rows, delta.cols], rtol=2e-2, atol=1e-4)


def test_value_gradient_in_row_blocks_equals_the_single_block(monkeypatch):
    from edged.sparse import sddmm

    g, x = torch.randn(50, 40), torch.randn(50, 12)
    rows, slots = torch.randint(0, 40, (30,)), torch.randint(0, 12, (30,))
    whole = sddmm.value_grad(g, x, rows, slots)
    monkeypatch.setattr(sddmm, "CHUNK_ELEMENTS", 24)  # 2 rows per block
    torch.testing.assert_close(sddmm.value_grad(g, x, rows, slots), whole)
    torch.testing.assert_close(whole, (g[:, rows] * x[:, slots]).sum(0))
