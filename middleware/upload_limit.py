"""Refuses an attachment upload that is too large before Django reads it.

Django's ASGI handler reads a request's whole body (spooled to a temporary file) before any
view runs, whatever its size: the view's own check would come after an unbounded write to
disk. Here a `POST /api/rooms/<slug>/attachments/` whose `Content-Length` passes
ATTACHMENT_MAX_BYTES plus the multipart overhead is answered 413 at once, body unread; one
without a length (chunked) is counted as it arrives and cut off at the same point (Django
sees a disconnect and answers nothing; this answers the 413).
"""

from __future__ import annotations

import json
import re

from django.conf import settings

from middleware.types import ASGIApp, Message, Receive, Scope, Send

_UPLOAD_PATH = re.compile(r"/api/rooms/[^/]+/attachments/")


def body_limit() -> int:
    from chat.attachments import MULTIPART_SLACK_BYTES

    return int(settings.ATTACHMENT_MAX_BYTES) + MULTIPART_SLACK_BYTES


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _send_too_large(send: Send) -> None:
    from chat.attachments_api import too_large_body

    body = json.dumps(too_large_body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UploadLimitMiddleware:
    """413 `{"file": [...]}` for an attachment upload over the limit, before Django reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not _UPLOAD_PATH.fullmatch(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        limit = body_limit()
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_too_large(send)
            return
        received = 0
        cut = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if cut and not started:
            await _send_too_large(send)
