"""A weights file's keys against a backbone's state_dict: the prefixes a job drops (`drop_weight_keys`), and
the one message a mismatch gets, at submit (`edged.jobs.validate`, on `edged.models.user_shapes`) and when the
worker loads the model.

Checkpoints often ship with the classifier they were trained with (EfficientNet's `_fc.weight`, `_fc.bias`,
torchvision's `classifier.1.*`), which a backbone mapping inputs to features does not have. Dropping is
explicit: a prefix that drops nothing, or that drops a key the backbone needs, is refused, so a typo cannot
silently leave parameters at the factory's initialisation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

from edged.errors import InvalidInput

Shape = tuple[int, ...]
T = TypeVar("T")

LISTED_KEYS = 20  # keys listed per kind of mismatch; the message gives the full counts
OPTION = "drop_weight_keys"


def drop_keys(state: Mapping[str, T], prefixes: Sequence[str], needed: Collection[str], file_name: str) -> dict[str, T]:
    """`state` without the keys starting with any of `prefixes`; InvalidInput when a prefix matches no key of
    the file or matches a key the backbone needs (`needed`: its state_dict's keys)."""
    reasons = []
    for prefix in prefixes:
        dropped = [key for key in state if key.startswith(prefix)]
        kept_by_backbone = sorted(key for key in dropped if key in needed)
        if not dropped:
            reasons.append(f"{prefix!r} matches no key of {file_name}")
        elif kept_by_backbone:
            reasons.append(f"{prefix!r} would drop {len(kept_by_backbone)} key(s) the backbone needs "
                           f"({_listed(kept_by_backbone)})")
    if reasons:
        raise InvalidInput(f"{OPTION}: {'; '.join(reasons)}; accepted: prefixes of keys in the file that the "
                           "backbone does not have", detail={"prefixes": list(prefixes), "file": file_name})
    return {key: value for key, value in state.items() if not key.startswith(tuple(prefixes))}


def check_match(expected: Mapping[str, Shape], given: Mapping[str, Shape], file_name: str) -> None:
    """InvalidInput unless the file's keys are exactly the backbone's, with the same shapes. The message gives
    the counts and the fix; the detail lists the first LISTED_KEYS keys of each kind."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(key for key in set(expected) & set(given) if tuple(expected[key]) != tuple(given[key]))
    if not (missing or unexpected or mismatched):
        return
    counts = ", ".join(f"{kind}: {len(keys)}" for kind, keys in
                       (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", mismatched))
                       if keys)
    detail = {"missing": missing[:LISTED_KEYS], "unexpected": unexpected[:LISTED_KEYS],
              "shape_mismatches": [f"{key}: file {tuple(given[key])}, backbone {tuple(expected[key])}"
                                   for key in mismatched[:LISTED_KEYS]]}
    raise InvalidInput(f"weights in {file_name} do not match the backbone's parameters ({counts}); "
                       f"{_fix(missing, unexpected, mismatched, expected)}",
                       detail={kind: keys for kind, keys in detail.items() if keys})


def _fix(missing: list[str], unexpected: list[str], mismatched: list[str], expected: Collection[str]) -> str:
    """What to do: drop the extra keys when they are all the file has too many and form whole top-level groups
    the backbone lacks (a classifier); name a prefix on every key (a DataParallel checkpoint's 'module.'); else
    ask for the file that fits."""
    groups = sorted({key.split(".", 1)[0] + "." for key in unexpected})
    if unexpected and not (missing or mismatched) and not any(key.startswith(tuple(groups)) for key in expected):
        which = f"all start with {groups[0]!r}" if len(groups) == 1 else f"start with {', '.join(map(repr, groups))}"
        return f"the unexpected keys {which}: set {OPTION}: {groups!r} to drop them (e.g. the checkpoint's classifier)"
    if len(groups) == 1 and missing and set(missing) <= {key[len(groups[0]):] for key in unexpected}:
        return (f"the file's keys carry the prefix {groups[0]!r} that the backbone's do not: save the state_dict "
                "without it (keys are not renamed)")
    return ("give a checkpoint of this backbone's architecture (its keys and shapes must match the factory's "
            f"state_dict); {OPTION} drops keys the backbone does not have")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:5])
    return shown if len(keys) <= 5 else f"{shown}, and {len(keys) - 5} more"
