"""The demo's HTTP client: the calls a field device and an operator make, and a Server-Sent Events reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from edged.errors import Unavailable

STREAM_READ_TIMEOUT_S = 120.0  # the server sends a keep-alive every 15 s, so silence this long is a fault


class EdgedClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx.Timeout(60.0))

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"edged at {self.url} did not answer {method} {path}: {exc}") from None
        if response.status_code != expected:
            raise Unavailable(f"{method} {path} answered {response.status_code}: {_error_message(response)}",
                              detail=_json_or_text(response))
        return response.json()

    def upload_dataset(self, filename: str, content: bytes, name: str) -> dict[str, Any]:
        return self._call("POST", "/v1/datasets", 201, files={"file": (filename, content)}, data={"name": name})

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/jobs", 202, json=body)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}", 200)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel", 202)

    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/jobs/{job_id}/artifacts", 200)

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, data) from GET /v1/jobs/{id}/events until the stream's `end` event."""
        timeout = httpx.Timeout(60.0, read=STREAM_READ_TIMEOUT_S)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    raise Unavailable(f"GET /v1/jobs/{job_id}/events answered {response.status_code}: "
                                      f"{_error_message(response)}")
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise Unavailable(f"the event stream of job {job_id} broke: {exc}") from None


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-Sent Events: `event:` and `data:` lines, a blank line ends an event; `:` lines are comments."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_message(response: httpx.Response) -> str:
    body = _json_or_text(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return str(body)[:500]
