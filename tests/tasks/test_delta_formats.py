"""Both delta formats on one real 2:4 adaptation: format 2 (what edged writes: the keep-mask bit-packed, only the
trained entries as indices and values) and format 1 (what boards already hold: every pruning zero as an index
and a value, no `delta_format` metadata), built here in format 1's documented layout from the same run. Each
rebuilds the merged model bit for bit, through `apply_delta_` and on the task server's resident base."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from tiny_model import tiny_classifier
from edged.data.preprocess import preprocess_images
from edged.errors import Corrupt
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import apply_delta_, write_outputs
from edged.tasks.delta import parse_delta
from edged.tasks.resident import ResidentModel


def _preprocess(task):
    return preprocess_images(task.x, image_size=16)


def _format_1(merged: dict[str, torch.Tensor], changed: dict, keep_masks: dict[str, torch.Tensor]) -> bytes:
    """The delta as edged wrote it before format 2: pruned and trained flat indices together, their values."""
    tensors = {}
    for name, indices in changed.items():
        if indices is None:
            tensors[f"{name}::dense"] = merged[name].contiguous()
            continue
        pruned = (~keep_masks[name]).flatten().nonzero().flatten() if name in keep_masks else indices[:0]
        union = torch.cat([pruned, indices]).unique()
        tensors[f"{name}::indices"] = union
        tensors[f"{name}::values"] = merged[name].flatten()[union].contiguous()
    for name in set(keep_masks) - set(changed):
        union = (~keep_masks[name]).flatten().nonzero().flatten()
        tensors[f"{name}::indices"] = union
        tensors[f"{name}::values"] = merged[name].flatten()[union].contiguous()
    return save_safetensors(tensors, {"method": "taskedge", "layers": json.dumps(sorted(changed))})


@pytest.fixture(scope="module")
def run_2_4(tmp_path_factory):
    from edged.data.bundled import mnist_5k

    digits_task = mnist_5k().subset(torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:400])
    config = AdaptConfig(method="taskedge", sparsity="2:4", dense_reference=False, epochs=1, batch_size=32,
                         budget=0.01, lr=3e-2, device="cpu")
    result = adapt(tiny_classifier(), _preprocess, digits_task, config)
    keep_masks = {name: keep.cpu() for name, keep in result.pruning.keep_masks.items()}
    directory = tmp_path_factory.mktemp("delta-formats")
    paths = write_outputs(result.model, result.adaptation, directory, config, "tiny", keep_masks=keep_masks)
    merged = result.model.eval()
    changed = dict(result.adaptation.changed) | {"head.weight": None, "head.bias": None}
    old = directory / "format-1.safetensors"
    old.write_bytes(_format_1(merged.state_dict(), changed, keep_masks))
    return merged, {"2": paths["delta"], "1": old}, _preprocess(digits_task)[:16]


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.uint8) if tensor.is_floating_point() else tensor


@pytest.mark.parametrize("version", ["1", "2"])
def test_either_format_applied_to_the_base_is_the_merged_model_bit_for_bit(run_2_4, version):
    merged, paths, _ = run_2_4
    fresh = tiny_classifier()
    apply_delta_(fresh, paths[version])
    for name, value in merged.state_dict().items():
        assert torch.equal(_bits(fresh.state_dict()[name]), _bits(value)), name


def test_both_formats_on_the_resident_base_predict_like_the_merged_model_and_the_base_comes_back(run_2_4):
    merged, paths, x = run_2_4
    base = tiny_classifier().eval()
    original = {name: t.clone() for name, t in base.state_dict().items() if not name.startswith("head.")}
    resident = ResidentModel(base, _preprocess, torch.device("cpu"))
    expected = merged(x)
    held = {}
    for version in ("1", "2", "1"):
        placed = resident.place(parse_delta(paths[version].read_bytes(), version), version)
        resident.activate_(version, placed)
        assert torch.equal(resident.logits(x), expected), version
        held[version] = placed.nbytes
    assert held["2"] < held["1"]  # format 2's zeros are placed as indices only, without values
    resident.deactivate_()
    for name, value in base.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(_bits(value), _bits(original[name])), name


def test_format_2_stores_the_pattern_in_bits_and_is_smaller(run_2_4):
    _, paths, _ = run_2_4
    new, old = paths["2"].read_bytes(), paths["1"].read_bytes()
    assert len(new) < len(old) / 2
    tensors = load_safetensors(new)
    patterns = {key: t for key, t in tensors.items() if key.endswith("::pattern")}
    assert patterns and all(t.dtype == torch.uint8 for t in patterns.values())
    assert parse_delta(old, "old").pruned == {}  # format 1 carries its zeros as entries


def test_a_delta_of_an_unknown_format_or_with_entries_its_format_lacks_is_refused(run_2_4):
    _, paths, _ = run_2_4
    tensors = load_safetensors(paths["2"].read_bytes())
    with pytest.raises(Corrupt, match=r"delta format '3'; this edged reads formats \['1', '2'\]"):
        parse_delta(save_safetensors(tensors, {"delta_format": "3"}), "future")
    with pytest.raises(Corrupt, match="not a format-1 delta entry"):
        parse_delta(save_safetensors(tensors), "unmarked")  # a pattern without the format marker
    name = next(key for key in tensors if key.endswith("::pattern")).rpartition("::")[0]
    torn = tensors | {f"{name}::pattern": tensors[f"{name}::pattern"][:-1].clone()}
    with pytest.raises(Corrupt, match="its 2:4 pattern is"):
        apply_delta_(tiny_classifier(), _write(paths["2"].parent / "torn.safetensors", torn))


def _write(path, tensors):
    path.write_bytes(save_safetensors(tensors, {"delta_format": "2"}))
    return path
