"""A job's training step, forward and backward, replayed from one CUDA graph for its fixed-shape batches.

Why: on a GPU a small model under bf16 is host-bound. MiniLM-L6 on 128 articles x 128 tokens took 5.5 ms a
forward call for 2.5 ms of kernels, and token selection's extra small kernels made it slower, not faster. A
replayed graph launches the whole forward and backward at once, so the step costs its kernels.

What is captured: zero_grad, the forward (autocast, recomputation, micro-batches: whatever `loss_of` does) and the
backward, which leaves each trainable tensor's gradient in the graph's memory. The optimizer, the loss scaler and
the schedule stay eager: they touch only the trainable tensors (a few multi-tensor kernels) and keep their
Python-side state (learning rates, loss scale) as it is, so a graphed job trains as an eager one does.

A batch of another shape (an epoch's last, smaller one) runs eagerly; the first `WARM_UP` full batches run
eagerly on a side stream, as capture requires (cuBLAS handles, autograd's lazy state). A capture that fails (an
operation that reads a value back to the host, which a graph cannot hold) leaves the job eager, with the reason
in its metrics.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch
from torch import Tensor

from edged.data.task import Inputs, cloned, copy_into, layout_key
from edged.measure.clocks import warm_up_on_side_stream

log = logging.getLogger(__name__)

WARM_UP = 3  # eager full batches before the capture
MIN_FULL_STEPS = 16  # fewer full batches in a run do not repay a capture's warm-up and recording (~3 steps' time)

LossOf = Callable[[Inputs, Inputs], Tensor]  # (x, y) on the device -> the batch's loss, backward already run


class GraphedStep:
    """`loss_of` for the run's full batches: eager warm-up, then one capture, then replays. `state` says where it
    is: "warming up", "captured" or "failed: <why>" (then every step runs eagerly)."""

    def __init__(self, loss_of: LossOf, params: list[Tensor], batch_size: int) -> None:
        self._loss_of, self._params, self.batch_size = loss_of, params, batch_size
        self._warmed = 0
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        self._x: Inputs = torch.empty(0)
        self._y: Inputs = torch.empty(0)
        self._loss = torch.empty(0)
        self._grads: list[Optional[Tensor]] = []
        self.state = "warming up"
        self._setup_steps_s: list[float] = []  # each warm-up step's and the capture's (its replay included) seconds
        self._replay_s: Optional[float] = None  # one replay, timed right after the capture

    @property
    def setup_steps(self) -> int:
        """How many of the WARM_UP + 1 setup steps (the eager warm-ups, then the capture) have run."""
        return len(self._setup_steps_s)

    def setup_s(self, since: int = 0, until: Optional[int] = None) -> float:
        """What the setup steps from the `since`-th to the `until`-th (all that ran, by default) cost beyond as many
        replayed steps (they train as well): paid by whichever run steps first, the learning-rate search's trials or
        else training. 0 until the capture's replay has been timed, which may come in a later run: the search's
        trials can end before the capture, and training captures."""
        if self._replay_s is None:
            return 0.0
        done = self._setup_steps_s[since:until]
        return max(sum(done) - len(done) * self._replay_s, 0.0)

    def takes(self, y: Inputs) -> bool:
        """Whether this batch (its targets `y`) is one of the run's full batches and graphs still work."""
        labels = y if isinstance(y, Tensor) else y["y"]
        return not self.state.startswith("failed") and int(labels.shape[0]) == self.batch_size

    def __call__(self, x: Inputs, y: Inputs) -> Tensor:
        if self._warmed < WARM_UP:
            self._warmed += 1
            out: list[Tensor] = []
            torch.cuda.synchronize()  # four steps a job: their seconds are the setup's, not earlier work's
            started = time.perf_counter()
            warm_up_on_side_stream(lambda: out.append(self._eager(x, y)), 1)
            torch.cuda.synchronize()
            self._setup_steps_s.append(time.perf_counter() - started)
            return out[0]
        if self._graph is None:
            torch.cuda.synchronize()
            started = time.perf_counter()
            loss = self._capture(x, y)
            torch.cuda.synchronize()
            self._setup_steps_s.append(time.perf_counter() - started)
            return loss
        if layout_key(self._x) != layout_key(x) or layout_key(self._y) != layout_key(y):  # e.g. a text batch padded otherwise
            return self._eager(x, y)
        copy_into(self._x, x)
        copy_into(self._y, y)
        for p, grad in zip(self._params, self._grads):
            p.grad = grad  # an eager step in between set others; the replay writes these
        self._graph.replay()
        return self._loss

    def _x_device(self) -> torch.device:
        return self._x.device if isinstance(self._x, Tensor) else next(iter(self._x.values())).device

    def _eager(self, x: Inputs, y: Inputs) -> Tensor:
        for p in self._params:
            p.grad = None
        return self._loss_of(x, y)

    def _capture(self, x: Inputs, y: Inputs) -> Tensor:
        """Record this batch's step and replay it (a capture runs nothing); on failure, run it eagerly."""
        self._x, self._y = cloned(x), cloned(y)
        for p in self._params:
            p.grad = None  # the captured backward then allocates each gradient in the graph's memory
        graph = torch.cuda.CUDAGraph()
        generator = torch.cuda.default_generators[self._x_device().index or 0]
        before = generator.clone_state()
        try:
            with torch.cuda.graph(graph):
                self._loss = self._loss_of(self._x, self._y)
        except Exception as exc:  # noqa: BLE001  # any failure to record leaves the job eager, never failed
            # A capture that fails leaves the device's generator in capture mode: every later dropout would raise
            # "Offset increment outside graph capture". Its state from before the capture is put back instead.
            generator.graphsafe_set_state(before)
            self.state = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            log.warning("training step not captured in a CUDA graph, training eagerly (%s)", self.state)
            torch.cuda.synchronize()
            return self._eager(x, y)
        self._graph, self.state = graph, "captured"
        self._grads = [p.grad for p in self._params]
        torch.cuda.synchronize()
        started = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        self._replay_s = time.perf_counter() - started
        return self._loss


def graphed_step(loss_of: LossOf, params: list[Tensor], device: torch.device, enabled: bool, samples: int,
                 batch_size: int, epochs: int) -> tuple[Optional[GraphedStep], str]:
    """(the run's GraphedStep, or None and why it has none)."""
    if not enabled:
        return None, "off: not asked for"
    if device.type != "cuda":
        return None, f"off: {device.type} has no CUDA graphs"
    full_steps = samples // batch_size * epochs
    if full_steps < MIN_FULL_STEPS:
        return None, f"off: {full_steps} full batches (a capture needs >= {MIN_FULL_STEPS} to repay itself)"
    return GraphedStep(loss_of, params, batch_size), "warming up"
