"""Recomputation policies: the same gradients as keeping everything (exact in float32, within bf16 rounding for
compute_dtype), the parts found by structure in several model families, BatchNorm statistics and untrained weights
left alone, and gradient accumulation over micro-batches equal to the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edged.methods.sparse_delta import prepare_sparse
from edged.models.classifier import Classifier
from edged.models.mobilenet_v2 import make_features
from edged.sparse.layers import weight_layers
from edged.train.loop import TrainSettings, forward_backward, train
from edged.train.recompute import (POLICIES, attention_parts, changes_anything, check_policy, checkpointed_parts,
                                   find_blocks, pointwise_parts, training_policy)


@pytest.fixture
def block_vit(test_model_module):
    from edged_jobs_test_model import BlockVit

    torch.manual_seed(0)
    return Classifier(BlockVit(depth=2), 32, 10, "image")


def _sparse_(model: nn.Module, fraction: float = 0.05) -> list[nn.Parameter]:
    """taskedge's trainable layers on every Linear/Conv2d weight (a random mask): the delta's values train."""
    generator = torch.Generator().manual_seed(1)
    masks = {name: torch.rand(layer.weight.shape, generator=generator) < fraction
             for name, layer in weight_layers(model).items() if not name.startswith("head")}
    return prepare_sparse("taskedge", model, masks).parameters


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, policy: str, settings: TrainSettings,
               dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # dropout, where a model has it
    with training_policy(model, policy, dtype):
        forward_backward(model, x, y, dtype, settings)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


SETTINGS = TrainSettings(epochs=1, batch_size=8, lr=0.01, head_lr=0.01)


@pytest.mark.parametrize("policy", [*POLICIES[1:], "checkpoint_blocks:1"])
def test_every_policy_gives_the_gradients_of_keeping_everything(block_vit, policy):
    trainable = _sparse_(block_vit)
    block_vit.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    reference = _gradients(block_vit, x, y, "none", SETTINGS)
    assert set(reference) == {n for n, p in block_vit.named_parameters() if p.requires_grad} and trainable
    assert all(torch.equal(g, reference[n]) for n, g in _gradients(block_vit, x, y, policy, SETTINGS).items())


class RandomScale(nn.Module):
    """Stochastic depth's kind of draw: a random factor per sample from torch.rand, no dropout layer to be seen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rand(x.shape[0], *[1] * (x.dim() - 1))


@pytest.mark.parametrize("random_layer", [lambda: nn.Dropout(0.3), RandomScale])
@pytest.mark.parametrize("policy", ["recompute_mlp", "checkpoint_blocks"])
def test_a_recomputed_random_draw_replays_the_one_drawn_in_forward(block_vit, policy, random_layer):
    """Eager training saves the RNG state for every checkpointed part (only a captured CUDA graph skips it for
    parts without a dropout layer): the recomputation must replay the forward's draws, a dropout's mask or any
    other, or the gradients would be those of other draws."""
    for block in block_vit.backbone.blocks:
        block.mlp.insert(2, random_layer())  # Linear, GELU, the random layer, Linear
    _sparse_(block_vit)
    block_vit.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    reference = _gradients(block_vit, x, y, "none", SETTINGS)
    assert all(torch.equal(g, reference[n]) for n, g in _gradients(block_vit, x, y, policy, SETTINGS).items())


@pytest.mark.parametrize("policy", ["recompute_mlp", "checkpoint_blocks"])
def test_batchnorm_in_training_mode_updates_its_statistics_once(policy):
    """Full fine-tuning trains MobileNetV2 with batch statistics: recomputing a block in backward must not move
    the running statistics a second time, and the gradients stay those of keeping everything."""
    torch.manual_seed(0)
    model = Classifier(nn.Sequential(make_features(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 1280, 10, "image")
    model.train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    start = {n: b.clone() for n, b in model.named_buffers()}
    reference = _gradients(model, x, y, "none", SETTINGS)
    after_one = {n: b.clone() for n, b in model.named_buffers()}
    model.load_state_dict({**model.state_dict(), **start})
    gradients = _gradients(model, x, y, policy, SETTINGS)
    assert all(torch.equal(b, after_one[n]) for n, b in model.named_buffers())
    assert all(torch.equal(g, reference[n]) for n, g in gradients.items())


@pytest.mark.parametrize("policy", POLICIES[1:])
def test_under_autocast_saved_activations_in_bf16_keep_gradients_within_its_rounding(block_vit, policy):
    """compute_dtype and every policy after it (which packs as well) under bf16 autocast."""
    _sparse_(block_vit)
    block_vit.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = _gradients(block_vit, x, y, "none", SETTINGS, torch.bfloat16)
        packed = _gradients(block_vit, x, y, policy, SETTINGS, torch.bfloat16)
    assert packed.keys() == reference.keys()
    for name, g in packed.items():
        assert torch.allclose(g, reference[name], rtol=0.05, atol=0.05 * float(reference[name].abs().max())), name


def test_micro_batches_accumulate_the_whole_batch_gradient(block_vit):
    _sparse_(block_vit)
    block_vit.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    whole = _gradients(block_vit, x, y, "none", SETTINGS)
    accumulated = _gradients(block_vit, x, y, "recompute_attn", TrainSettings(**{**vars(SETTINGS), "micro_batch": 3}))
    assert all(torch.allclose(g, whole[n], rtol=1e-4, atol=1e-6) for n, g in accumulated.items())


def test_training_under_a_policy_leaves_untrained_weights_bit_identical(block_vit):
    trainable = {id(p) for p in _sparse_(block_vit)}
    frozen = {n: p.detach().clone() for n, p in block_vit.named_parameters() if id(p) not in trainable}
    params = dict(block_vit.named_parameters())
    params = {n: p for n, p in params.items() if id(p) in trainable or n.startswith("head")}
    for p in params.values():
        p.requires_grad_(True)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    settings = TrainSettings(epochs=1, batch_size=8, lr=0.01, head_lr=0.01, recompute="checkpoint_blocks",
                             micro_batch=4)
    train(block_vit, params, {n for n in params if n.startswith("head")}, (x, y), (x, y), settings,
          torch.device("cpu"))
    for name, value in frozen.items():
        if name not in params:
            assert torch.equal(dict(block_vit.named_parameters())[name], value), name
    assert "forward" not in block_vit.backbone.blocks[0].__dict__  # the policy is removed after training


def test_parts_are_found_by_structure(block_vit):
    """timm-style blocks (attn + mlp), MobileNetV2's inverted residuals, a transformers BERT encoder."""
    assert len(find_blocks(block_vit)) == 2
    assert [type(p).__name__ for p in pointwise_parts(block_vit)] == ["Sequential"] * 2
    assert [type(p).__name__ for p in attention_parts(block_vit)] == ["Attention"] * 2
    features = make_features()
    assert len(find_blocks(nn.Sequential(features))) == 19
    assert {type(p).__name__ for p in pointwise_parts(features)} == {"ConvBNReLU6"}  # the 1x1 expansions
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=64)
    bert = transformers.BertModel(config)
    assert len(find_blocks(bert)) == 2 and len(pointwise_parts(bert)) == 2 and len(attention_parts(bert)) == 2


def test_a_flat_stack_of_layers_has_no_blocks():
    assert find_blocks(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_policies_peaks_are_ordered_on_a_small_vit_under_bf16(test_model_module):
    """On CUDA under autocast each policy keeps no more than the one before it (allocator peaks over three steps of
    sparse training, 1 % slack for rounding), and block checkpointing well under keeping everything."""
    from edged_jobs_test_model import BlockVit

    from edged.train.memory_plan import probe_step

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = Classifier(BlockVit(depth=4, dim=64, hidden=256), 64, 10, "image").to(device)
    trainable = {id(v) for v in _sparse_(model)}
    params = {name: p for name, p in model.named_parameters() if id(p) in trainable}
    x, y = torch.randn(64, 3, 16, 16, device=device), torch.randint(0, 10, (64,), device=device)
    settings = TrainSettings(epochs=1, batch_size=64, lr=0.01, head_lr=0.01)
    peaks = {p: probe_step(model, params, x, y, TrainSettings(**{**vars(settings), "recompute": p}), device).peak_mb
             for p in POLICIES}
    print(peaks)
    ordered = list(peaks.values())
    assert all(later <= earlier * 1.01 for earlier, later in zip(ordered, ordered[1:])), peaks
    # H200, this model: none 1014, compute_dtype 1002, recompute_mlp 961, recompute_attn 934, checkpoint_blocks
    # 918 MB (its weights and optimizer dominate), so: strictly below "none" at both ends, not by a fixed ratio
    assert peaks["checkpoint_blocks"] < peaks["recompute_mlp"] < peaks["none"], peaks
    assert peaks["compute_dtype"] < peaks["none"], peaks


def test_compute_dtype_packs_the_float32_inputs_of_norm_layers_only():
    from edged.train.recompute import NormInputsInDtype

    model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 16))
    seen: list[torch.Tensor] = []
    model[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with NormInputsInDtype(model, torch.bfloat16) as packing:
        model(torch.randn(4, 10, 16))
        norm_input, other = seen[0], torch.randn(4, 10, 16)
        packed = packing.pack(norm_input)
        assert isinstance(packed, tuple) and packed[0].dtype == torch.bfloat16
        assert packing.unpack(packed).dtype == torch.float32
        assert torch.allclose(packing.unpack(packed), norm_input, rtol=1e-2, atol=1e-2)
        assert packing.pack(other) is other and packing.pack(model[0].weight) is model[0].weight
    assert len(model[1]._forward_pre_hooks) == 1 and not model._forward_pre_hooks  # only the test's own is left


def test_checkpointing_the_first_blocks_keeps_the_rest_and_is_refused_without_a_count(block_vit):
    blocks = find_blocks(block_vit)
    assert checkpointed_parts(block_vit, "checkpoint_blocks:1") == blocks[:1]
    assert changes_anything(block_vit, "checkpoint_blocks:1", None)
    assert not changes_anything(block_vit, f"checkpoint_blocks:{len(blocks)}", None)  # that is checkpoint_blocks
    for wrong in ("checkpoint_blocks:0", "checkpoint_blocks:", "checkpoint_blocks:two"):
        with pytest.raises(ValueError, match="checkpoint_blocks:K for the first K blocks"):
            check_policy(wrong)
