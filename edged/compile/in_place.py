"""Per-layer kernel choice made in place: each candidate is timed inside the whole model's CUDA graph.

Why not per layer in isolation: a layer's kernel can be faster alone and still slow the model down, by the
layout of what it returns (a transposed output sends SDPA to its fp32 math kernels) or by what it does to its
neighbours. So the choice is greedy over groups of layers with one role and shape (all `blocks.*.mlp.fc1`):
switch the group to a candidate kernel, check the model's output against dense, capture the model's graph,
replay it beside the kernels in place (`paired_ms`), and keep the switch only when the whole model gets faster
than them by more than noise (MIN_SPEEDUP). Each kept switch is a measured gain over what it replaced, so the
model does not end slower than dense at the measured batch (beyond the timing noise between separate runs).

Candidates per Linear: "torch" (torch's semi-structured tensor: cuSPARSELt, or CUTLASS on compute
capability 8.x), "edged" (edged's cuSPARSELt binding at the best verified alg id of the worker tuning,
`sparse_tuning.plan_layers`), "edged chained" (edged's binding writing (out, T) and leaving it so: no copy back to
(T, out); a next 2:4 layer reads it as it is, through an elementwise activation, so an MLP's fc1 -> GELU -> fc2
moves its wide hidden activation once instead of three times). Whether the layers after a chained one cope
with its layout is what the in-place timing decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import Tensor, nn

from edged.compile.base import replace_module
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.semi_structured import Shape, TorchSparseLinear, check_close, linear_shapes
from edged.compile.sparse_tuning import MIN_SPEEDUP, PLAN_TIMEOUT_S, LayerChoice, plan_layers
from edged.errors import Unsupported
from edged.measure.clocks import capture_graph
from edged.measure.timing import time_cuda

DENSE = "dense"
EDGED = "edged"
CHAINED = "edged chained"
E2E_TOL = 5e-2  # tens of layers of fp16 rounding in a different order


def role(name: str) -> str:
    """`blocks.3.mlp.fc1` -> `blocks.*.mlp.fc1`: layers that play one part in every block."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def layer_groups(shapes: dict[str, Shape]) -> dict[str, list[str]]:
    """{group: module names}: one role and one shape per group, the most matmul work first."""
    groups: dict[str, list[str]] = {}
    for name, shape in shapes.items():
        groups.setdefault(f"{role(name)} {shape[1]}->{shape[0]}", []).append(name)
    work = {g: sum(shapes[n][0] * shapes[n][1] * shapes[n][3] for n in names) for g, names in groups.items()}
    return dict(sorted(groups.items(), key=lambda item: -work[item[0]]))


@dataclass
class Trial:
    group: str
    kernel: str
    ms: float | None  # the whole model's p50 with this switch (the mean of two timings); None: failed (see error)
    kept: bool
    error: str = ""
    partner: dict[str, str] = field(default_factory=dict)  # other groups switched with this one in the trial
    base_ms: float = 0.0  # the kernels in place before the trial, timed beside it


@dataclass
class InPlaceChoice:
    kernels: dict[str, str]  # group -> kernel ("dense", "torch", "edged", "edged chained")
    dense_ms: float
    best_ms: float
    trials: list[Trial] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)  # module name -> kernel, once applied to a model
    sparse_layers: dict[str, LayerChoice] = field(default_factory=dict)  # module name -> how to rebuild its kernel
    refused: dict[str, str] = field(default_factory=dict)  # weight name -> why no 2:4 kernel can run it
    given_up: str | None = None  # why the kept kernels were given up for dense at the end, when they were


def next_groups(groups: dict[str, list[str]], order: list[str]) -> dict[str, str]:
    """{group: the group of the Linear that comes right after the group's first one in `order` (the model's module
    order)}, where that is another group: the layer a chained group's output would reach (an MLP's fc1 -> fc2)."""
    group_of = {name: g for g, names in groups.items() for name in names}
    partners = {}
    for group, names in groups.items():
        at = order.index(names[0])
        if at + 1 < len(order) and group_of[order[at + 1]] != group:
            partners[group] = group_of[order[at + 1]]
    return partners


def _moves(group: str, kernel: str, kernels: dict[str, str], candidates: dict[str, list[str]],
           partners: dict[str, str]) -> list[dict[str, str]]:
    """The switches one candidate is tried as: alone, and a chained group also with its next group on edged's
    binding (which reads the chained layout as it is): the chain only pays off as a pair, which one switch at a
    time would never try."""
    moves = [{group: kernel}]
    partner = partners.get(group)
    if kernel == CHAINED and partner and kernels[partner] != EDGED and EDGED in candidates.get(partner, []):
        moves.append({group: kernel, partner: EDGED})
    return moves


ModelMs = Callable[[dict[str, str]], tuple[float | None, str]]


def paired_ms(model_ms: ModelMs, current: dict[str, str], switched: dict[str, str]) -> tuple[float | None, float, str]:
    """(switched ms, current ms, why switched failed), timed current, switched, switched, current: the GPU's clock
    drifts by more than the keep margin over seconds (H100, the same MLP kernels 4.59 then 4.86 ms two trials apart),
    and this order cancels a linear drift. Each is the mean of its two timings."""
    first, _ = model_ms(current)
    ms, error = model_ms(switched)
    if ms is None:
        return None, first or 0.0, error
    again, error = model_ms(switched)
    last, _ = model_ms(current)
    base = [t for t in (first, last) if t is not None]
    return (None if again is None else (ms + again) / 2), sum(base) / max(len(base), 1), error


def greedy_choice(groups: list[str], candidates: dict[str, list[str]], model_ms: ModelMs,
                  on_trial: Callable[[Trial], None] | None = None,
                  partners: dict[str, str] | None = None) -> InPlaceChoice:
    """Greedy over `groups` in order: try each candidate kernel of a group with the other groups at their
    kept kernels (a chained candidate also as a pair with its partner group, `_moves`), each timed beside the
    current kernels (`paired_ms`); keep the one with the largest speed-up if it is at least MIN_SPEEDUP.
    `model_ms(kernels by group)` -> (the model's p50 ms, or None and why it failed); `on_trial` sees each
    trial as it lands (a long choice shows progress). At the end the kept kernels are timed beside the dense
    model (`paired_ms`) and given up for it unless faster: each kept switch won against what was in place then,
    but the whole must still beat dense now (a clock that has moved, gains that do not add up)."""
    kernels = {g: DENSE for g in groups}
    dense_ms, error = model_ms(kernels)
    if dense_ms is None:
        raise Unsupported(f"the dense model could not be timed: {error}")
    trials = []
    for group in groups:
        tried = []
        for kernel in candidates.get(group, []):
            for move in _moves(group, kernel, kernels, candidates, partners or {}):
                if all(kernels[g] == k for g, k in move.items()):
                    continue  # what is in place already
                ms, base_ms, error = paired_ms(model_ms, kernels, {**kernels, **move})
                tried.append(Trial(group, kernel, ms, False, error, {g: k for g, k in move.items() if g != group},
                                   base_ms))
                if on_trial is not None:
                    on_trial(tried[-1])
        best = max((t for t in tried if t.ms), key=lambda t: t.base_ms / (t.ms or 1.0), default=None)
        if best is not None and best.ms and best.base_ms / best.ms >= MIN_SPEEDUP:
            best.kept = True
            kernels.update({group: best.kernel, **best.partner})
        trials += tried
    if all(kernel == DENSE for kernel in kernels.values()):
        return InPlaceChoice(kernels, dense_ms, dense_ms, trials)
    dense = {g: DENSE for g in groups}
    best_ms, dense_ms, error = paired_ms(model_ms, dense, kernels)
    if best_ms is None:  # every kept kernel ran in its trials; failing now is a fault, not a choice
        raise Unsupported(f"the chosen kernels could not be timed again: {error}")
    if best_ms >= dense_ms:
        return InPlaceChoice(dense, dense_ms, dense_ms, trials,
                             given_up=f"the kept kernels took {best_ms:.3f} ms against dense {dense_ms:.3f} ms at the end")
    return InPlaceChoice(kernels, dense_ms, best_ms, trials)


class LayerSwitch:
    """Each 2:4 Linear of a CUDA fp16 model with its candidate replacements, built once; `apply_`
    puts one kernel per group in place."""

    def __init__(self, model: nn.Module, groups: dict[str, list[str]], shapes: dict[str, Shape],
                 plan: dict[Shape, LayerChoice]) -> None:
        self.model, self.groups = model, groups
        self.modules: dict[str, dict[str, nn.Module]] = {}  # name -> kernel -> module
        self.choices: dict[str, dict[str, LayerChoice]] = {}  # name -> kernel -> what rebuilds that module
        for names in groups.values():
            for name in names:
                layer = model.get_submodule(name)
                assert isinstance(layer, nn.Linear)  # linear_shapes keeps Linear layers only
                options: dict[str, nn.Module] = {DENSE: layer, "torch": TorchSparseLinear(layer.weight, layer.bias)}
                rebuild = {"torch": LayerChoice(shapes[name][3], None, None, None, True, "chosen in place", "torch")}
                choice = plan.get(shapes[name])
                if choice is not None and choice.sparse_ms is not None:
                    options[EDGED] = choice.module(layer)
                    rebuild[EDGED] = replace(choice, sparse=True)
                if choice is not None and (chained := choice.chained()) is not None:
                    options[CHAINED] = chained.module(layer)
                    rebuild[CHAINED] = chained
                self.modules[name], self.choices[name] = options, rebuild

    def candidates(self) -> dict[str, list[str]]:
        return {g: [k for k in self.modules[names[0]] if k != DENSE] for g, names in self.groups.items()}

    def apply_(self, kernels: dict[str, str]) -> None:
        for group, names in self.groups.items():
            for name in names:
                replace_module(self.model, name, self.modules[name][kernels.get(group, DENSE)])


def replayed_graph(fn: Callable[[], Tensor]) -> tuple[Callable[[], object], Tensor]:
    """`fn` captured in a CUDA graph after one warm-up call and replayed once: (replay, the graph's output).

    Checking the graph's own output saves eager calls, which cost: torch's semi-structured Linear took ~0.25 s
    a call on the H100 outside a graph (plan set-up), so trials that paid five eager calls per layer took 17 s
    per 12-layer group."""
    graph, out = capture_graph(fn, warmup=1)
    graph.replay()
    return graph.replay, out


def timed_in_graph(model: nn.Module, inputs: ModelInputs, reference: Tensor, batch: int, iters: int) -> float:
    """The model's p50 ms replayed from one CUDA graph, after checking the graph's output against `reference`."""
    replay, out = replayed_graph(partial(call_model, model, inputs))
    check_close(out, reference, "the switched model", E2E_TOL)
    return time_cuda(replay, batch, warmup=5, iters=iters).p50_ms


@torch.inference_mode()
def choose_in_place_(model: nn.Module, inputs: ModelInputs, batch: int, iters: int = 30,
                     plan: dict[Shape, LayerChoice] | None = None, tune_s: float = PLAN_TIMEOUT_S,
                     on_trial: Callable[[Trial], None] | None = None) -> InPlaceChoice:
    """Put the fastest verified kernel per layer group into the fp16 CUDA `model`, in place."""
    shapes, refused = linear_shapes(model, inputs)
    plan = plan if plan is not None else plan_layers(sorted(set(shapes.values())), timeout_s=tune_s)
    groups = layer_groups(shapes)
    switch = LayerSwitch(model, groups, shapes, plan)
    reference = call_model(model, inputs)

    def model_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        switch.apply_(kernels)
        try:
            return timed_in_graph(model, inputs, reference, batch, iters), ""
        except (RuntimeError, Unsupported) as exc:  # a kernel that fails or disagrees is not chosen
            return None, str(exc)[:300]

    choice = greedy_choice(list(groups), switch.candidates(), model_ms, on_trial, next_groups(groups, list(shapes)))
    switch.apply_(choice.kernels)
    choice.layers = {name: choice.kernels[g] for g, names in groups.items() for name in names}
    choice.sparse_layers = {name: switch.choices[name][kernel] for name, kernel in choice.layers.items() if kernel != DENSE}
    choice.refused = refused
    return choice
