"""WebSocket transport: parse frames, check, call one service, shape the reply."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chat import events
from chat.protocol import ClientFrame, CloseCode, ErrorCode
from chat.ratelimit import TokenBucket
from chat.services import Actor, ChatError, RoomRef, is_valid_room_slug, message_send, room_join
from config.metrics import BROADCAST_LATENCY, CLOSES, ERRORS, FRAMES_DELIVERED, OPEN_SOCKETS
from middleware.jwt import query_param

_CLIENT_FRAMES = frozenset(ClientFrame)


def _since(raw: str | None) -> int | None:
    """`since=<seq>`: a non-negative integer, or absent."""
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(raw)
    return int(raw)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One socket in one room. The middleware stack has already set tenant and user."""

    room: RoomRef
    group: str
    open_gauge: Any = None

    async def connect(self) -> None:
        tenant = self.scope["tenant"]
        self.schema_name: str = tenant.schema_name
        self.actor = Actor.of(self.scope["user"])
        self.group = ""
        self.joined: list[str] = []
        self.ping_handle: asyncio.TimerHandle | None = None
        slug = self.scope["url_route"]["kwargs"]["room"]
        try:
            self.since = _since(query_param(self.scope, "since"))
        except ValueError:
            return await self.reject(CloseCode.BAD_REQUEST)
        if not is_valid_room_slug(slug):
            return await self.reject(CloseCode.BAD_REQUEST)
        # Join the groups first, then check access in the database: a deactivation, removal
        # or message published in between is then either seen by the check or delivered to
        # us; frames wait in our queue until connect() returns, so none is lost.
        self.group = events.room_group_name(self.schema_name, slug)
        await self.join_groups(
            self.group,
            events.user_group_name(self.schema_name, self.actor.id),
            events.tenant_group_name(self.schema_name),
        )
        try:
            self.room = await room_join(schema_name=self.schema_name, slug=slug, actor=self.actor)
        except ChatError as exc:
            await self.leave_groups()
            code = (
                CloseCode.UNAUTHORIZED
                if exc.code == ErrorCode.UNAUTHORIZED
                else CloseCode.FORBIDDEN
            )
            return await self.reject(code)
        self.bucket = TokenBucket(
            tenant.rate_limit_per_second or settings.CHAT_RATE_PER_SECOND,
            tenant.rate_limit_burst or settings.CHAT_RATE_BURST,
        )
        await self.accept()
        self.delivered = FRAMES_DELIVERED.labels(self.schema_name)
        self.open_gauge = OPEN_SOCKETS.labels(self.schema_name)
        self.open_gauge.inc()
        self.schedule_ping()

    async def reject(self, code: int) -> None:
        """Accept, then close: a browser only sees the close code after accept."""
        await self.accept()
        await self.close_with(code)

    async def close_with(self, code: int) -> None:
        CLOSES.labels(str(code)).inc()
        await self.close(code=code)

    async def join_groups(self, *groups: str) -> None:
        self.joined = list(groups)
        await asyncio.gather(*(self.channel_layer.group_add(g, self.channel_name) for g in groups))

    async def leave_groups(self) -> None:
        joined, self.joined = self.joined, []
        await asyncio.gather(
            *(self.channel_layer.group_discard(g, self.channel_name) for g in joined)
        )

    async def disconnect(self, code: int) -> None:
        if self.ping_handle is not None:
            self.ping_handle.cancel()
        if self.open_gauge is not None:
            self.open_gauge.dec()
            self.open_gauge = None
        await self.leave_groups()

    # --- server pings -------------------------------------------------------------------

    def schedule_ping(self) -> None:
        interval = settings.WS_PING_INTERVAL
        if interval > 0:
            self.ping_handle = asyncio.get_running_loop().call_later(interval, self._ping)

    def _ping(self) -> None:
        self.ping_task = asyncio.ensure_future(self.send(text_data=events.PING_TEXT))
        self.schedule_ping()

    # --- incoming frames ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.WS_MAX_FRAME_BYTES:
            await self.close_with(CloseCode.MESSAGE_TOO_BIG)
            return
        if text_data is None:
            await self.send_error(ErrorCode.INVALID_FRAME, "Binary frames are not supported.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error(ErrorCode.INVALID_JSON, "Frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error(ErrorCode.INVALID_FRAME, "Frame must be a JSON object.")
            return
        frame_type = content.get("type", ClientFrame.MESSAGE)
        handler = (
            self.handlers.get(ClientFrame(frame_type)) if frame_type in _CLIENT_FRAMES else None
        )
        if handler is None:
            await self.send_error(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {frame_type!r}.")
            return
        await handler(self, content)

    async def on_message(self, content: dict[str, Any]) -> None:
        retry_after = self.bucket.take()
        if retry_after:
            await self.send_error(
                ErrorCode.RATE_LIMITED, "Too many messages.", retry_after=round(retry_after, 3)
            )
            return
        try:
            frame, created = await message_send(
                schema_name=self.schema_name,
                room=self.room,
                actor=self.actor,
                body=content.get("message"),
                client_id=content.get("client_id"),
            )
        except ChatError as exc:
            await self.send_error(exc.code, exc.detail, **exc.extra)
            return
        if not created:  # a resend: only the sender hears about it, with the original frame
            await self.send(text_data=events.encode(frame))

    async def on_ping(self, content: dict[str, Any]) -> None:
        await self.send(text_data=events.PONG_TEXT)

    handlers = {
        ClientFrame.MESSAGE: on_message,
        ClientFrame.PING: on_ping,
    }

    async def send_error(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        ERRORS.labels(str(code)).inc()
        await self.send(text_data=events.encode(events.error(code, detail, **extra)))

    # --- channel-layer events (types are set by chat.events, never by clients) ----------

    async def room_frame(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
        self.delivered.inc()
        if "at" in event:
            BROADCAST_LATENCY.observe(time.time() - event["at"])

    async def socket_close(self, event: dict[str, Any]) -> None:
        """A kick for every socket of a user or tenant (deactivation: 4401)."""
        await self.close_with(event["code"])

    async def room_kick(self, event: dict[str, Any]) -> None:
        """A kick for one user's sockets in one room (removed member, deleted room: 4403)."""
        if event["room"] == self.room.slug:
            await self.close_with(event["code"])
