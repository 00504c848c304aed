"""Run a fixed-shape CUDA model through CUDA graphs, one graph per input shape.

A 2:4 sparse matmul through torch costs tens of microseconds of CPU per call (tensor-subclass
dispatch, cuSPARSELt descriptor and plan set-up) while the kernel itself can take less; a ViT
layer at batch 1 is such a case. Replaying a captured graph skips all host work, so what remains
is the kernels. Shapes are static per graph; a new input shape captures a new graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from edged.compile.inputs import ModelInputs
from edged.data.task import cloned, copy_into, layout_key
from edged.measure.clocks import capture_graph


class GraphedRunner:
    """`runner(inputs) -> output` with inputs already on the GPU; falls back to eager per shape
    when capture fails (recorded in `fallbacks`, shape -> reason)."""

    def __init__(self, fn: Callable[[ModelInputs], Tensor], max_graphs: int = 8) -> None:
        self.fn = fn
        self.max_graphs = max_graphs  # each graph pins its own static buffers and memory pool
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, ModelInputs, Tensor]] = {}
        self.fallbacks: dict[str, str] = {}

    def _capture(self, key: tuple, inputs: ModelInputs) -> None:
        static_in = cloned(inputs)
        try:
            graph, static_out = capture_graph(lambda: self.fn(static_in))
        except RuntimeError as exc:  # an op that cannot be captured: run this shape eagerly
            self.fallbacks[str(key)] = f"CUDA graph capture failed: {exc}"
            return
        self.graphs[key] = (graph, static_in, static_out)

    @torch.inference_mode()
    def __call__(self, inputs: ModelInputs) -> Tensor:
        key = layout_key(inputs)
        if key not in self.graphs and str(key) not in self.fallbacks and len(self.graphs) < self.max_graphs:
            self._capture(key, inputs)
        if key not in self.graphs:
            return self.fn(inputs)
        graph, static_in, static_out = self.graphs[key]
        copy_into(static_in, inputs)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out
