"""The ways `edged bench switch` moves the resident model from one task to the next, each timed over a trace.

A row is a `switch(task_index) -> bytes moved` callable; `time_trace` runs it over the trace with the device
synchronised around each switch (perf_counter, as `edged.measure.clocks.wall_clock_ms` does) and, untimed after
each switch, an optional hook (the prefetcher: the task server prefetches while its queue is idle, off the
switch path). Traces never switch a task to itself.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from peft import LoraConfig, get_peft_model
from peft.utils.hotswap import hotswap_adapter
from safetensors.torch import load_file
from torch import Tensor, nn

from edged.bench.switch_tasks import SwitchSetup
from edged.measure.clocks import device_sync
from edged.measure.timing import percentiles
from edged.tasks.cache import DeltaCache
from edged.tasks.delta import parse_delta
from edged.tasks.flat import PlacedDelta
from edged.tasks.resident import ResidentModel

Switch = Callable[[int], int]  # task index -> bytes moved
MARKOV_LIKELY = 0.8  # probability of a task's one likely successor on the Markov trace
WARMUP_SWITCHES = 3  # switches a trace runs untimed before the timed ones


def uniform_trace(tasks: int, switches: int, seed: int) -> list[int]:
    rng, trace = random.Random(seed), [0]
    while len(trace) <= switches:
        trace.append(rng.choice([t for t in range(tasks) if t != trace[-1]]))
    return trace


def markov_trace(tasks: int, switches: int, seed: int) -> list[int]:
    """A fixed random transition matrix: each task has one likely successor (MARKOV_LIKELY), else uniform."""
    rng = random.Random(seed)
    likely = {t: rng.choice([s for s in range(tasks) if s != t]) for t in range(tasks)}
    trace = [0]
    while len(trace) <= switches:
        now = trace[-1]
        others = [t for t in range(tasks) if t != now]
        trace.append(likely[now] if rng.random() < MARKOV_LIKELY else rng.choice(others))
    return trace


def time_trace(switch: Switch, trace: list[int], device: torch.device, warmup: int = WARMUP_SWITCHES,
               after: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """p50/p99 ms and mean bytes per switch over trace[1:] (trace[0] and `warmup` switches untimed)."""
    sync = device_sync(str(device))
    for task in trace[: warmup + 1]:
        switch(task)
    times_ms, moved = [], []
    for task in trace[warmup + 1:]:
        sync()
        start = time.perf_counter()
        moved.append(switch(task))
        sync()
        times_ms.append((time.perf_counter() - start) * 1000.0)
        if after is not None:
            after(task)
    p50, _, p99, _ = percentiles(times_ms)
    return {"p50_ms": p50, "p99_ms": p99, "bytes_per_switch": round(sum(moved) / len(moved)), "switches": len(times_ms)}


def _fit_head_(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Tasks differ in their number of classes: give the model a head of the task's shape before loading."""
    head = model.get_submodule("head")
    if isinstance(head, nn.Linear) and head.weight.shape != state["head.weight"].shape:
        out_features, in_features = state["head.weight"].shape
        model.head = nn.Linear(in_features, out_features, device=head.weight.device)


def full_file_row(setup: SwitchSetup, checkpoints: int) -> Switch:
    """`load_file` + `load_state_dict` of a merged checkpoint (cycling through `checkpoints` files)."""
    paths = [t.merged for t in setup.tasks[:checkpoints]]

    def switch(task: int) -> int:
        state = load_file(str(paths[task % len(paths)]))
        _fit_head_(setup.model, state)
        setup.model.load_state_dict(state)
        return sum(t.numel() * t.element_size() for t in state.values())
    return switch


def full_host_row(setup: SwitchSetup, checkpoints: int) -> Switch:
    """`load_state_dict` from state dicts already in host memory (pinned when the model is on CUDA)."""
    pin = setup.device.type == "cuda"
    states = [{k: v.pin_memory() if pin else v for k, v in load_file(str(t.merged)).items()}
              for t in setup.tasks[:checkpoints]]

    def switch(task: int) -> int:
        state = states[task % len(states)]
        _fit_head_(setup.model, state)
        setup.model.load_state_dict(state)
        return sum(t.numel() * t.element_size() for t in state.values())
    return switch


def read_delta(setup: SwitchSetup, resident: ResidentModel, task: int) -> PlacedDelta:
    """What the task server does on a cache miss: parse the delta file, place it in the base, move it over."""
    path = setup.tasks[task].delta
    return resident.place(parse_delta(path.read_bytes(), str(path)), str(path))


def edged_rows(setup: SwitchSetup, resident: ResidentModel) -> dict[str, Switch]:
    """cold: the delta parsed from its file's bytes each switch; warm: parsed, in host memory (pinned on CUDA),
    copied to the device each switch (on the CPU the same as hot); hot: in the device cache."""
    device, count = setup.device, len(setup.tasks)
    on_device = [read_delta(setup, resident, t) for t in range(count)]
    host = [d.to(torch.device("cpu")) for d in on_device]
    if device.type == "cuda":
        host = [d.pinned() for d in host]

    def cold(task: int) -> int:
        return resident.activate_(str(task), read_delta(setup, resident, task)).bytes_moved

    def warm(task: int) -> int:
        return resident.activate_(str(task), host[task].to(device)).bytes_moved

    def hot(task: int) -> int:
        return resident.activate_(str(task), on_device[task]).bytes_moved
    return {"cold": cold, "warm": warm, "hot": hot}


class CachedSwitch:
    """A switch through a DeltaCache with a byte budget: a miss parses the delta from its file; with
    `prefetch`, after each switch the likeliest next task (first-order counts of the switches so far, the task
    server's rule) is loaded into the cache."""

    def __init__(self, setup: SwitchSetup, resident: ResidentModel, budget_bytes: int, prefetch: bool) -> None:
        self.setup, self.resident, self.prefetch = setup, resident, prefetch
        self.cache = DeltaCache(budget_bytes)
        self.transitions: Counter[tuple[int, int]] = Counter()
        self.last: Optional[int] = None

    def switch(self, task: int) -> int:
        delta, _ = self.cache.get(str(task))
        if delta is None:
            delta = read_delta(self.setup, self.resident, task)
            self.cache.put(str(task), delta)
        return self.resident.activate_(str(task), delta).bytes_moved

    def after(self, task: int) -> None:
        if self.last is not None:
            self.transitions[(self.last, task)] += 1
        self.last = task
        followers = [(n, to) for (frm, to), n in self.transitions.items() if frm == task]
        if self.prefetch and followers:
            likely = max(followers)[1]
            if str(likely) not in self.cache:
                self.cache.put(str(likely), read_delta(self.setup, self.resident, likely), prefetched=True)

    def stats(self) -> dict[str, Optional[float]]:
        s = self.cache.stats
        return {"hit_rate": s.hits / max(1, s.hits + s.misses),
                "prefetch_accuracy": s.prefetch_used / s.prefetched if s.prefetched else None}


def peft_rows(setup: SwitchSetup, workdir: Path, rank: int = 8) -> tuple[dict[str, Switch], int]:
    """PEFT LoRA (rank `rank`, random non-zero init so a swap moves real values) on every backbone Linear and
    ungrouped Conv2d of a copy of the base, one adapter per task: `set_adapter` between loaded adapters, and
    `hotswap_adapter` from a saved one. Returns the rows and the bytes of one adapter."""
    targets = [name for name, m in setup.model.named_modules() if name.startswith("backbone.") and
               (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    names = [f"task{t}" for t in range(len(setup.tasks))]
    peft_model = get_peft_model(copy.deepcopy(setup.model), config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    peft_model.eval()
    saved = workdir / "peft-adapters"
    peft_model.save_pretrained(str(saved), selected_adapters=names)
    one_adapter = sum(p.numel() * p.element_size() for n, p in peft_model.named_parameters() if f".{names[0]}." in n)

    def set_adapter(task: int) -> int:
        peft_model.set_adapter(names[task])
        return 0

    def hotswap(task: int) -> int:
        hotswap_adapter(peft_model, str(saved / names[task]), adapter_name=names[0], torch_device=str(setup.device))
        return one_adapter

    peft_model.set_adapter(names[0])
    return {"set_adapter": set_adapter, "hotswap": hotswap}, one_adapter
