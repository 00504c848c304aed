"""`edged demo` end to end through a real `edged serve` on loopback (tiny settings), its failure exit
status with a job cancelled through the API, and its upload archive. (Its SSE reader is edged.client's:
tests/client.)"""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import httpx
import pytest
import torch

from daemon import Daemon
from suite_settings import TEST_TOKEN

from edged.cli import main
from edged.cli.demo import DemoOptions, run_demo
from edged.cli.demo_data import balanced_subset, png_class_zip
from edged.data.bundled import mnist_5k
from edged.data.formats import decode_upload
from edged.data.upload_limits import UploadLimits
from edged.jobs.states import JobState

TINY = ["--samples", "200", "--epochs", "1", "--image-size", "32"]


def test_demo_end_to_end(tmp_path, capsys):
    data_dir = tmp_path / "demo"
    assert main(["demo", *TINY, "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    for expected in ("calibrate ", "train  epoch 1/1", "accuracy before", "accuracy after", "trainable entries",
                     "peak memory", "stage times", f"database   {data_dir / 'edged.db'}"):
        assert expected in out, expected
    trainable = re.search(r"trainable entries\s+([\d,]+) = ([\d.]+) %", out)
    assert trainable and int(trainable.group(1).replace(",", "")) > 0 and 0.05 < float(trainable.group(2)) < 0.15

    with sqlite3.connect(data_dir / "edged.db") as db:
        state, = db.execute("select state from jobs").fetchone()
        samples, = db.execute("select num_samples from datasets").fetchone()
    assert (state, samples) == (JobState.SUCCEEDED, 200)
    assert list((data_dir / "jobs").glob("*/outputs/delta.safetensors"))

    url = re.search(r"edged is up at (http://127\.0\.0\.1:\d+)", out).group(1)
    with pytest.raises(httpx.TransportError):  # the demo stopped the daemon it started
        httpx.get(f"{url}/healthz", timeout=2.0)


def _cancel_first_running_job(daemon: Daemon, done: threading.Event) -> None:
    """The operator's side: cancel the demo's job once it runs."""
    with daemon.client() as operator:
        while not done.is_set():
            running = [job for job in operator.list_jobs() if job["state"] == JobState.RUNNING]
            if running:
                operator.cancel_job(running[0]["id"])
                return
            time.sleep(0.2)


def test_demo_exits_nonzero_when_the_job_does_not_succeed(daemon, capsys):
    done = threading.Event()
    canceller = threading.Thread(target=_cancel_first_running_job, args=(daemon, done))
    canceller.start()
    try:
        status = run_demo(DemoOptions(samples=100, epochs=3, image_size=32, url=daemon.url, token=TEST_TOKEN))
    finally:
        done.set()
        canceller.join()
    assert status == 1
    assert "cancelled" in capsys.readouterr().out


def test_url_without_token_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("EDGED_TOKEN", raising=False)
    assert main(["demo", "--url", "http://127.0.0.1:9"]) == 2
    assert "--url needs the daemon's token" in capsys.readouterr().err


def test_upload_archive_decodes_to_the_same_digits():
    subset = balanced_subset(mnist_5k(), 30, seed=1)
    assert torch.bincount(subset.y, minlength=10).tolist() == [3] * 10
    decoded = decode_upload("digits.zip", png_class_zip(subset), UploadLimits())
    assert decoded.classes == subset.classes and len(decoded) == 30
    # Members are read back in name order; compare each digit's pixels by label and pixel sum.
    originals = sorted((int(y), int(x.sum())) for x, y in zip(subset.x.to(torch.int64), subset.y))
    roundtrip = sorted((int(y), int(x.sum())) for x, y in zip(decoded.x.to(torch.int64), decoded.y))
    assert originals == roundtrip



@pytest.mark.parametrize("argv, said", [
    (["--samples", "3"], "argument --samples: '3' is not an integer >= 10 and <= 5000"),
    (["--epochs", "0"], "argument --epochs: '0' is not an integer >= 1 and <= 1000"),
    (["--image-size", "8"], "argument --image-size: '8' is not an integer >= 16 and <= 1024"),
    (["--budget", "nan"], "argument --budget: 'nan' is not a finite number > 0 and <= 1"),
    (["--batch-size", "0"], "argument --batch-size: '0' is not an integer >= 1 and <= 4096"),
])
def test_a_bad_demo_option_is_refused_before_a_daemon_starts(argv, said, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--data-dir", str(tmp_path / "data"), *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # no daemon started, nothing uploaded
