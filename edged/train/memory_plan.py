"""The training memory plan: the recomputation policy and micro-batch that keep training inside a memory budget.

Measured, not estimated. A probe runs three real forward/backward/AdamW steps of one micro-batch (the later ones
with the optimizer state in place, as every later step has it; the faster of those two is the step's time) at
learning rate 0, so the trained values do not move; BatchNorm statistics and the RNG streams are put back after.
With gradient accumulation every micro-step peaks alike, so one micro-batch's steps measure the plan. The peak is
the whole device's: the CUDA allocator's (weights, optimizer state, activations), or on CPU the process's resident
set (the Python runtime and torch's libraries included), whose high-water mark is reset before each probe.

Each policy (`edged.train.recompute.POLICIES`, skipping those that change nothing on this model) is a candidate
at the largest micro-batch (the batch, halved as often as needed; gradients accumulate to the same batch) whose
measured peak is within the budget's headroom; `checkpoint_blocks` at the fewest first blocks that fit
(`checkpoint_blocks:K`: each block left out is one block's forward less to recompute). The plan is the candidate
whose measured step is the shortest for the whole batch (a micro-step's time times the accumulation steps):
the order of the policies is their memory, not their time (on ViT-B/16 checkpointing the first 4 blocks keeps as
little as recomputing every MLP, in less time). Where nothing is recomputed and the whole batch fits, no other
candidate is probed: none can be faster. Sizes are probed upwards, and a size whose extrapolated peak would not fit
is not run, so probing stays inside the budget too. If the most memory-saving policy does not fit at micro-batch
1, `OutOfBudget` names the smallest budget that would have worked.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from edged.calibrate.memory import current_mb, measure_peak
from edged.data.task import Inputs, take, to_device
from edged.errors import InvalidInput, OutOfBudget
from edged.train.loop import TrainSettings, amp_dtype, forward_backward, set_train_mode
from edged.train.recompute import POLICIES, changes_anything, find_blocks, partial_policy, training_policy

# A probe's peak must stay this far below the budget: later steps vary by allocator rounding and heap
# fragmentation (on CPU, probes of one plan in one process varied by up to 5 % here).
HEADROOM = 0.9


@dataclass
class TrainingPlan:
    budget_mb: Optional[float]
    policy: str
    micro_batch: int
    batch_size: int  # the batch a step trains on: the job's, or all training samples where they are fewer
    probe_peaks_mb: dict[str, float] = field(default_factory=dict)  # "policy@micro_batch" -> measured peak
    probe_step_ms: dict[str, float] = field(default_factory=dict)  # "policy@micro_batch" -> one micro-step's time

    def summary(self) -> dict[str, Any]:
        """The job's `training_memory` metrics."""
        return {"budget_mb": self.budget_mb, "policy": self.policy, "micro_batch": self.micro_batch,
                "accumulation_steps": _steps(self.batch_size, self.micro_batch),
                "probe_peaks_mb": self.probe_peaks_mb, "probe_step_ms": self.probe_step_ms}

    def applied_to(self, settings: TrainSettings) -> TrainSettings:
        """The plan's policy and micro-batch; under a budget, eager steps: the probes measured eager peaks, and a
        graph's private memory pool stays reserved beside an eager step's (an epoch's smaller last batch)."""
        micro_batch = self.micro_batch if self.micro_batch < self.batch_size else None
        cuda_graph = settings.cuda_graph and self.budget_mb is None
        return replace(settings, recompute=self.policy, micro_batch=micro_batch, cuda_graph=cuda_graph)


def unbudgeted_plan(settings: TrainSettings) -> TrainingPlan:
    return TrainingPlan(None, "none", settings.batch_size, settings.batch_size)


def plan_training(model: nn.Module, params: dict[str, nn.Parameter], train_data: tuple[Inputs, Tensor],
                  settings: TrainSettings, device: torch.device, budget_mb: float) -> TrainingPlan:
    """The fastest measured plan whose whole peak fits `budget_mb` (module docstring). Each policy's micro-batch
    grows 1, 2, 4, ... (halvings of the batch, read upwards) while the next size's peak, extrapolated from those
    measured, fits: a probe predicted not to fit is not run, so probing itself stays inside the budget (but for
    micro-batch 1, the smallest step there is)."""
    inputs, labels = train_data
    batch = min(settings.batch_size, int(labels.shape[0]))
    x, y = to_device(take(inputs, slice(0, batch)), device), labels[:batch].to(device)
    dtype = amp_dtype(device, settings.amp)
    policies = [p for p in POLICIES if changes_anything(model, p, dtype)]
    limit = budget_mb * HEADROOM
    peaks: dict[str, float] = {}
    step_ms: dict[str, float] = {}

    def probe(policy: str, micro: int) -> float:
        """One micro-batch's steps: with accumulation every micro-step peaks alike (gradients are summed in place)."""
        key = f"{policy}@{micro}"
        if key not in peaks:
            measured = probe_step(model, params, take(x, slice(0, micro)), y[:micro],
                                  replace(settings, recompute=policy, micro_batch=None), device)
            peaks[key], step_ms[key] = round(measured.peak_mb, 1), round(measured.step_s * 1e3, 2)
        return peaks[key]

    smallest = probe(policies[-1], 1)
    if smallest > limit:
        raise _too_small(budget_mb, peaks, f"{policies[-1]}@1", smallest)
    base = current_mb(device) or 0.0  # after a first step: the runtime's one-time costs (kernels, imports) are in
    candidates = _fitting_candidates(model, policies, _micro_batches(batch), probe, base, limit)
    policy, micro = fastest(candidates, step_ms, batch)
    return TrainingPlan(budget_mb, policy, micro, batch, peaks, step_ms)


def fastest(candidates: list[tuple[str, int]], step_ms: dict[str, float], batch: int) -> tuple[str, int]:
    """The (policy, micro-batch) whose measured micro-step times its accumulation steps is the shortest; the
    earlier (the less recomputing) on a tie."""
    return min(candidates, key=lambda c: step_ms[f"{c[0]}@{c[1]}"] * _steps(batch, c[1]))


def _fitting_candidates(model: nn.Module, policies: list[str], sizes: list[int], probe: Callable[[str, int], float],
                        base: float, limit: float) -> list[tuple[str, int]]:
    """(policy, its largest micro-batch within `limit`) for every policy that fits at all, `checkpoint_blocks` at
    the fewest first blocks that fit; only the first policy where it fits the whole batch (nothing recomputed,
    nothing accumulated: no other plan is faster)."""
    candidates: list[tuple[str, int]] = []
    for policy in policies:
        # A policy that saves more fits where a cheaper one did: its ladder starts one size below the largest so
        # far (two points to extrapolate from); the size it is a candidate at is measured all the same.
        start = max(0, sizes.index(max(c[1] for c in candidates)) - 1) if candidates else 0
        largest = _largest_fitting(functools.partial(probe, policy), sizes[start:], base, limit)
        if largest:
            candidates.append((policy, largest))
        if largest == sizes[-1] and policy == policies[0]:
            return candidates
    blocks = len(find_blocks(model))
    if candidates and candidates[-1][0] == "checkpoint_blocks" and blocks > 1:
        micro = candidates[-1][1]
        fewest = _fewest_fitting(lambda k: probe(partial_policy(k) if k < blocks else "checkpoint_blocks", micro),
                                 blocks, limit)
        if fewest < blocks:
            candidates[-1] = (partial_policy(fewest), micro)
    return candidates or [(policies[-1], 1)]


def _steps(batch: int, micro_batch: int) -> int:
    """Micro-steps accumulated per optimizer step."""
    return -(-batch // micro_batch)


def _micro_batches(batch: int) -> list[int]:
    """The batch halved down to 1, smallest first: 1, 2, 4, 8, 16, 32 for 32; 1, 3, 6, 12, 25 for 25."""
    sizes, size = [], batch
    while size >= 1:
        sizes.append(size)
        size //= 2
    return sorted(set(sizes))


def _largest_fitting(peak_at: Callable[[int], float], sizes: list[int], base: float, limit: float) -> int:
    """The largest of `sizes` (ascending) measured within `limit`, 0 if none; a size whose peak, extrapolated
    from the sizes measured before it, would not fit is not measured (nor any larger one)."""
    measured: list[tuple[int, float]] = []
    for size in sizes:
        if measured and _extrapolated(measured, size, base) > limit:
            break
        peak = peak_at(size)
        if peak > limit:
            break
        measured.append((size, peak))
    return measured[-1][0] if measured else 0


def _fewest_fitting(peak_at: Callable[[int], float], blocks: int, limit: float) -> int:
    """The fewest of the first blocks checkpointed (of `blocks`, all of which fit) whose peak is within `limit`.
    Each block fewer keeps about one block's activations more, so after two measured counts the next is read off
    the line through the last two (`_next_count`); where that lands short, the counts above it are walked back."""
    measured = [(blocks, peak_at(blocks))]
    while measured[-1][0] > 1 and (count := _next_count(measured, limit)) is not None:
        peak = peak_at(count)
        while peak > limit and count + 1 < measured[-1][0]:
            count += 1
            peak = peak_at(count)
        if peak > limit:
            break
        measured.append((count, peak))
    return measured[-1][0]


def _next_count(measured: list[tuple[int, float]], limit: float) -> Optional[int]:
    """One block fewer than the last measured count until two are measured; then the fewest the line through the
    last two predicts within `limit`, None where not even one fewer is."""
    fewest, peak = measured[-1]
    if len(measured) == 1:
        return fewest - 1
    more, more_peak = measured[-2]
    per_block = (peak - more_peak) / (more - fewest)  # MB each block left out of checkpointing keeps
    if per_block <= 0:  # within the measurement's noise: step one block
        return fewest - 1
    spare = int((limit - peak) / per_block)
    return max(1, fewest - spare) if spare >= 1 else None


def _extrapolated(measured: list[tuple[int, float]], size: int, base: float) -> float:
    """The peak at `size`: on the line through the last two measured sizes, or from one, in proportion to its
    peak above `base` (memory in use before probing), which over-predicts: its fixed part scales too."""
    (m1, p1), (m2, p2) = measured[-2] if len(measured) > 1 else (0, base), measured[-1]
    return p2 + (p2 - p1) / (m2 - m1) * (size - m2)


@dataclass
class StepProbe:
    peak_mb: float  # the whole device's peak over the probe's steps
    step_s: float  # the fastest of the steps after the first (whose one-time costs it leaves out)


def probe_step(model: nn.Module, params: dict[str, nn.Parameter], x: Inputs, y: Tensor, settings: TrainSettings,
               device: torch.device, steps: int = 3) -> StepProbe:
    """The whole device's peak in MiB over `steps` training steps under `settings.recompute`, and a step's time;
    trainable values, buffers and RNG states are as they were after."""
    dtype = amp_dtype(device, settings.amp)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    optimizer = torch.optim.AdamW(list(params.values()), lr=0.0, weight_decay=0.0)  # lr 0: values stay put
    times: list[float] = []
    gc.collect()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        set_train_mode(model, settings.train_norm_layers)
        with measure_peak(device, baseline_mb=0.0) as peak, training_policy(model, settings.recompute, dtype):
            for _ in range(steps):
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                forward_backward(model, x, y, dtype, settings)
                for p in params.values():
                    if p.grad is not None:  # zeros (an overflowed fp16 gradient could make even lr 0 write NaN)
                        p.grad.zero_()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - started)
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    gc.collect()
    if peak.mb is None:
        raise InvalidInput("a training memory budget needs a peak-memory probe (CUDA, or Linux's /proc/self/"
                           "clear_refs on CPU), which this platform lacks; leave memory_budget_mb out")
    return StepProbe(peak.mb, min(times[1:] or times))


def _too_small(budget_mb: float, peaks: dict[str, float], candidate: str, peak: float) -> OutOfBudget:
    smallest = math.ceil(peak / HEADROOM)
    return OutOfBudget(
        f"memory budget {budget_mb:g} MB is too small to train: the smallest that would work is {smallest} MB "
        f"({candidate}, the most memory-saving policy at micro-batch 1, peaked at {peak:.0f} MB)",
        detail={"accepted": f"memory_budget_mb >= {smallest}", "probe_peaks_mb": peaks},
    )
