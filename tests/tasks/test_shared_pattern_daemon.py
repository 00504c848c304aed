"""The 2:4 pattern shared by the tasks on one base, through a real `edged serve`: the first 2:4 task gives the
base its pattern, a second 2:4 job on the same base is pruned to it (its zeros are exactly the first's, so the
two tasks differ only in values at kept positions), and a job that asks for its own pattern gets a different one
(the control that shows the check can fail)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as load_safetensors

from daemon import Daemon
from jobs_helpers import FAST_JOB
from tasks_helpers import artifact, mnist_sample, run_job
from edged.sparse.nm import check_2_4
from edged.sparse.shared_pattern import unpack_pattern
from edged.store.db import open_db

JOB_2_4 = {**FAST_JOB, "sparsity": "2:4", "dense_reference": False}


@pytest.fixture(scope="module")
def three_jobs(tmp_path_factory):
    """digits (the base's first 2:4 task), parity sharing its pattern, parity with its own pattern."""
    daemon = Daemon(tmp_path_factory.mktemp("shared-pattern"))
    daemon.start()
    x, y = mnist_sample(300, seed=1)
    try:
        first = run_job(daemon, "digits", x, y, JOB_2_4)
        shared = run_job(daemon, "parity", x, y % 2, JOB_2_4)
        own = run_job(daemon, "parity-own", x, y % 2, {**JOB_2_4, "share_2_4": False})
        merged = {key: load_safetensors(artifact(daemon, job, "merged.safetensors"))
                  for key, job in (("first", first), ("shared", shared), ("own", own))}
        pattern = unpack_pattern(artifact(daemon, first, "pattern_2_4.safetensors"))
        db = open_db(daemon.data_dir / "edged.db")
        try:
            rows = list(db.query("SELECT * FROM base_patterns"))
        finally:
            db.close()
        yield {"first": first, "shared": shared, "own": own}, merged, pattern, rows
    finally:
        daemon.stop()


def test_the_first_2_4_task_gives_the_base_its_pattern_and_the_next_job_shares_it(three_jobs):
    jobs, _, pattern, rows = three_jobs
    first, shared, own = (jobs[key]["metrics"]["sparsity"] for key in ("first", "shared", "own"))
    assert not first["pattern_shared"] and shared["pattern_shared"] and not own["pattern_shared"]
    assert shared["pattern_id"] == first["pattern_id"] != own["pattern_id"]
    assert len(rows) == 1 and rows[0]["pattern_id"] == first["pattern_id"]  # the blob's sha256
    assert rows[0]["source_task"] == jobs["first"]["metrics"]["task_id"]
    assert sorted(pattern) == sorted(first["pruned_layers"]) == sorted(shared["pruned_layers"])
    assert rows[0]["layers"] == len(pattern)


def test_the_sharing_task_has_exactly_the_first_tasks_zeros_and_differs_in_values_only(three_jobs):
    jobs, merged, pattern, _ = three_jobs
    changed_somewhere = False
    for name, keep in pattern.items():
        first, shared = merged["first"][name], merged["shared"][name]
        assert check_2_4(shared)
        assert torch.equal(first == 0, ~keep) and torch.equal(shared == 0, ~keep), name  # the same zeros
        differs = first != shared  # (out, in, ...) where the two tasks' values differ
        assert not bool((differs & ~keep).any()), name  # ... only at kept positions
        changed_somewhere |= bool(differs.any())
    assert changed_somewhere  # the tasks did train different values


def test_a_job_asking_for_its_own_pattern_gets_its_own_zeros(three_jobs):
    _, merged, pattern, _ = three_jobs
    own_zeros = {name: merged["own"][name] == 0 for name in pattern}
    assert all(check_2_4(merged["own"][name]) for name in pattern)
    assert any(not torch.equal(own_zeros[name], ~keep) for name, keep in pattern.items())
