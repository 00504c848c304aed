"""`edged bench switch --layouts`: placed deltas stored entry-wise (int16 gaps) against block-wise (1 x 16 row blocks
with a 16-bit occupancy bitmap each), on real tasks: bytes per task, memory with all tasks held, bytes moved per
switch and hot switch p50/p99 over one uniform random trace.

Three sets of real tasks on MobileNetV2 (the switch bench's digit tasks, `edged.bench.switch_tasks.cpu_setup`):
unaligned; aligned (each task's mask prefers the blocks the earlier ones use, `align_strength` 4); and pruned to
one shared 2:4 pattern. Each is held by a resident base five ways: the format before block-wise storage (flat
gaps, each task its own 2:4 zeros), block-wise only, the smaller of the two per index list, that with the tasks
of one 2:4 pattern sharing its zeros (the default), and that restoring only the entries the incoming task does
not write (`skip_shared`). Every way must leave the same weights after the trace (checked, column "same").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edged.bench.report import format_table, machine_summary
from edged.bench.switch_rows import Switch, read_delta, time_trace, uniform_trace
from edged.bench.switch_tasks import SwitchSetup, cpu_setup, state_bytes
from edged.tasks.flat import PlacedDelta
from edged.tasks.resident import ResidentModel

TASK_SETS: dict[str, dict[str, Any]] = {"unaligned": {}, "aligned": {"align_strength": 4.0},
                                        "2:4 shared pattern": {"sparsity": "2:4"}}
LAYOUTS = [  # (row, index_format, share_zeros, skip_shared)
    ("flat gaps, own zeros (before)", "flat", False, False),
    ("block-wise", "blocks", False, False),
    ("smaller of the two", "smaller", False, False),
    ("smaller, shared 2:4 zeros (default)", "smaller", True, False),
    ("default + skip shared entries", "smaller", True, True),
]
COLUMNS = [("tasks", "tasks"), ("row", "layout"), ("bytes_per_task", "bytes/task"),
           ("resident_x_model", "memory, N tasks (x model)"), ("bytes_per_switch", "bytes/switch"),
           ("shared_entries_per_switch", "entries shared"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("same", "same weights")]


def _held_bytes(placed: list[PlacedDelta]) -> int:
    """Bytes of all placed deltas, a shared zeros list counted once."""
    shared: dict[int, int] = {}
    for delta in placed:
        for indices in delta.zeros.values():
            shared[id(indices)] = indices.nbytes
    return sum(d.nbytes - sum(i.nbytes for i in d.zeros.values()) for d in placed) + sum(shared.values())


def _shared_entries(placed: list[PlacedDelta], trace: list[int]) -> float:
    """Mean share of the incoming task's written entries the outgoing task also writes, over the trace."""
    written = [torch.cat([i.decode() for i, _ in d.writes.values()]) for d in placed]
    shares = [float(torch.isin(written[b], written[a]).float().mean()) for a, b in zip(trace, trace[1:])]
    return sum(shares) / len(shares)


def _hot_switch(resident: ResidentModel, placed: list[PlacedDelta]) -> Switch:
    return lambda task: resident.activate_(str(task), placed[task]).bytes_moved


def layout_rows(label: str, setup: SwitchSetup, trace: list[int]) -> list[dict]:
    """One row per layout on this set of tasks, each timed on the same trace from a fresh resident base."""
    model_bytes = state_bytes(setup.model)
    rows, reference = [], None
    for row, index_format, share_zeros, skip_shared in LAYOUTS:
        resident = ResidentModel(setup.model, setup.preprocess, setup.device, index_format=index_format,
                                 share_zeros=share_zeros, skip_shared=skip_shared)
        placed = [read_delta(setup, resident, t) for t in range(len(setup.tasks))]
        timing = time_trace(_hot_switch(resident, placed), trace, setup.device)
        weights = [b.clone() for b in resident.flat.buffers.values()]
        same = reference is None or all(torch.equal(a, b) for a, b in zip(reference, weights))
        reference = reference or weights
        resident.deactivate_()
        held = _held_bytes(placed)
        rows.append({"tasks": label, "row": row, **timing, "bytes_per_task": round(held / len(placed)),
                     "resident_x_model": (model_bytes + held) / model_bytes, "same": same,
                     "shared_entries_per_switch": _shared_entries(placed, trace)})
    return rows


def run_layouts(workdir: Path, tasks: int, samples: int, image_size: int, switches: int, seed: int) -> dict:
    trace = uniform_trace(tasks, switches, seed)
    rows: list[dict] = []
    for name, variant in TASK_SETS.items():
        rows += layout_rows(name, cpu_setup(workdir, tasks, samples, image_size, seed, **variant), trace)
    return {"machine": machine_summary(), "tasks_per_set": tasks, "switches": switches, "seed": seed,
            "source": f"MobileNetV2 {image_size} px, taskedge 0.1 %, {samples} samples, 1 epoch", "rows": rows}


def print_layouts(result: dict, argv: list[str]) -> None:
    print(f"\n$ edged bench switch {' '.join(argv)}\n{result['source']}; {result['tasks_per_set']} tasks a set; "
          f"{result['switches']} uniform switches; {result['machine']}")
    print(format_table(result["rows"], COLUMNS))


