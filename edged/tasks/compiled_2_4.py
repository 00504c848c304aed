"""2:4 tasks compiled with the cusparselt backend, served through ONE compiled model per resident base.

The tasks on a base that share one 2:4 pattern differ in values only, so the compiled model is built once, from
the first such task's plan (the job's `cusparselt_plan.json`: which Linear runs which cuSPARSELt kernel), and a
switch rewrites only what the two tasks' deltas touch (`edged.compile.task_switch.recompress_changed_`: a 2:4
layer recompressed in place, anything else copied). The values come from the resident base, where the task server
has just written the incoming task's delta, so the compiled model always holds exactly the active task's merged
weights in fp16. The backbone runs from CUDA graphs captured once per input shape; because recompression is in
place, the graphs replay the new task. The head differs in its classes between tasks, so it runs after the graph:
the resident base's head, which the switch has just set, on the fp16 features cast to fp32.

CUDA only: without it cusparselt tasks serve eager on the resident base (`edged.tasks.compiled.serving_route`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from edged.compile.inputs import to_device
from edged.data.task import Inputs
from edged.errors import Corrupt
from edged.tasks.delta import HEAD_PREFIX, TaskDelta
from edged.tasks.resident import ResidentModel, SwitchCost

BACKBONE = "backbone."


@dataclass(frozen=True)
class TaskLayers:
    """What a task's delta touches in the backbone: the tensors it writes and its 2:4 pattern, layer by layer."""

    written: frozenset[str]  # state-dict names written (sparse entries or whole tensors), the head left out
    pattern: dict[str, str]  # pruned weight -> sha256 of its packed keep-mask

    @staticmethod
    def of(delta: TaskDelta) -> "TaskLayers":
        written = frozenset(n for n in (*delta.sparse, *delta.dense) if not n.startswith(HEAD_PREFIX))
        return TaskLayers(written, {n: hashlib.sha256(bits.numpy().tobytes()).hexdigest()
                                    for n, bits in delta.pruned.items()})

    def changed_from(self, other: "TaskLayers") -> list[str]:
        """Backbone tensors whose values may differ between the two tasks' merged models."""
        patterns = {n for n in self.pattern.keys() | other.pattern.keys() if self.pattern.get(n) != other.pattern.get(n)}
        return sorted(self.written | other.written | patterns)


def plan_choices(data: bytes, source: str) -> dict[str, Any]:
    """Weight name -> the kernel choice (`LayerChoice` as a dict) of a cusparselt plan's bytes."""
    try:
        choices = json.loads(data)["details"]["choices"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Corrupt(f"{source} is not a cusparselt plan with per-layer choices: {type(exc).__name__}: {exc}") from None
    if not isinstance(choices, dict):
        raise Corrupt(f"{source}: its per-layer choices are {type(choices).__name__}, not an object")
    return choices


class CompiledBase:
    """The fp16 CUDA copy of a resident base's backbone with its 2:4 Linears on cuSPARSELt (the plan's choices),
    holding the active task's weights; `logits` like the resident base's."""

    def __init__(self, resident: ResidentModel, choices: dict[str, Any], task_id: str, layers: TaskLayers) -> None:
        from edged.compile.cuda_graph import GraphedRunner
        from edged.compile.semi_structured import DTYPE

        self.resident, self.dtype = resident, DTYPE
        with torch.inference_mode():
            self.backbone = copy.deepcopy(resident.model.backbone).to(resident.device, DTYPE).eval()
            self.kernels = _sparsify_(self.backbone, choices)
        self.runner = GraphedRunner(lambda x: self.backbone(x))
        self.active: Optional[str] = task_id  # None while a switch is under way
        self.layers = layers

    def switch_(self, task_id: str, layers: TaskLayers) -> SwitchCost:
        """Hold `task_id`, already active on the resident base: its changed tensors recompressed or copied in."""
        from edged.compile.task_switch import recompress_changed_

        if task_id == self.active:
            return SwitchCost(0.0, 0)
        start = time.perf_counter()
        changed = [n.removeprefix(BACKBONE) for n in layers.changed_from(self.layers) if n.startswith(BACKBONE)]
        state = self.resident.model.backbone.state_dict()
        target = {name: state[name] for name in changed}
        self.active = None  # half-switched until it returns: a failure leaves it unusable, and the caller drops it
        recompress_changed_(self.backbone, target, changed)
        self.active, self.layers = task_id, layers
        torch.cuda.synchronize(self.resident.device)
        moved = sum(t.numel() * 2 for t in target.values())  # fp16 values written (a 2:4 layer whole)
        return SwitchCost(time.perf_counter() - start, moved)

    @torch.inference_mode()
    def logits(self, inputs: Inputs) -> Tensor:
        """(N, classes) float32 on the CPU: the graphed fp16 backbone, then the active task's head."""
        features = self.runner(to_device(inputs, self.resident.device, self.dtype))  # (N, features) fp16
        return self.resident.model.head(features.float()).float().cpu()


def _sparsify_(backbone: nn.Module, choices: dict[str, Any]) -> dict[str, str]:
    """Each backbone Linear the plan runs sparse swapped for its kernel, checked against the dense layer on random
    inputs of its tuned token count. Returns {weight name: kernel}."""
    from edged.compile.base import replace_module
    from edged.compile.semi_structured import DTYPE, check_close
    from edged.compile.sparse_tuning import LayerChoice

    kernels = {}
    for name, raw in choices.items():
        if not raw.get("sparse") or not name.startswith(BACKBONE):
            continue
        module_name = name.removeprefix(BACKBONE).removesuffix(".weight")
        layer = backbone.get_submodule(module_name)
        if not isinstance(layer, nn.Linear):
            raise Corrupt(f"the cusparselt plan runs {name} sparse, but it is a {type(layer).__name__} in the base")
        choice = LayerChoice.from_dict(raw)
        sparse = choice.module(layer)
        x = torch.randn(choice.tokens, layer.in_features, device=layer.weight.device, dtype=DTYPE)  # (T, in)
        check_close(sparse(x), layer(x), f"{name} with {choice.describe()}")
        replace_module(backbone, module_name, sparse)
        kernels[name] = choice.describe()
    return kernels
