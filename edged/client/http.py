"""The one HTTP client of the daemon's API: the calls a field device and an operator make, with the
daemon's error bodies raised as the matching EdgedError and its job events read as Server-Sent Events.

Used by `edged submit` and `edged status`, `edged demo`, `edged bench api` and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Optional, Union

import httpx

from edged.client.sse import SseEvent, parse_sse
from edged.errors import EdgedError, Unavailable

# An upload is answered once it is decoded and stored: minutes for a large archive on a small board,
# so requests have no read limit. A stream does: the daemon sends a keep-alive every 15 s, so silence
# this long is a fault.
REQUEST_TIMEOUT = httpx.Timeout(30.0, read=None)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=120.0)


def _error_classes() -> tuple[dict[str, type[EdgedError]], dict[int, type[EdgedError]]]:
    """Every EdgedError class by its code, and the most general one of each HTTP status."""
    by_code: dict[str, type[EdgedError]] = {}
    by_status: dict[int, type[EdgedError]] = {}
    pending: list[type[EdgedError]] = [EdgedError]
    while pending:  # breadth first: a status's first class is its most general one (Conflict before Corrupt)
        cls = pending.pop(0)
        by_code[cls.code] = cls
        by_status.setdefault(cls.status, cls)
        pending.extend(cls.__subclasses__())
    return by_code, by_status


ERRORS_BY_CODE, ERRORS_BY_STATUS = _error_classes()


def raise_for_error(response: httpx.Response) -> None:
    """Raise a non-2xx response as the EdgedError its body names (by code, else by HTTP status).

    The body is edged's `{"error": {"code", "message", "detail"}}`; anything else (a proxy's page, a
    bare 408 from the server) is raised by status with the start of its text as the message."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message, detail = error.get("code"), error["message"], error.get("detail")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, detail = None, f"HTTP {response.status_code}: {response.text[:200]}", None
    cls = ERRORS_BY_CODE.get(code or "") or ERRORS_BY_STATUS.get(response.status_code, EdgedError)
    raise cls(message, detail)


class EdgedClient:
    """A daemon at `url`, answered with `token`. A context manager; `close()` ends its connections."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=REQUEST_TIMEOUT)

    def __enter__(self) -> "EdgedClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach edged at {self.url}: {exc}; start it with `edged serve`") from exc
        raise_for_error(response)
        return response.json()

    def upload_dataset(self, filename: str, content: Union[bytes, IO[bytes]],
                       name: Optional[str] = None) -> dict[str, Any]:
        """POST /v1/datasets: the file as a field device sends it; `name` defaults to the file name."""
        return self._request("POST", "/v1/datasets", files={"file": (filename, content)},
                             data={"name": name} if name else None)

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/jobs", json=body)

    def list_jobs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/jobs")

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def list_tasks(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/tasks")

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/tasks/{task_id}")

    def predict(self, task_id: str, files: Optional[list[tuple[str, bytes]]] = None,
                texts: Optional[list[str]] = None, top_k: int = 3) -> dict[str, Any]:
        """POST /v1/tasks/{id}/predict: image files / one .npz (multipart `file`), or texts (JSON)."""
        params = {"top_k": top_k}
        if texts is not None:
            return self._request("POST", f"/v1/tasks/{task_id}/predict", params=params, json={"texts": texts})
        return self._request("POST", f"/v1/tasks/{task_id}/predict", params=params,
                             files=[("file", (name, content)) for name, content in files or []])

    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts")

    def events(self, job_id: str, after: Optional[int] = None) -> Iterator[SseEvent]:
        """(event type, data) from GET /v1/jobs/{id}/events until the stream's `end` event. With `after`
        (an event id), the stream resumes after that event, as a follower reconnecting with Last-Event-ID."""
        headers = {} if after is None else {"Last-Event-ID": str(after)}
        path = f"/v1/jobs/{job_id}/events"
        try:
            with self._http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise Unavailable(f"the event stream of job {job_id} from {self.url} broke: {exc}") from exc
