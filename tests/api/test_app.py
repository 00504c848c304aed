"""The app's boundary: one error body, bearer auth, body size limit, health, OpenAPI."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from edged.api.app import create_app
from edged.errors import Conflict, InvalidInput
from edged.settings import get_settings

ERROR_KEYS = {"code", "message", "detail"}


def _assert_error_body(response, status, code):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["schema_version"] >= 1


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic dXNlcjpwYXNz"}]
)
@pytest.mark.parametrize("method,path", [("GET", "/v1/datasets"), ("POST", "/v1/datasets"), ("GET", "/openapi.json")])
def test_no_or_wrong_token_is_401_with_the_error_body(client, headers, method, path):
    response = client.request(method, path, headers=headers)
    _assert_error_body(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_unauthenticated_upload_is_refused_before_the_body_is_read(client, settings, uploads):
    response = client.post("/v1/datasets", files={"file": ("d.csv", b"f,label\n1,a\n2,b\n")})
    _assert_error_body(response, 401, "unauthorized")
    assert not settings.blobs_dir.exists() or not any(settings.blobs_dir.iterdir())


def test_error_body_shape_for_every_kind_of_error(client, auth):
    app = client.app

    def raises_edged_error():
        raise Conflict("busy", detail={"jobs": ["j1"]})

    def raises_bug():
        raise RuntimeError("secret internals")

    app.add_api_route("/v1/test-conflict", raises_edged_error)
    app.add_api_route("/v1/test-bug", raises_bug)
    conflict = client.get("/v1/test-conflict", headers=auth)
    _assert_error_body(conflict, 409, "conflict")
    assert conflict.json() == {"error": {"code": "conflict", "message": "busy", "detail": {"jobs": ["j1"]}}}
    _assert_error_body(client.get("/v1/nowhere", headers=auth), 404, "not_found")
    _assert_error_body(client.put("/v1/datasets", headers=auth), 405, "method_not_allowed")
    _assert_error_body(client.post("/v1/datasets", headers=auth), 422, "invalid_input")
    with TestClient(app, raise_server_exceptions=False) as no_raise:
        bug = no_raise.get("/v1/test-bug", headers=auth)
    _assert_error_body(bug, 500, "internal")
    assert "secret internals" not in bug.text and "Traceback" not in bug.text


def test_validation_errors_list_every_reason(client, auth):
    response = client.post("/v1/datasets", headers=auth, data={"name": ["a", "b"]})  # no file
    _assert_error_body(response, 422, "invalid_input")
    assert any(reason["loc"] == ["body", "file"] for reason in response.json()["error"]["detail"])


def _raw_request(app, headers, chunks):
    """Drive the ASGI app directly; returns (status, number of body chunks the app pulled)."""
    pulled, sent = [0], []

    async def receive():
        if pulled[0] < len(chunks):
            pulled[0] += 1
            return {"type": "http.request", "body": chunks[pulled[0] - 1], "more_body": pulled[0] < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/datasets", "raw_path": b"/v1/datasets", "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8686),
    }
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled[0]


def test_oversized_content_length_is_413_before_reading_the_body(client, auth):
    headers = [(b"authorization", auth["Authorization"].encode()), (b"content-length", str(50 * 2**20).encode()),
               (b"content-type", b"multipart/form-data; boundary=x")]
    status, pulled = _raw_request(client.app, headers, [b"x" * 65536] * 800)
    assert status == 413 and pulled == 0


def test_oversized_streamed_body_is_cut_off_at_the_limit(client, auth):
    """No Content-Length (chunked): reading stops soon after the limit (1 MiB + 64 KiB here)."""
    headers = [(b"authorization", auth["Authorization"].encode()),
               (b"content-type", b"multipart/form-data; boundary=x")]
    body = [b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.csv\"\r\n\r\n"]
    body += [b"1,a\n" * 16384] * 800  # 50 MiB in 64 KiB chunks
    status, pulled = _raw_request(client.app, headers, body)
    assert status == 413 and pulled <= 20


def test_openapi_documents_routes_and_bearer_auth(client, auth):
    schema = client.get("/openapi.json", headers=auth).json()
    assert {"/healthz", "/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/models"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/datasets"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    fields = schema["components"]["schemas"]["DatasetPublic"]["properties"]
    assert {"id", "sha256", "num_samples", "classes", "kind", "shape"} <= set(fields)
    assert all(field.get("description") for field in fields.values())


def test_serving_without_a_token_is_refused_clearly(tmp_path):
    with pytest.raises(InvalidInput, match="EDGED_TOKEN is not set"):
        create_app(get_settings(data_dir=tmp_path))


def test_dashboard_page_is_open_but_its_data_is_not(client, auth):
    assert client.get("/dashboard").status_code == 200
    assert client.get("/dashboard/data").status_code == 401
    assert client.get("/dashboard/data", headers=auth).status_code == 200
    assert client.get("/v1/datasets").status_code == 401
