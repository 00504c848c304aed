"""Token selection (TR-PTS) on the real all-MiniLM-L6-v2: exactly the kept tokens plus one merged token run
after the chosen layer, the identity when every token is kept, and the options checked where they are read."""

import pytest
import torch

from edged.data.task import TaskData
from edged.errors import InvalidInput
from edged.models import load_model
from edged.models.token_selection import TokenSelection, encode_selected
from edged.pipeline.config import ModelOptions

TEXTS = [
    "Share prices fell sharply today as investors worried about the rising cost of borrowing in Europe.",
    "A man is playing a guitar.",
    "The striker scored twice in the second half.",
]


@pytest.fixture(scope="module")
def plain():
    return load_model("minilm-l6", num_classes=3, seed=0)


@pytest.fixture(scope="module")
def inputs(plain):
    return plain.preprocess(TaskData("text", TEXTS, torch.tensor([0, 1, 2]), ["a", "b", "c"]))


def _features(model, inputs):
    with torch.no_grad():
        return model.backbone(inputs)


@pytest.mark.parametrize("keep, expected", [(6, [6, 6, 6]), (0.5, None)])
def test_the_layers_after_the_chosen_one_run_on_the_kept_tokens_plus_one_merged(plain, inputs, keep, expected):
    lengths = inputs["attention_mask"].sum(1)
    kept = expected or torch.ceil(lengths * keep).long().tolist()
    captured = []
    hook = plain.model.backbone.encoder.encoder.layer[2].register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].shape))
    try:
        with torch.no_grad():
            hidden, sizes = encode_selected(plain.model.backbone.encoder, inputs, TokenSelection(keep, layer=1))
    finally:
        hook.remove()
    slots = max(kept)
    assert captured == [torch.Size([3, slots + 1, 384])] and hidden.shape == (3, slots + 1, 384)
    sizes = sizes[..., 0]  # (N, R + 1): 1 per kept token, 0 for filler, the merged token's count last
    assert (sizes[:, :-1] == 1).sum(1).tolist() == kept
    assert sizes[:, -1].tolist() == (lengths - torch.tensor(kept)).tolist()
    assert sizes.sum(1).tolist() == lengths.tolist()  # every real token is kept or merged, padding neither


def test_keeping_every_token_is_the_identity_bit_for_bit(plain, inputs):
    longest = int(inputs["attention_mask"].sum(1).max())
    for options in ({"token_keep": 1.0}, {"token_keep": longest, "token_layer": 0}):
        selecting = load_model("minilm-l6", num_classes=3, seed=0, **options)
        assert torch.equal(_features(selecting.model, inputs), _features(plain.model, inputs))
    merging = load_model("minilm-l6", num_classes=3, seed=0, token_keep=0.5, token_layer=1)
    assert not torch.allclose(_features(merging.model, inputs), _features(plain.model, inputs), atol=1e-3)


def test_a_text_keeping_all_its_tokens_is_unchanged_beside_one_that_merges(plain, inputs):
    """The selecting path runs the layers itself: a short text that keeps everything matches the plain encoder."""
    short = int(inputs["attention_mask"].sum(1).min())
    selecting = load_model("minilm-l6", num_classes=3, seed=0, token_keep=short, token_layer=0)
    features, reference = _features(selecting.model, inputs), _features(plain.model, inputs)
    index = int(inputs["attention_mask"].sum(1).argmin())
    assert torch.allclose(features[index], reference[index], atol=1e-5)
    assert not torch.allclose(features[0], reference[0], atol=1e-3)  # the long text merged


def test_the_selecting_forward_never_reads_a_value_back_from_the_device(plain, inputs):
    """A read-back (`bool(t)`, `int(t)`, `.item()`: aten._local_scalar_dense) is a host sync on a GPU: the host then
    waits instead of queueing the later layers. The kept slot count comes from the padded length instead."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ReadBacks(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                self.seen.append(func)
            return func(*args, **(kwargs or {}))

    encoder = plain.model.backbone.encoder
    length = inputs["attention_mask"].shape[1]
    for selection in (TokenSelection(0.5, layer=1), TokenSelection(4, layer=0)):
        with torch.no_grad(), ReadBacks() as mode:
            hidden, _ = encode_selected(encoder, inputs, selection)
        assert mode.seen == [] and hidden.shape[1] == selection.slots(length) + 1


def test_token_options_are_checked():
    with pytest.raises(InvalidInput, match=r"token_layer must be in \[0, 4\]"):
        load_model("minilm-l6", num_classes=3, token_keep=0.5, token_layer=5)
    with pytest.raises(InvalidInput, match="token_keep must be a number"):
        load_model("minilm-l6", num_classes=3, token_keep="half")
    for bad in (0, 1.5, 2.5, -3, True):
        with pytest.raises(ValueError, match="token_keep"):
            ModelOptions(token_keep=bad)
    with pytest.raises(ValueError, match="token_layer has no effect without token_keep"):
        ModelOptions(token_layer=1)
    assert ModelOptions(token_keep=32, token_layer=0).token_keep == 32
