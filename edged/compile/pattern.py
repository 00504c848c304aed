"""Checking that exported weights keep the exact N:M pattern of the pruned PyTorch weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from edged.errors import Unsupported
from edged.sparse.nm import N_KEEP, M_GROUP, nm_violations


@dataclass
class PatternCheck:
    """Per pruned layer: where its weight was found in the artifact, or what is wrong with it."""

    artifact: str
    found: dict[str, str] = field(default_factory=dict)  # layer weight name -> name in the artifact
    problems: dict[str, str] = field(default_factory=dict)  # layer weight name -> what is wrong

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            raise Unsupported(
                f"{len(self.problems)} pruned layer(s) lost the 2:4 pattern in {self.artifact}",
                detail={"problems": self.problems, "accepted": "every pruned weight exported unchanged"},
            )

    def as_dict(self) -> dict:
        return {"artifact": self.artifact, "ok": self.ok, "found": self.found, "problems": self.problems}


def weight_problem(expected: Tensor, actual: Tensor, n: int = N_KEEP, m: int = M_GROUP) -> str | None:
    """Why `actual` (oriented like the PyTorch weight) is not the pruned `expected`, or None.

    The N:M pattern is checked on `actual` itself, independently of the comparison, and the
    zero positions must be exactly those of `expected` (same keep-mask).
    """
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} differs from the weight's {tuple(expected.shape)}"
    violations = nm_violations(actual, n, m, limit=3)
    if violations:
        return "not N:M: " + "; ".join(violations)
    if not torch.equal(actual != 0, expected.detach().cpu() != 0):
        return "zero positions differ from the pruned weight's keep-mask"
    return None
