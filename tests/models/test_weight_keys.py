"""A weights file's keys against a backbone's: the message names the counts and the fix that fits the mismatch."""

import pytest

from edged.errors import InvalidInput
from edged.models.weight_keys import LISTED_KEYS, check_match, drop_keys

BACKBONE = {"0.weight": (16, 3, 3, 3), "0.bias": (16,), "2.weight": (32, 16)}


def _mismatch(given: dict) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_match(BACKBONE, given, "w.pt")
    return caught.value


def test_extra_top_level_groups_are_offered_as_drop_weight_keys():
    error = _mismatch({**BACKBONE, "_fc.weight": (1000, 32), "_fc.bias": (1000,), "aux.weight": (4,)})
    assert "(unexpected keys: 3)" in error.message
    assert "set drop_weight_keys: ['_fc.', 'aux.']" in error.message
    check_match(BACKBONE, drop_keys({**BACKBONE, "_fc.weight": (1000, 32)}, ["_fc."], BACKBONE, "w.pt"), "w.pt")


def test_a_prefix_on_every_key_is_named_not_offered_for_dropping():
    error = _mismatch({f"module.{key}": shape for key, shape in BACKBONE.items()})
    assert "carry the prefix 'module.'" in error.message and "set drop_weight_keys" not in error.message


def test_missing_keys_and_other_shapes_ask_for_a_checkpoint_of_this_architecture():
    error = _mismatch({"0.weight": (16, 3, 3, 3), "2.weight": (10, 16), "2.bias": (10,)})
    assert "(missing keys: 1, unexpected keys: 1, keys of another shape: 1)" in error.message
    assert "a checkpoint of this backbone's architecture" in error.message
    assert error.detail == {"missing": ["0.bias"], "unexpected": ["2.bias"],
                            "shape_mismatches": ["2.weight: file (10, 16), backbone (32, 16)"]}


def test_long_lists_are_cut_and_counted():
    error = _mismatch({**BACKBONE, **{f"head.{i:03}": (1,) for i in range(LISTED_KEYS + 5)}})
    assert f"(unexpected keys: {LISTED_KEYS + 5})" in error.message and len(error.detail["unexpected"]) == LISTED_KEYS
