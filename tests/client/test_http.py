"""The one HTTP client (edged.client.http): the daemon's error bodies raised as the matching EdgedError,
and every call a device or operator makes, against a real `edged serve` (resuming events included)."""

from __future__ import annotations

import httpx
import pytest
from jobs_helpers import FAST_JOB, digits_npz

from edged import errors
from edged.client import EdgedClient, raise_for_error
from edged.jobs.states import FINAL_STATES, JobState


def test_error_bodies_of_the_real_app_become_the_matching_edged_error(client, auth):
    with pytest.raises(errors.NotFound) as not_found:
        raise_for_error(client.get("/v1/jobs/no-such-job", headers=auth))
    assert "no-such-job" in not_found.value.message
    with pytest.raises(errors.Unauthorized):
        raise_for_error(client.get("/v1/jobs"))
    with pytest.raises(errors.InvalidInput) as invalid:
        raise_for_error(client.post("/v1/jobs", headers=auth, json={"model": "mobilenet_v2", "dataset": "nope",
                                                                   "method": "nope"}))
    assert invalid.value.message
    raise_for_error(client.get("/v1/jobs", headers=auth))  # a 2xx passes


@pytest.mark.parametrize(("status", "code", "expected"), [
    (409, "corrupt", errors.Corrupt),  # the code names a subclass of its status's class
    (409, "conflict", errors.Conflict),
    (503, "busy", errors.Busy),
    (422, "memory_budget_too_small", errors.OutOfBudget),
    (507, "insufficient_storage", errors.InsufficientStorage),
    (413, "a-code-from-a-newer-daemon", errors.TooLarge),  # unknown code: by status
])
def test_an_error_is_chosen_by_its_code_then_by_its_status(status, code, expected):
    body = {"error": {"code": code, "message": "what went wrong", "detail": {"k": 1}}}
    with pytest.raises(errors.EdgedError) as raised:
        raise_for_error(httpx.Response(status, json=body))
    assert type(raised.value) is expected
    assert (raised.value.message, raised.value.detail) == ("what went wrong", {"k": 1})


def test_a_body_that_is_not_edged_s_is_raised_by_status_with_its_text():
    with pytest.raises(errors.EdgedError) as raised:
        raise_for_error(httpx.Response(502, text="<html>bad gateway</html>"))
    assert type(raised.value) is errors.EdgedError
    assert raised.value.message == "HTTP 502: <html>bad gateway</html>"
    with pytest.raises(errors.Unavailable, match="HTTP 503: "):
        raise_for_error(httpx.Response(503, json={"detail": "not edged's shape"}))


def test_every_call_against_a_real_daemon(daemon):
    with daemon.client() as client:
        dataset = client.upload_dataset("digits.npz", digits_npz(300))
        assert dataset["num_samples"] == 300 and dataset["name"] == "digits.npz"  # named after the file
        assert client.upload_dataset("more.npz", digits_npz(100, seed=1), name="named")["name"] == "named"
        job = client.create_job({**FAST_JOB, "dataset": dataset["id"]})
        assert job["state"] == JobState.QUEUED and [j["id"] for j in client.list_jobs()] == [job["id"]]

        events = list(client.events(job["id"]))  # follows the job live until its end event
        kind, end = events[-1]
        assert kind == "end" and end["state"] == JobState.SUCCEEDED
        finished = client.get_job(job["id"])
        assert finished["state"] in FINAL_STATES and finished["state"] == end["state"]
        assert "merged.safetensors" in {a["name"] for a in client.list_artifacts(job["id"])}

        ids = [data["id"] for kind, data in events[:-1]]
        assert ids == sorted(ids) and len(ids) > 2
        resumed = list(client.events(job["id"], after=ids[1]))  # as a follower reconnecting with Last-Event-ID
        assert [data["id"] for _, data in resumed[:-1]] == ids[2:] and resumed[-1] == events[-1]

        with pytest.raises(errors.Conflict):
            client.cancel_job(job["id"])  # it has ended
        with pytest.raises(errors.NotFound):
            client.get_job("no-such-job")
        with pytest.raises(errors.NotFound):
            list(client.events("no-such-job"))
    with EdgedClient(daemon.url, "not-the-token-0123456789") as stranger, pytest.raises(errors.Unauthorized):
        stranger.list_jobs()


def test_an_unreachable_daemon_is_unavailable_with_how_to_start_one():
    with EdgedClient("http://127.0.0.1:9/", "any-token-0123456789") as client:
        assert client.url == "http://127.0.0.1:9"
        with pytest.raises(errors.Unavailable, match="cannot reach edged at http://127.0.0.1:9: .*`edged serve`"):
            client.get_job("x")
        with pytest.raises(errors.Unavailable, match="the event stream of job x from http://127.0.0.1:9 broke"):
            list(client.events("x"))
