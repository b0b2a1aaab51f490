"""WebSocket transport: parse frames, check, call one service, shape the reply."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework_simplejwt.exceptions import TokenError

from chat import authz, drain, events, fanout, services
from chat.budgets import SocketSlot, socket_slot_acquire
from chat.presence import presence_registry
from chat.protocol import ClientFrame, CloseCode, ErrorCode, ServerFrame
from chat.ratelimit import TokenBucket
from chat.selectors import replay_frames
from chat.services import Actor, ChatError, RoomRef
from infra import parsers
from infra.metrics import CLOSES, ERRORS, OPEN_SOCKETS
from middleware.jwt import query_param, socket_token
from tenants.context import DatabaseUnavailable, in_schema

logger = logging.getLogger(__name__)

_CLIENT_FRAMES = frozenset(ClientFrame)
# A refused join: the contract has no close code for "room budget spent", and 4429 (too
# many) is the nearest; the rest are 4403.
_JOIN_REFUSALS = {
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.RATE_LIMITED: CloseCode.TOO_MANY_SOCKETS,
}
Handler = Callable[[Any, dict[str, Any]], Awaitable[None]]


def _since(raw: str | None) -> int | None:
    """`since=<seq>`: a non-negative integer, or absent (ValueError: 4400)."""
    return None if raw is None else parsers.decimal_digits(raw)


class TenantSocketConsumer(AsyncJsonWebsocketConsumer):
    """What room and notification sockets share: the session (token expiry and in-band
    `auth`), pings, the frame parser, error frames, kicks and the graceful drain.

    The middleware stack has already checked origin, tenant and token, and put `tenant`,
    `user_id`, `token_exp` and `signing_key_id` (the tenant key that verified a token its
    backend signed, else None) into the scope.
    """

    handlers: dict[ClientFrame, Handler] = {}
    open_gauge: Any = None
    room: RoomRef | None = None
    fan: list[fanout.Group] = []
    ping_timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[Any]] | None = None  # made at the first spawn (most never spawn)
    expiry: asyncio.TimerHandle | None = None
    slot: SocketSlot | None = None
    signing_key_id: int | None = None  # the tenant signing key its token was verified with
    floor = 0  # fan-out frames with seq <= floor were sent by a replay already

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer loop without its channel layer: frames from other processes
        reach this socket through the process's fan-out hub (chat/fanout.py), which writes
        them into `self.out`; this loop only reads the client's own events."""
        self.scope = scope
        self.channel_layer = None
        self.out = fanout.Outbox(send, self.overflow)
        self.base_send = self.asgi_send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            await self.cleanup()  # whatever ended the consumer (safe to run twice)

    async def asgi_send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            self.out.write(message["text"])
        elif kind == "websocket.close":
            await self.out.close(message.get("code", 1000))
        elif not self.out.close_sent:
            await self.out.send(message)

    def overflow(self) -> None:
        """The client stopped reading and its unsent frames passed WS_MAX_OUTBOUND_BYTES."""
        self.kick(CloseCode.SLOW_CLIENT)

    def kick(self, code: int) -> None:
        """Close from outside the socket's own task (the hub, timers): never waits for it."""
        self.spawn(self.close_with(code))

    async def connect(self) -> None:
        tenant = self.scope["tenant"]
        self.schema_name: str = tenant.schema_name
        # Who the token names; username and admin flag come with the access check
        # (`socket_admit`), after the groups are joined.
        self.actor = Actor(id=self.scope["user_id"], username="", is_admin=False)
        self.signing_key_id = self.scope.get("signing_key_id")
        self.fan = []
        self.expiry: asyncio.TimerHandle | None = None
        self.bucket = TokenBucket(
            tenant.rate_limit_per_second or settings.CHAT_RATE_PER_SECOND,
            tenant.rate_limit_burst or settings.CHAT_RATE_BURST,
        )
        if drain.is_draining():
            await self.reject(CloseCode.GOING_AWAY)
            return
        self.slot = await socket_slot_acquire(self.schema_name, self.actor.id)
        if self.slot is None:  # WS_MAX_SOCKETS_PER_USER open already, on any process
            await self.reject(CloseCode.TOO_MANY_SOCKETS)
            return
        await self.open()

    async def open(self) -> None:
        raise NotImplementedError

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()` before every handler.

        That call is a hop to the ORM thread for each client frame AND each channel-layer
        delivery (21 hops per message in a room of 20), queued behind the inserts; it was the
        largest cost in the profile (bench/RESULTS.md). Our database work goes through
        `tenants.context`, whose threads keep and check their own connections.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def start(self) -> None:
        """Accept, and start what lives as long as the socket does."""
        await self.accept()
        self.open_gauge = OPEN_SOCKETS.labels(self.schema_name)
        self.open_gauge.inc()
        drain.register(self)
        authz.ensure_periodic_recheck()
        self.schedule_ping()
        self.schedule_expiry(self.scope["token_exp"])

    async def reject(self, code: int) -> None:
        """Accept, then close: a browser only sees the close code after accept."""
        await self.accept()
        await self.close_with(code)

    async def close_with(self, code: int) -> None:
        code = int(code)  # a plain int: daphne (autobahn) rejects int subclasses (CloseCode)
        CLOSES.labels(str(code)).inc()
        await self.close(code=code)

    async def drain(self) -> None:
        await self.close_with(CloseCode.GOING_AWAY)

    async def join_groups(self, *groups: str, room_slug: str | None = None) -> list[fanout.Group]:
        """Into the process's fan-out groups, subscribed in Redis before this returns (so a
        deactivation, removal or message from now on is either seen by the checks that
        follow or delivered to us: held until the handshake is done)."""
        hub = fanout.hub()
        self.fan = hub.attach(self, list(groups), room_slug=room_slug)
        await hub.subscribed(self.fan)
        return self.fan

    def leave_groups(self) -> None:
        fan, self.fan = self.fan, []
        if fan:
            fanout.hub().detach(self, fan)

    async def disconnect(self, code: int) -> None:
        await self.cleanup()

    async def cleanup(self) -> None:
        """Release what the socket holds; idempotent (disconnect, then the finally of
        `__call__`)."""
        for timer in (self.ping_timer, self.expiry):
            if timer is not None:
                timer.cancel()
        self.ping_timer, self.expiry = None, None
        if self.open_gauge is not None:
            self.open_gauge.dec()
            self.open_gauge = None
        drain.unregister(self)
        if self.slot is not None:
            slot, self.slot = self.slot, None
            await slot.release()
        self.leave_groups()
        self.out.discard()

    # --- timers ---------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def schedule_ping(self) -> None:
        interval = settings.WS_PING_INTERVAL
        if interval > 0:
            self.ping_timer = asyncio.get_running_loop().call_later(interval, self._ping)

    def _ping(self) -> None:
        self.out.write(events.PING_TEXT)  # synchronous: no task per ping
        self.schedule_ping()

    def schedule_expiry(self, exp: int) -> None:
        """The session ends with its token (4401) unless an `auth` frame extends it."""
        if self.expiry is not None:
            self.expiry.cancel()
        delay = max(exp - time.time(), 0.0)
        self.expiry = asyncio.get_running_loop().call_later(
            delay, self.kick, int(CloseCode.UNAUTHORIZED)
        )

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
            content = parsers.loads(text_data)
        except ValueError:  # RecursionError included (a frame nested thousands deep)
            await self.send_error(ErrorCode.INVALID_JSON, "Frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error(ErrorCode.INVALID_FRAME, "Frame must be a JSON object.")
            return
        frame_type = content.get("type", ClientFrame.MESSAGE)
        known = isinstance(frame_type, str) and frame_type in _CLIENT_FRAMES
        handler = self.handlers.get(ClientFrame(frame_type)) if known else None
        if handler is None:
            await self.send_error(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {frame_type!r}.")
            return
        try:
            await handler(self, content)
        except ChatError as exc:
            await self.refuse(exc)
        except DatabaseUnavailable as exc:
            # PostgreSQL away: nothing was stored; the socket stays open and the client
            # resends (with the same client_id, so a write that did land is not doubled).
            await self.send_error(ErrorCode.UNAVAILABLE, exc.detail, retry_after=exc.retry_after)
        except Exception:
            # A bug, not the client's fault: logged, and the socket closed with 1011 (the
            # client reconnects with `since`) rather than dropped without a close frame.
            logger.exception("unexpected error handling a %s frame", frame_type)
            await self.close_with(CloseCode.INTERNAL_ERROR)

    async def refuse(self, exc: ChatError) -> None:
        """A refused frame is answered with its error; a service that found the user or the
        tenant no longer active (a kick that was lost) ends the session instead (4401)."""
        if exc.code == ErrorCode.UNAUTHORIZED:
            await self.close_with(CloseCode.UNAUTHORIZED)
            return
        await self.send_error(exc.code, exc.detail, **exc.extra)

    def take_token(self) -> None:
        """The per-connection rate limit; raises `rate_limited` with `retry_after`."""
        retry_after = self.bucket.take()
        if retry_after:
            # Rounded up to the millisecond: a refused frame never says "retry after 0".
            wait = math.ceil(retry_after * 1000) / 1000
            raise ChatError(ErrorCode.RATE_LIMITED, "Too many frames.", retry_after=wait)

    async def on_ping(self, content: dict[str, Any]) -> None:
        await self.send(text_data=events.PONG_TEXT)

    async def on_auth(self, content: dict[str, Any]) -> None:
        """A fresh access token of the same user and tenant extends the session, once the
        database confirms the user, the tenant and the room (chat/authz.py)."""
        raw = content.get("token")
        try:
            if not isinstance(raw, str):
                raise TokenError("no token")
            found = await socket_token(raw, self.schema_name)
            if found.user_id != self.actor.id:
                raise TokenError("token of another user")
        except TokenError:
            await self.close_with(CloseCode.UNAUTHORIZED)
            return
        # From now on the socket stands on this token's key (revoking it closes the socket),
        # set before the verdict's query, so a revocation racing this frame is seen by one
        # of the two.
        self.signing_key_id = found.signing_key_id
        code = await authz.socket_verdict(self)
        if code is not None:
            await self.close_with(code)
            return
        self.schedule_expiry(found.exp)
        await self.send_frame(events.auth_ok(found.exp))

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=events.encode(frame))

    async def send_error(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        ERRORS.labels(str(code)).inc()
        await self.send_frame(events.error(code, detail, **extra))


class ChatConsumer(TenantSocketConsumer):
    """One socket in one room: `/ws/chat/<room>/?token=...[&since=<seq>]`."""

    group = ""
    present = False
    typing_bucket: TokenBucket | None = None

    async def open(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["room"]
        try:
            since = _since(query_param(self.scope, "since"))
        except ValueError:
            return await self.reject(CloseCode.BAD_REQUEST)
        if not services.is_valid_room_slug(slug):
            return await self.reject(CloseCode.BAD_REQUEST)
        # Join the groups first, then check access in the database: a deactivation, removal
        # or message published in between is then either seen by the check or delivered to
        # us; fan-out frames are held until the handshake is done, so none is lost.
        self.group = events.room_group_name(self.schema_name, slug)
        fan = await self.join_groups(
            self.group, events.tenant_group_name(self.schema_name), room_slug=slug
        )
        feed = fan[0]
        assert isinstance(feed, fanout.RoomFeed)
        hub = fanout.hub()
        try:
            await hub.prepare(feed)
            self.actor, self.room = await services.socket_admit(
                schema_name=self.schema_name,
                user_id=self.actor.id,
                slug=slug,
                signing_key_id=self.signing_key_id,
            )
        except ChatError as exc:
            self.leave_groups()
            return await self.reject(_JOIN_REFUSALS.get(exc.code, CloseCode.FORBIDDEN))
        assert self.room is not None
        await hub.bind(feed, self.room.id)
        first, users = await self.presence_join()
        await self.start()
        await self.send_frame(events.presence(users))
        if first:
            frame = events.user_event(ServerFrame.USER_JOINED, self.actor.username)
            await events.broadcast(self.group, frame)
        if since is not None:
            await self.replay(since)
        self.out.release(self.floor)

    async def presence_join(self) -> tuple[bool, list[str]]:
        try:
            first, users = await presence_registry().join(self.group, self.actor.username)
        except Exception:  # Redis trouble must not refuse the socket; presence is best effort
            logger.warning("presence join failed", exc_info=True)
            return False, [self.actor.username]
        self.present = True
        return first, users

    async def replay(self, since: int) -> None:
        """`since=<seq>`: every later message in order, then `resume.done`; live copies of
        replayed messages (held for us, or still on their way) are dropped by `floor`."""
        assert self.room is not None
        frames, last_seq = await in_schema(
            self.schema_name,
            replay_frames,
            room_id=self.room.id,
            slug=self.room.slug,
            since=since,
            limit=settings.WS_REPLAY_LIMIT,
        )
        for frame in frames:
            await self.send_frame(frame)
        # A `since` beyond the room's last seq (a room deleted and made again) must not
        # swallow the live messages that will get those numbers.
        replayed = [f["seq"] for f in frames]
        self.floor = max([min(since, last_seq), *replayed])
        await self.send_frame(events.resume_done(max([since, *replayed])))

    async def cleanup(self) -> None:
        await super().cleanup()
        if self.present:
            self.present = False
            try:
                last = await presence_registry().leave(self.group, self.actor.username)
            except Exception:
                logger.warning("presence leave failed", exc_info=True)
                return
            if last:
                frame = events.user_event(ServerFrame.USER_LEFT, self.actor.username)
                await events.broadcast(self.group, frame)

    # --- client frames ------------------------------------------------------------------

    def room_ref(self) -> RoomRef:
        assert self.room is not None
        return self.room

    async def on_message(self, content: dict[str, Any]) -> None:
        self.take_token()
        frame, created = await services.message_send(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            body=content.get("message"),
            client_id=content.get("client_id"),
            parent_id=content.get("parent_id"),
            skip=self,
            attachments=content.get("attachments"),
        )
        if not created:  # a resend: the sender hears the original frame, as its answer
            await self.send_frame(frame)

    async def on_typing(self, content: dict[str, Any]) -> None:
        if self.typing_bucket is None:  # made at the first typing frame: most sockets never type
            self.typing_bucket = TokenBucket(2.0, 5)
        if self.typing_bucket.take():
            return  # typing is a hint: extra ones are dropped quietly, not answered
        await services.typing_announce(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            skip=self,
        )

    async def on_read(self, content: dict[str, Any]) -> None:
        self.take_token()
        frame, moved = await services.read_marker_move(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            seq=content.get("seq"),
        )
        if not moved:  # nothing changed for the room; the sender still learns its marker
            await self.send_frame(frame)

    async def on_edit(self, content: dict[str, Any]) -> None:
        self.take_token()
        await services.message_edit(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            message_id=content.get("id"),
            body=content.get("message"),
        )

    async def on_delete(self, content: dict[str, Any]) -> None:
        self.take_token()
        await services.message_delete(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            message_id=content.get("id"),
        )

    async def on_react(self, content: dict[str, Any]) -> None:
        await self._react(content, add=True)

    async def on_unreact(self, content: dict[str, Any]) -> None:
        await self._react(content, add=False)

    async def _react(self, content: dict[str, Any], *, add: bool) -> None:
        self.take_token()
        frame, changed = await services.reaction_set(
            schema_name=self.schema_name,
            room=self.room_ref(),
            actor=self.actor,
            message_id=content.get("id"),
            emoji=content.get("emoji"),
            add=add,
        )
        if not changed:  # a no-op: the room hears nothing, the sender the current counts
            await self.send_frame(frame)

    handlers = {
        ClientFrame.MESSAGE: on_message,
        ClientFrame.REACT: on_react,
        ClientFrame.UNREACT: on_unreact,
        ClientFrame.TYPING: on_typing,
        ClientFrame.READ: on_read,
        ClientFrame.EDIT: on_edit,
        ClientFrame.DELETE: on_delete,
        ClientFrame.PING: TenantSocketConsumer.on_ping,
        ClientFrame.AUTH: TenantSocketConsumer.on_auth,
    }

    # --- channel-layer events -----------------------------------------------------------


class NotificationConsumer(TenantSocketConsumer):
    """Per-user events from anywhere in the tenant: `/ws/notifications/?token=...`."""

    async def open(self) -> None:
        await self.join_groups(
            events.notify_group_name(self.schema_name, self.actor.id),
            events.tenant_group_name(self.schema_name),
        )
        try:
            self.actor, _ = await services.socket_admit(
                schema_name=self.schema_name,
                user_id=self.actor.id,
                signing_key_id=self.signing_key_id,
            )
        except ChatError:
            self.leave_groups()
            return await self.reject(CloseCode.UNAUTHORIZED)
        await self.start()
        self.out.release()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            self.take_token()  # every frame counts here: this socket takes no messages
        except ChatError as exc:
            await self.send_error(exc.code, exc.detail, **exc.extra)
            return
        await super().receive_json(content, **kwargs)

    handlers = {
        ClientFrame.PING: TenantSocketConsumer.on_ping,
        ClientFrame.AUTH: TenantSocketConsumer.on_auth,
    }
