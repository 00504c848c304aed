"""The documented contract: every route's error responses in OpenAPI with the one error body, `Allow` on 405s
listing every method of the path, echoed input cut short, and a bad Last-Event-ID refused before any stream."""

from __future__ import annotations

import pytest

from edged.errors import ECHO_LIMIT

ERROR_REF = "#/components/schemas/ErrorBody"
# What each operation can answer besides 401/422/500 (documented on all): its not-found, conflict and limit cases.
EXPECTED_ERRORS = {
    ("post", "/v1/datasets"): {"400", "413"},
    ("get", "/v1/datasets/{dataset_id}"): {"404"},
    ("delete", "/v1/datasets/{dataset_id}"): {"404", "409"},
    ("post", "/v1/jobs"): {"400", "413"},
    ("get", "/v1/jobs/{job_id}"): {"404"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"404", "409"},
    ("get", "/v1/jobs/{job_id}/events"): {"404"},
    ("get", "/v1/jobs/{job_id}/artifacts"): {"404"},
    ("get", "/v1/jobs/{job_id}/artifacts/{name}"): {"404"},
    ("get", "/dashboard/assets/{name}"): {"404"},
}


def test_every_operation_documents_its_errors_with_the_one_error_body(client, auth):
    paths = client.get("/openapi.json", headers=auth).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            errors = {status for status in operation["responses"] if status >= "400"}
            assert {"401", "422", "500"} | EXPECTED_ERRORS.get((method, path), set()) <= errors, (method, path)
            for status in errors:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (method, path, status)


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/datasets/some-id", "DELETE, GET"),
    ("PATCH", "/v1/datasets", "GET, POST"),
    ("HEAD", "/v1/jobs", "GET, POST"),  # FastAPI routes answer only the methods they declare
    ("GET", "/v1/jobs/some-id/cancel", "POST"),
])
def test_405_lists_every_method_the_path_supports(client, auth, method, path, allowed):
    response = client.request(method, path, headers=auth)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    if method != "HEAD":  # a HEAD answer has no body
        error = response.json()["error"]
        assert error["code"] == "method_not_allowed" and allowed in error["message"]


@pytest.mark.parametrize("path", ["/v1/jobs/{}", "/v1/jobs/{}/artifacts", "/v1/datasets/{}",
                                  "/v1/jobs/{}/artifacts/x", "/dashboard/assets/{}.js"])
def test_a_long_path_parameter_is_not_echoed_whole(client, auth, path):
    long_id = "x" * 60_000  # the client refuses URLs over 64 KiB; the daemon was shown echoing 100 kB
    response = client.get(path.format(long_id), headers=auth)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "x" * ECHO_LIMIT + "..." in message and len(message) < ECHO_LIMIT + 200


def test_a_long_query_parameter_is_not_echoed_whole(client, auth):
    response = client.get("/v1/telemetry", headers=auth, params={"metrics": "m" * 60_000})
    assert response.status_code == 422 and len(response.text) < 2_000


@pytest.mark.parametrize("value", [str(2**63), str(2**64 + 5), "-1", "abc", "1" * 5000])
def test_a_last_event_id_out_of_range_is_refused_before_the_stream(client, auth, db, value):
    db["jobs"].insert({"id": "j1", "state": "succeeded", "model": "m", "method": "taskedge", "created_at": "now"})
    response = client.get("/v1/jobs/j1/events", headers={**auth, "Last-Event-ID": value})
    assert response.status_code == 422, response.text
    assert "last-event-id" in response.json()["error"]["message"].lower()
    assert not response.headers["content-type"].startswith("text/event-stream")


def test_the_largest_last_event_id_is_accepted(client, auth, db):
    db["jobs"].insert({"id": "j1", "state": "succeeded", "model": "m", "method": "taskedge", "created_at": "now"})
    response = client.get("/v1/jobs/j1/events", headers={**auth, "Last-Event-ID": str(2**63 - 1)})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
