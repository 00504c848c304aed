"""One JSON error body for every error: {"error": {"code", "message", "detail"}}.

EdgedError subclasses carry their own status and code; request validation errors list every reason;
HTTP errors (404 route, 405 method, ...) keep their status; a full disk anywhere is a 507; anything
unexpected is a logged 500 with no traceback in the response.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edged import errors
from edged.store.space import disk_full, is_disk_full

log = logging.getLogger(__name__)

# HTTP status -> error code, from the EdgedError classes themselves (one source of codes).
CODES_BY_STATUS = {cls.status: cls.code for cls in errors.EdgedError.__subclasses__()}
CODES_BY_STATUS.update({404: "not_found", 405: "method_not_allowed", 500: "internal"})


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: Optional[dict[str, str]] = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


async def _edged_error(request: Request, exc: errors.EdgedError) -> JSONResponse:
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.detail)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Built field by field: the raw errors carry the input (maybe a whole upload) and exceptions.
    reasons = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, r['loc']))}: {r['msg']}" for r in reasons)
    return error_response(422, errors.InvalidInput.code, f"invalid request: {summary}", reasons)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = CODES_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


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
