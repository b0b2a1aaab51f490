"""A request id for every HTTP request and WebSocket connection, for logs and the client."""

from __future__ import annotations

import re
import uuid

from infra.logging import request_id_var
from middleware.types import ASGIApp, Message, Receive, Scope, Send

_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: `$` would take a trailing newline


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID.fullmatch(candidate) else None
    return None


class RequestIdMiddleware:
    """Takes a well-formed `X-Request-ID` from the proxy or makes one; HTTP responses echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope["request_id"] = request_id

        try:
            if scope["type"] == "http":
                await self.app(scope, receive, _echoing(send, request_id))
            else:  # a WebSocket keeps no closure of ours for its lifetime
                await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)


def _echoing(send: Send, request_id: str) -> Send:
    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", request_id.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_id
