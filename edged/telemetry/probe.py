"""`python -m edged.telemetry.probe DB`: check that this machine's energy telemetry works end to end.

Runs a small reference job on the best device (an MLP: calibrate, train, 2:4 prune, benchmark
dense vs 2:4) with the daemon's sampler writing `telemetry_samples` and every stage recorded in
`job_stage_telemetry`, under a `jobs` row like the daemon's. Prints a table and the JSON of the
stage rows. Numbers come from this machine's power source (`edged doctor` says which one).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import torch
from torch import nn

from edged.sparse.nm import nm_keep_mask
from edged.store.db import migrate, open_db, utc_now
from edged.telemetry.config import TelemetryConfig
from edged.api.jobs_view import latency_metrics
from edged.telemetry.latency import measure_latency
from edged.telemetry.sampler import Sampler
from edged.telemetry.sources import open_power_source
from edged.telemetry.stages import recorded_stage, stage_rows


def _mlp(width: int, depth: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def _run_stages(db: Any, job_id: str, source: Any, args: argparse.Namespace) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = _mlp(args.width, args.depth, 16).to(device)
    x = torch.randn(args.batch, args.width, device=device)  # (B, width)
    y = torch.randint(0, 16, (args.batch,), device=device)  # (B,)
    with recorded_stage(db, job_id, "calibrate", source) as stage:
        with torch.no_grad():
            for _ in range(args.steps // 4):
                model(x)
        stage.items = args.batch * (args.steps // 4)
    with recorded_stage(db, job_id, "train", source) as stage:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        stage.items = args.batch * args.steps
    model = model.to(dtype).eval()
    layer = model[0]  # (width, width): the layer benchmarked dense vs 2:4
    with recorded_stage(db, job_id, "prune", source), torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear) and m.out_features % 32 == 0:
                m.weight.mul_(nm_keep_mask(m.weight.abs()))  # 2 of every 4 along in-features
    xs = [torch.randn(args.batch, args.width, device=device, dtype=dtype)]
    with recorded_stage(db, job_id, "benchmark", source):
        dense = measure_latency(layer, xs, warmup=20, iters=args.iters, device=device,
                                power_source=source, batch_size=args.batch)
        variants = {"dense": dense}
        if device == "cuda":
            from torch.sparse import to_sparse_semi_structured

            sparse = nn.Linear(args.width, args.width).to(device, dtype)
            sparse.load_state_dict(layer.state_dict())
            sparse.weight = nn.Parameter(to_sparse_semi_structured(sparse.weight), requires_grad=False)
            variants["sparse_2_4"] = measure_latency(sparse, xs, warmup=20, iters=args.iters, device=device,
                                                     power_source=source, batch_size=args.batch)
    return latency_metrics(**variants)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db", help="SQLite database to write (created and migrated if new)")
    p.add_argument("--power-source", default="auto")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--iters", type=int, default=2000)
    args = p.parse_args(argv)
    db = open_db(args.db)
    migrate(db)
    config = TelemetryConfig(power_source=args.power_source, active_interval_s=0.5, idle_interval_s=0.5)
    sampler = Sampler(args.db, open_power_source(config), config)
    stage_source = open_power_source(config)
    job_id = f"probe-{uuid.uuid4().hex[:8]}"
    db.table("jobs").insert({"id": job_id, "state": "running", "model": f"mlp{args.depth}x{args.width}",
                       "method": "probe", "created_at": utc_now(), "started_at": utc_now()})
    sampler.start()
    try:
        metrics = _run_stages(db, job_id, stage_source, args)
        db.table("jobs").update(job_id, {"state": "succeeded", "progress": 1.0, "finished_at": utc_now(),
                                   "metrics": json.dumps(metrics)})
    finally:
        time.sleep(1.0)  # one more idle sample after the job
        sampler.stop()
        stage_source.close()
    _print_report(db, job_id, stage_source.name, metrics)


def _print_report(db: Any, job_id: str, source: str, metrics: dict[str, Any]) -> None:
    print(f"job {job_id}  power source: {source}")
    print(f"{'stage':<10} {'wall_s':>8} {'energy_J':>10} {'avg_W':>8} {'peak_gpu_MiB':>13} {'items/s':>12}")
    rows = stage_rows(db, job_id)
    for r in rows:
        avg = r["energy_j"] / r["wall_s"] if r["energy_j"] is not None and r["wall_s"] > 0 else None
        print(f"{r['stage']:<10} {r['wall_s']:>8.2f} {_f(r['energy_j'], 10, 1)} {_f(avg, 8, 1)} "
              f"{_f(r['peak_gpu_mb'], 13, 0)} {_f(r['items_per_s'], 12, 0)}")
    for name, s in metrics["latency"].items():
        print(f"latency {name:<11} p50 {s['p50_ms']:.4f} ms  p95 {s['p95_ms']:.4f} ms  p99 {s['p99_ms']:.4f} ms  "
              f"{s['throughput_per_s']:.0f} items/s  energy/item {_f(s['energy_per_inference_j'], 0, 9)} J")
    print(json.dumps({"job_id": job_id, "stages": rows, **metrics}))


def _f(v: Any, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


if __name__ == "__main__":
    main()
