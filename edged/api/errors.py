"""One JSON error body for every error: {"error": {"code", "message", "detail"}}.

EdgedError subclasses carry their own status and code; request validation errors list every reason;
HTTP errors (404 route, 405 method, ...) keep their status, a 405 with an `Allow` header listing every
method of the path; a full disk anywhere is a 507; anything unexpected is a logged 500 with no traceback
in the response. Messages echo path and query parameters cut to ECHO_LIMIT characters, whichever code
wrote the message. Routes document the errors they can return with `error_responses(...)`.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from edged import errors
from edged.store.space import disk_full, is_disk_full
from edged.api.schemas import ErrorBody

log = logging.getLogger(__name__)

# HTTP status -> error code, from the EdgedError classes themselves (one source of codes).
CODES_BY_STATUS = {cls.status: cls.code for cls in errors.EdgedError.__subclasses__()}
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")  # sorted: the Allow header's order
CODES_BY_STATUS.update({404: "not_found", 405: "method_not_allowed", 500: "internal"})


ERROR_DESCRIPTIONS = {
    400: "malformed request: a body that cannot be parsed, or input edged does not support",
    401: "missing or wrong bearer token",
    404: "no such resource",
    409: "conflicts with the resource's current state",
    413: "request body or upload over a limit",
    422: "invalid input: every reason, in detail",
    500: "internal error (the server log has the details)",
    503: "something edged needs is missing on this machine, or busy (retry after the Retry-After header's seconds)",
    507: "the data directory is full (the message says how much is free and what frees space)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: Optional[dict[str, str]] = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


def _long_inputs(request: Request) -> list[str]:
    """Path and query parameter values too long to echo whole."""
    values = [*request.path_params.values(), *request.query_params.values()]
    return sorted({v for v in values if isinstance(v, str) and len(v) > errors.ECHO_LIMIT}, key=len, reverse=True)


def _shortened(value: Any, long_inputs: list[str]) -> Any:
    """`value` (a message or detail) with every long input cut as `errors.quoted` cuts it."""
    if isinstance(value, str):
        for text in long_inputs:
            value = value.replace(repr(text), errors.quoted(text)).replace(text, errors.quoted(text)[1:-1])
        return value
    if isinstance(value, dict):
        return {key: _shortened(item, long_inputs) for key, item in value.items()}
    if isinstance(value, list):
        return [_shortened(item, long_inputs) for item in value]
    return value


def _response(request: Request, status: int, code: str, message: str, detail: Any = None,
              headers: Optional[dict[str, str]] = None) -> JSONResponse:
    long_inputs = _long_inputs(request)
    if long_inputs:
        message, detail = _shortened(message, long_inputs), _shortened(detail, long_inputs)
    return error_response(status, code, message, detail, headers)


async def _edged_error(request: Request, exc: errors.EdgedError) -> JSONResponse:
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, errors.Busy) else None
    return _response(request, exc.status, exc.code, exc.message, exc.detail, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Built field by field: the raw errors carry the input (maybe a whole upload) and exceptions.
    reasons = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, r['loc']))}: {r['msg']}" for r in reasons)
    return _response(request, 422, errors.InvalidInput.code, f"invalid request: {summary}", reasons)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = CODES_BY_STATUS.get(exc.status_code, "http_error")
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return _response(request, 405, code, f"method {request.method} is not allowed on {request.url.path}; "
                         f"allowed: {', '.join(allowed)}", {"allowed": allowed}, headers={"Allow": ", ".join(allowed)})
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's words
        content_type = request.headers.get("content-type", "none")
        return _response(request, 400, code, f"the request body does not parse as its Content-Type ({content_type}) "
                         "says; the accepted body of each route is in GET /openapi.json")
    if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched (routes raise EdgedErrors)
        return _response(request, 404, code, f"no route {request.url.path}; the routes are listed in GET /openapi.json")
    return _response(request, exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's)."""
    # Asked of each route by matching (routers may nest routes), for every method HTTP defines.
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):  # wherever it struck (a blob, the database, a temporary file): one 507
        full = disk_full(request.app.state.settings.data_dir)
        log.error("%s %s failed: %s (%s)", request.method, request.url.path, full.message, exc)
        return error_response(full.status, full.code, full.message, full.detail)
    log.exception("%s %s failed unexpectedly", request.method, request.url.path)
    return error_response(500, "internal", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.EdgedError, _edged_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
