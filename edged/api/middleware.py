"""ASGI middleware that answers before the body is read: bearer-token auth and the body size limit.

Both are plain ASGI (not FastAPI dependencies) because FastAPI parses a multipart body before it
runs dependencies: an unauthenticated or oversized upload must be refused without reading it.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edged.api.errors import error_response


class BearerAuthMiddleware:
    """401 unless `Authorization: Bearer <token>` matches; paths in `public_paths`, or starting with one of
    `public_prefixes`, are open."""

    def __init__(self, app: ASGIApp, token: str, public_paths: frozenset[str], public_prefixes: tuple[str, ...] = ()) -> None:
        self.app, self.token, self.public_paths, self.public_prefixes = app, token.encode(), public_paths, public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path in self.public_paths or path.startswith(self.public_prefixes):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            response = error_response(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                {"accepted": "an 'Authorization: Bearer <EDGED_TOKEN>' header"},
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes`: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "too_large", self._message(), {"limit_bytes": self.max_bytes})
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI re-raises HTTPException from body parsing (other errors become 400s);
                # the error handlers render it with code "too_large".
                raise HTTPException(413, self._message())
            return message

        return counted_receive

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes; raise EDGED_MAX_UPLOAD_MB to accept larger uploads"
