"""`edged demo`: the whole loop a field deployment goes through, on this machine, in a few minutes.

It starts `edged serve` on loopback (or uses a running daemon), uploads the bundled MNIST digits as
a zip of PNG class folders over HTTP like a field device, starts a TaskEdge job on the bundled
MobileNetV2, follows the job's Server-Sent Events live, and prints the result table and where the
database and artifacts are. Exit status: 0 if the job succeeded, 1 if it failed or was cancelled.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from edged.client import EdgedClient, LocalDaemon
from edged.errors import InvalidInput
from edged.jobs.states import FINAL_STATES, JobState

MODEL = "mobilenet_v2"
METHOD = "taskedge"
CANCEL_WAIT_S = 10.0


def default_demo_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "edged-demo"


@dataclass(frozen=True)
class DemoOptions:
    samples: int = 5000
    epochs: int = 1
    image_size: int = 64
    budget: float = 0.001
    batch_size: int = 32
    data_dir: Optional[Path] = None  # the started daemon's; default ~/.local/share/edged-demo
    url: Optional[str] = None  # use this running daemon instead of starting one
    token: Optional[str] = None  # its token (needed with url)

    def job_body(self, dataset_id: str) -> dict[str, Any]:
        return {"model": MODEL, "dataset": dataset_id, "method": METHOD, "budget": self.budget,
                "epochs": self.epochs, "batch_size": self.batch_size, "image_size": self.image_size}


class ProgressPrinter:
    """Stage lines as they happen and one progress line for training: rewritten in place on a
    terminal, printed at every tenth of the training otherwise (logs stay short)."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.out, self.started = out, started
        self.tty = out.isatty()
        self._pending_line = False
        self._last_decile = -1
        self.stages_seen: list[str] = []  # in the order the job ran them, for the result table

    def _elapsed(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f}s]"

    def line(self, text: str) -> None:
        if self._pending_line:
            self.out.write("\n")
            self._pending_line = False
        self.out.write(f"{self._elapsed()} {text}\n")
        self.out.flush()

    def event(self, kind: str, data: dict[str, Any], epochs: int) -> None:
        if kind == "stage":
            if data["stage"] not in self.stages_seen:
                self.stages_seen.append(data["stage"])
            status = "started" if data["status"] == "started" else f"done in {data.get('seconds', 0):.1f} s"
            self.line(f"{data['stage']:<16} {status}")
        elif kind == "step":
            self._step(data, epochs)
        elif kind == "epoch":
            self.line(f"epoch {data['epoch'] + 1}/{epochs}: train loss {data['train_loss']:.3f}, validation "
                      f"accuracy {100 * data['val_accuracy']:.1f} %, {data['samples_per_s']:.0f} samples/s")
        elif kind in ("state", "resumed"):
            shown = [f"{key}={value}" for key, value in data.items() if key in ("state", "reason", "error")]
            self.line(f"job {kind}: {', '.join(shown)}")

    def _step(self, data: dict[str, Any], epochs: int) -> None:
        fraction = data["step"] / max(data["total_steps"], 1)
        text = (f"train  epoch {data['epoch'] + 1}/{epochs}  step {data['step']}/{data['total_steps']}  "
                f"loss {data['loss']:.3f}  {100 * fraction:5.1f} %")
        if self.tty:
            self.out.write(f"\r{self._elapsed()} {text}")
            self.out.flush()
            self._pending_line = True
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.line(text)


def result_table(job: dict[str, Any], options: DemoOptions, wall_s: float, stage_order: Sequence[str] = ()) -> str:
    """The finished job's numbers as aligned lines; stage times in `stage_order`, then any others."""
    m = job["metrics"]
    rows = [
        ("job", f"{job['id']}: {job['method']} on {job['model']}, {options.samples} digits at "
                f"{options.image_size}x{options.image_size}, {m.get('epochs_run', options.epochs)} epoch(s), "
                f"on {m.get('device', '?')}"),
        ("accuracy before", f"{100 * m['accuracy_before']:.1f} %  (held-out {m.get('val_samples', '?')} digits)"),
        ("accuracy after", f"{100 * m['accuracy_after']:.1f} %"),
        ("trainable entries", f"{m['trainable_params']:,} = {100 * m['trainable_fraction']:.3f} % of "
                              f"{m.get('backbone_weights', 0):,} backbone weights "
                              f"(+ head {m.get('head_params', 0):,})"),
        ("peak memory", f"{m['peak_memory_mb']:.0f} MiB training"
                        + (f", {m['calibration_peak_memory_mb']:.0f} MiB calibration"
                           if m.get("calibration_peak_memory_mb") is not None else "")),
    ]
    stages = m.get("stage_seconds", {})
    rows.append(("stage times", f"{sum(stages.values()):.1f} s in all"))
    ordered = [name for name in stage_order if name in stages] + [name for name in stages if name not in stage_order]
    rows.extend((f"  {name}", f"{stages[name]:.1f} s") for name in ordered)
    rows.append(("demo wall time", f"{wall_s:.1f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def where_things_are(client: EdgedClient, job_id: str, data_dir: Optional[Path]) -> str:
    artifacts = client.list_artifacts(job_id)
    names = ", ".join(a["name"] for a in artifacts) or "none"
    lines = []
    if data_dir is not None:
        lines.append(f"database   {data_dir / 'edged.db'}")
        outputs = data_dir / "jobs" / job_id / "outputs"
        if outputs.is_dir():
            lines.append(f"artifacts  {outputs}/ ({names})")
        lines.append(f"blobs      {data_dir / 'blobs'}/ (uploads and artifacts, content-addressed)")
    lines.append(f"over HTTP  GET {client.url}/v1/jobs/{job_id}/artifacts ({names})")
    return "\n".join(lines)


def run_demo(options: DemoOptions, out: Optional[TextIO] = None) -> int:
    """Run the demo end to end, writing to `out` (default: stdout); returns 0 if the job succeeded, 1 otherwise."""
    out = out or sys.stdout
    if options.url is not None and not options.token:
        raise InvalidInput("--url needs the daemon's token: --token or EDGED_TOKEN")
    started = time.monotonic()
    printer = ProgressPrinter(out, started)
    with ExitStack() as stack:
        data_dir = None
        if options.url is None:
            data_dir = (options.data_dir or default_demo_dir()).resolve()
            printer.line(f"starting edged serve (data dir {data_dir})")
            daemon = stack.enter_context(LocalDaemon(data_dir))
            url, token = daemon.url, daemon.token
            printer.line(f"edged is up at {url} (log: {daemon.log_path})")
        else:
            url, token = options.url, str(options.token)
        client = EdgedClient(url, token)
        stack.callback(client.close)
        job = _run_job(client, options, printer)
        if job["state"] == JobState.SUCCEEDED:
            out.write("\n" + result_table(job, options, time.monotonic() - started, printer.stages_seen) + "\n")
        else:
            out.write(f"\njob {job['id']} {job['state']}: {job['error']}\n")
        out.write(where_things_are(client, job["id"], data_dir) + "\n")
        if options.url is None:
            printer.line("stopping the demo daemon")
    out.flush()
    return 0 if job["state"] == JobState.SUCCEEDED else 1


def _run_job(client: EdgedClient, options: DemoOptions, printer: ProgressPrinter) -> dict[str, Any]:
    from edged.cli.demo_data import mnist_upload  # torch and the digits: only once the demo really runs

    printer.line(f"packing {options.samples} bundled MNIST digits as PNG class folders")
    archive = mnist_upload(options.samples)
    dataset = client.upload_dataset("mnist-digits.zip", archive, name=f"mnist-{options.samples}")
    printer.line(f"uploaded {len(archive) / 2**20:.1f} MiB: dataset {dataset['id']}, {dataset['num_samples']} "
                 f"{dataset['kind']} samples, {len(dataset['classes'])} classes, shape {dataset['shape']}")
    job = client.create_job(options.job_body(dataset["id"]))
    printer.line(f"job {job['id']} queued: {METHOD} on {MODEL}, budget {options.budget}, {options.epochs} epoch(s)")
    try:
        for kind, data in client.events(job["id"]):
            if kind == "end":
                break
            printer.event(kind, data, options.epochs)
    except KeyboardInterrupt:
        # Without this, a restarted demo daemon would resume the abandoned job before the next one.
        printer.line(f"interrupted: cancelling job {job['id']}")
        client.cancel_job(job["id"])
        deadline = time.monotonic() + CANCEL_WAIT_S  # the cancel lands between steps, before the daemon stops
        while client.get_job(job["id"])["state"] not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.2)
        raise
    return client.get_job(job["id"])
