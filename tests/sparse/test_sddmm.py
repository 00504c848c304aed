"""The value gradient as an SDDMM (edged.sparse.sddmm) and the CUDA sparse-delta path against dense references."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edged.sparse.delta import attach_deltas_
from edged.sparse.sddmm import value_grad, value_grad_torch

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


def _entries(out, cols, fraction, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(out, cols, generator=g) < fraction).nonzero(as_tuple=True)  # row-major, like SparseDelta


@pytest.mark.parametrize("chunk", [1 << 24, 96])  # one block, and blocks of 3 rows
def test_torch_value_grad_equals_the_dense_gradient_at_every_masked_entry(monkeypatch, chunk):
    from edged.sparse import sddmm

    monkeypatch.setattr(sddmm, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    g, x = torch.randn(37, 48), torch.randn(37, 32)
    rows, cols = _entries(48, 32, 0.1)
    dense = g.t() @ x  # (out, in): the full weight gradient
    torch.testing.assert_close(value_grad_torch(g, x, rows, cols), dense[rows, cols], rtol=1e-5, atol=1e-5)
    assert torch.equal(value_grad(g, x, rows, cols), value_grad_torch(g, x, rows, cols))  # CPU takes the torch path


def test_sparse_delta_training_lowers_the_loss_and_keeps_gradients_equal_to_the_dense_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Linear(32, 5))
    x, y = torch.randn(64, 24), torch.randint(0, 5, (64,))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {"0.weight": torch.rand(32, 24) < 0.2, "2.weight": torch.rand(5, 32) < 0.2}
    deltas = attach_deltas_(model, masks)
    optimizer = torch.optim.SGD([d.values for d in deltas.values()], lr=0.5)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        reference = _dense_reference_grads(model, deltas, x, y)
        for name, delta in deltas.items():
            torch.testing.assert_close(delta.values.grad, reference[name], rtol=1e-5, atol=1e-5)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name])  # W0 itself is never written


def _dense_reference_grads(model, deltas, x, y):
    """Gradients of the merged weights (W0 + delta as plain dense layers) at the masked entries."""
    merged = {name: d.merged(model.get_submodule(name[: -len(".weight")]).weight).detach().requires_grad_(True)
              for name, d in deltas.items()}
    h = F.gelu(F.linear(x, merged["0.weight"], model[0].bias))
    F.cross_entropy(F.linear(h, merged["2.weight"], model[2].bias), y).backward()
    return {name: w.grad[deltas[name].rows, deltas[name].cols] for name, w in merged.items()}


@pytest.mark.parametrize("tokens,out,used", [(197, 96, 64), (1000, 768, 682), (64 * 197, 768, 748), (5, 40, 3)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("token_contiguous", [False, True])  # row-major, and strides (1, T) as the delta saves it
@pytest.mark.gpu
@no_cuda
def test_triton_value_grad_equals_the_dense_reference(tokens, out, used, dtype, token_contiguous):
    torch.manual_seed(0)
    g = torch.randn(tokens, out, device="cuda").to(dtype)
    x = torch.randn(tokens, used, device="cuda").to(dtype)
    x = x.t().contiguous().t() if token_contiguous else x
    rows, cols = (t.cuda() for t in _entries(out, used, 0.01 if out > 100 else 0.2))
    expected = (g.double().t() @ x.double())[rows, cols].float()  # float64 reference of the same inputs
    got = value_grad(g, x, rows, cols)
    assert got.dtype == torch.float32 and got.shape == rows.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def _vit_like_mlp(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).to(device)
    masks = {name: torch.rand(model.get_submodule(name[:-7]).weight.shape, device=device) < 0.002
             for name in ("1.weight", "3.weight")}
    return model, masks


@pytest.mark.gpu
@no_cuda
def test_cuda_path_through_the_resident_merged_weight_matches_the_merged_reference_under_bf16_autocast():
    model, masks = _vit_like_mlp("cuda")
    x = torch.randn(8, 197, 256, device="cuda", requires_grad=True)  # 1576 tokens: not a multiple of the tile
    deltas = attach_deltas_(model, masks)
    with torch.no_grad():
        for d in deltas.values():
            d.values.normal_(0, 0.05)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    out.float().square().mean().backward()
    merged = {n: d.merged(model.get_submodule(n[:-7]).weight).detach().requires_grad_(True) for n, d in deltas.items()}
    x_ref = x.detach().clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = F.linear(F.gelu(F.linear(model[0](x_ref), merged["1.weight"], model[1].bias)), merged["3.weight"], model[3].bias)
    h.float().square().mean().backward()
    torch.testing.assert_close(out.float(), h.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=3e-2, atol=1e-4)
    for name, d in deltas.items():
        torch.testing.assert_close(d.values.grad, merged[name].grad[d.rows, d.cols], rtol=3e-2, atol=1e-4)


@pytest.mark.gpu
@no_cuda
def test_a_cuda_graph_captured_training_step_matches_eager():
    def run(graphed):
        model, masks = _vit_like_mlp("cuda")
        deltas = attach_deltas_(model, masks)
        values = [d.values for d in deltas.values()]
        optimizer = torch.optim.AdamW(values, lr=1e-2, capturable=True)
        x, target = torch.randn(4, 197, 256, device="cuda"), torch.randn(4, 197, 256, device="cuda")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                loss = F.mse_loss(model(x).float(), target)
            loss.backward()
            optimizer.step()

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
            optimizer.zero_grad(set_to_none=False)
            step()
        torch.cuda.current_stream().wait_stream(stream)
        if graphed:
            graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=False)
            with torch.cuda.graph(graph):
                step()
            for _ in range(3):
                optimizer.zero_grad(set_to_none=False)
                graph.replay()
        else:
            for _ in range(3):
                optimizer.zero_grad(set_to_none=False)
                step()
        torch.cuda.synchronize()
        return [v.detach().clone() for v in values]

    for eager, graphed in zip(run(False), run(True)):
        assert graphed.abs().sum() > 0
        torch.testing.assert_close(graphed, eager, rtol=1e-3, atol=1e-5)


def test_resident_merged_weight_equals_the_merged_weight_bit_for_bit_and_follows_values_and_weight_writes():
    from edged.sparse.delta import SparseDelta

    weight = torch.randn(48, 32)
    delta = SparseDelta(torch.rand(48, 32) < 0.05)
    with torch.no_grad():
        delta.values.normal_()
    for dtype in (torch.bfloat16, torch.float16):
        resident = delta.resident_merged(weight, dtype)
        assert torch.equal(resident, delta.merged(weight, dtype))
        with torch.no_grad():
            delta.values.add_(1.0)  # an optimizer step: only the nnz entries are rewritten on the next call
        again = delta.resident_merged(weight, dtype)
        assert again.data_ptr() == resident.data_ptr() and torch.equal(again, delta.merged(weight, dtype))
    with torch.no_grad():
        weight.mul_(2)  # the frozen weight written: its version changes, the resident copy is cast again
    assert torch.equal(delta.resident_merged(weight, torch.bfloat16), delta.merged(weight, torch.bfloat16))


def test_a_backward_reuses_the_entries_its_forward_wrote_and_rewrites_them_once_the_values_change():
    from edged.sparse.delta import SparseDelta

    weight = torch.randn(48, 32)
    delta = SparseDelta(torch.rand(48, 32) < 0.05)
    resident = delta.resident_merged(weight, torch.bfloat16)  # the forward's write
    row, col = int(delta.rows[0]), int(delta.cols[0])
    resident[row, col] = 1024.0  # a marker: a write would replace it
    assert float(delta.resident_merged(weight, torch.bfloat16, reuse=True)[row, col]) == 1024.0  # same values: no write
    with torch.no_grad():
        delta.values.add_(0.5)  # an optimizer step between the two calls
    again = delta.resident_merged(weight, torch.bfloat16, reuse=True)
    assert torch.equal(again, delta.merged(weight, torch.bfloat16))
    assert float(delta.resident_merged(weight, torch.bfloat16)[row, col]) != 1024.0  # a forward always writes

@pytest.mark.gpu
@no_cuda
def test_on_cuda_the_saved_input_is_the_used_columns_token_contiguous():
    layer = nn.Linear(64, 32).cuda()
    mask = torch.zeros(32, 64, dtype=torch.bool, device="cuda")
    mask[:, 5] = True
    mask[3, 9] = True
    attach_deltas_(layer, {"weight": mask})
    x = torch.randn(10, 64, device="cuda", requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.shape, t.stride())) or t, lambda t: t):
        layer(x).sum().backward()
    assert (torch.Size([10, 2]), (1, 10)) in saved  # (T, U) read along tokens; the whole (10, 64) input is not kept
    assert not any(shape == torch.Size([10, 64]) for shape, _ in saved)


@pytest.mark.gpu
@no_cuda
@pytest.mark.parametrize("tokens,width,used", [(150, 96, 70), (12608, 768, 748), (5, 3072, 1)])
def test_token_major_columns_are_the_used_columns_stored_along_tokens(tokens, width, used):
    from edged.sparse.sddmm import token_major_columns

    x = torch.randn(tokens, width, device="cuda").to(torch.bfloat16)
    cols = torch.randperm(width, device="cuda")[:used].sort().values
    got = token_major_columns(x, cols)
    assert got.shape == (tokens, used) and got.stride() == (1, tokens)
    assert torch.equal(got, x[:, cols])


def test_token_major_columns_on_the_cpu_are_the_used_columns_stored_along_tokens():
    from edged.sparse.sddmm import token_major_columns

    x, cols = torch.randn(9, 12), torch.tensor([1, 4, 5, 11])
    got = token_major_columns(x, cols)
    assert got.stride() == (1, 9) and torch.equal(got, x[:, cols])
    assert torch.equal(value_grad(torch.ones(9, 3), got, torch.tensor([0, 2]), torch.tensor([3, 0])),
                       value_grad_torch(torch.ones(9, 3), x[:, cols], torch.tensor([0, 2]), torch.tensor([3, 0])))
