"""`lr: "auto"` (the default) through a real daemon: the job searches, records the search in its metrics
and events, and trains at the rates it chose."""

from __future__ import annotations

import httpx

from daemon import AUTH, Daemon
from jobs_helpers import MODEL, digits_npz, wait_for


def test_an_unattended_job_chooses_its_learning_rates(daemon: Daemon) -> None:
    upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=30,
                        files={"file": ("digits.npz", digits_npz(800))})
    assert upload.status_code == 201, upload.text
    # no lr, no head_lr: both "auto". 640 training samples x 4 epochs: 1,152 forward passes, the head's two rates
    job = {"model": MODEL, "dataset": upload.json()["id"], "method": "taskedge", "epochs": 4, "budget": 0.01,
           "image_size": 16}
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=job, timeout=30)
    assert response.status_code == 202, response.text
    done = wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] not in ("queued", "running"), 240)
    assert done["state"] == "succeeded", done["error"]
    assert done["config"]["adapt"]["lr"] == "auto" and done["config"]["adapt"]["head_lr"] == "auto"
    search = done["metrics"]["lr_search"]
    assert search["skipped"] is None and len(search["trials"]) >= 2
    assert sum(t["samples"] for t in search["trials"]) == search["samples"]
    assert search["forwards"] <= search["budget_forwards"]
    best_last_rung = max((t for t in search["trials"] if t["rung"] == search["trials"][-1]["rung"]),
                         key=lambda t: (t["accuracy"] + t["prior"], -t["loss"]))  # the default counts its noise more
    assert (search["lr"], search["head_lr"]) == (best_last_rung["lr"], best_last_rung["head_lr"])
    trials = [e for e in daemon.events(done["id"]) if e[0] == "lr_trial"]
    assert len(trials) == len(search["trials"])
    assert search["fraction_of_train_time"] > 0
