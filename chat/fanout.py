"""Per-process room fan-out: one subscription per group, backpressure per socket, gap repair.

A frame leaves its sender through `group_send` (chat/events.py) as before. What changed is the
receiving side: instead of Channels' machinery (a Redis channel per socket, one unbounded
queue per socket, a task wake-up, a decode and a dispatch per recipient), each process runs
one `Hub` per event loop. The hub holds ONE Redis pub/sub connection, subscribes once to each
group that has sockets on this process, decodes each message once, and writes its already
encoded text to the group's local sockets, in a plain loop.

Writes (`Outbox`). A socket's write is tried synchronously: uvicorn's `send` completes without
suspending while the transport takes data, so the common case costs no task and no queue. A
write that would block (the kernel buffer is full: the client is not reading) is finished by
a writer task of that socket, and what follows waits in that socket's backlog, counted in
bytes; past WS_MAX_OUTBOUND_BYTES the socket is closed with 4408. Nothing else waits for it.

Order and gaps (`RoomFeed`). `chat.message` frames carry the room's `seq`. Per room, the hub
knows the highest seq it delivered without a hole. An older or repeated seq is dropped (so a
frame that reaches the hub twice, through the local path and through Redis, or through a
repair, is written once); a seq past a hole waits WS_GAP_WAIT seconds for the hole to fill
(writers on several processes publish out of order), then the hub reads the missing messages
from PostgreSQL, the source of truth, and delivers them in order. After a pub/sub reconnect
(a Redis restart, a failover, `CLIENT KILL`, an output buffer overflow) every room is checked
the same way, one query per tenant. A room that missed more than WS_REPAIR_LIMIT messages, or
that cannot be read for WS_REPAIR_GIVE_UP seconds, closes its sockets with 4409 (the client
resumes with `since`).

Local first. A frame published on this process is delivered to this process's sockets at
once, before the PUBLISH; the hub skips its own frames when Redis echoes them. So the sender
gets its `chat.message` even while Redis is away, and a PUBLISH that failed is retried in
order until Redis takes it (the other processes deduplicate by seq).

Cost. Steady state: no query at all. A hole: one query for that room. A reconnect: one query
per tenant with rooms on this process, plus one per room that missed something. A message
whose publish was lost with its process and that no later message reveals is found by the
periodic authorization re-check (chat/authz.py), which already reads each tenant's rooms of
open sockets every WS_AUTH_RECHECK_INTERVAL: the last seq rides on that query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import redis.asyncio
from channels.layers import get_channel_layer
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chat import events
from chat.protocol import CloseCode
from infra.background import start_background
from infra.metrics import (
    BROADCAST_LATENCY,
    FANOUT_REPAIRED_FRAMES,
    FANOUT_REPAIRS,
    FRAMES_DELIVERED,
    LAYER_SEND_FAILURES,
)
from infra.redis_clients import async_pool, warn_redis_trouble
from tenants.context import CONNECTION_ERRORS, DatabaseUnavailable, in_schema

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
RETRY_MAX_AGE = 60.0  # an unpublished event older than this is dropped (repair covers it)
RETRY_MAX_EVENTS = 10_000


# --- writes -----------------------------------------------------------------------------------


class _Resumed:
    """Continue, inside a task, a coroutine that was started synchronously and suspended on
    `first` (a Future): the task waits on that same Future, then drives the coroutine on.
    Python 3.12's eager tasks do this natively; 3.11 has none."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        signal = self.first
        while True:
            try:
                sent = yield signal
            except BaseException as exc:  # a cancellation thrown into the task
                try:
                    signal = self.coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = self.coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _unwrap(send: Send) -> Send:
    while hasattr(send, "__wrapped__"):  # middleware that wraps `send` says what it wraps
        send = send.__wrapped__
    return send


def _protocol_writable(send: Send) -> asyncio.Event | None:
    """uvicorn's WebSocket protocols gate every send, the close included, on an Event that is
    clear while the transport is paused (its buffer is over the high-water mark). A close for
    a client that does not read would wait forever; setting it lets the close frame go into
    the transport's buffer behind the frames already there, where the client finds it when
    it reads again. Other servers: None (their close waits as it always did)."""
    writable = getattr(getattr(_unwrap(send), "__self__", None), "writable", None)
    return writable if isinstance(writable, asyncio.Event) else None


class Outbox:
    """The frames on their way to one socket, with its unsent bytes counted.

    `write` is for the socket's own frames (answers, errors, pings); `push` is for fan-out
    frames, which are held while the socket is still in its handshake (released, minus what
    a replay already sent, when it is done). Frames are written with the server's own `send`
    (`raw`), below the ASGI middleware, which only needs to see the accept and the close."""

    __slots__ = (
        "backlog",
        "close_sent",
        "closed",
        "held",
        "limit",
        "on_overflow",
        "pending",
        "raw",
        "send",
        "stalled",
        "writer",
    )

    def __init__(self, send: Send, on_overflow: Callable[[], None]) -> None:
        self.send = send
        self.raw = _unwrap(send)
        self.on_overflow = on_overflow
        self.limit: int = settings.WS_MAX_OUTBOUND_BYTES
        self.held: list[tuple[str, int, int | None]] | None = []
        self.backlog: deque[tuple[str, int]] | None = None
        self.pending = 0  # bytes held or waiting behind a blocked write
        self.writer: asyncio.Task[None] | None = None
        self.closed = False
        self.stalled = False  # a write was blocked when the outbox was discarded
        self.close_sent = False

    def push(self, text: str, size: int, seq: int | None) -> None:
        if self.held is None:
            self.write(text, size)
        elif not self.closed:
            self.held.append((text, size, seq))
            self._count(size)

    def release(self, floor: int = 0) -> None:
        """The handshake is done: write the held frames, except those with `seq <= floor`."""
        held, self.held = self.held or [], None
        for text, size, seq in held:
            self.pending -= size
            if seq is None or seq > floor:
                self.write(text, size)

    def write(self, text: str, size: int = 0) -> None:
        if self.closed:
            return
        if self.writer is not None:  # a write is blocked: wait behind it
            if self.backlog is None:
                self.backlog = deque()
            size = size or len(text.encode())
            self.backlog.append((text, size))
            self._count(size)
            return
        coro = self.raw({"type": "websocket.send", "text": text})
        try:
            signal = coro.send(None)
        except StopIteration:
            return  # written (the common case: no task, no queue)
        except OSError:  # the client is gone; its disconnect event is on its way
            self.closed = True
            return
        size = size or len(text.encode())
        self.pending += size
        self.writer = asyncio.get_running_loop().create_task(
            self._finish(_Resumed(coro, signal), size)
        )

    def _count(self, size: int) -> None:
        self.pending += size
        if self.pending > self.limit and not self.closed:
            self.discard()
            self.on_overflow()

    async def _finish(self, first: _Resumed, size: int) -> None:
        try:
            await first
            self.pending -= size
            while self.backlog and not self.closed:
                text, size = self.backlog.popleft()
                await self.raw({"type": "websocket.send", "text": text})
                self.pending -= size
        except OSError:
            self.closed = True
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None

    def discard(self) -> None:
        """Drop everything unsent and stop writing (a close is coming)."""
        self.closed = True
        self.held, self.backlog, self.pending = None, None, 0
        if self.writer is not None:
            self.stalled = True
            self.writer.cancel()
            self.writer = None

    async def close(self, code: int) -> None:
        """Close now, even if the client does not read (see `_protocol_writable`)."""
        if self.close_sent:
            return
        self.close_sent = True
        self.discard()
        writable = _protocol_writable(self.send)
        if self.stalled and writable is not None:
            writable.set()
        with contextlib.suppress(OSError):
            await self.send({"type": "websocket.close", "code": code})


# --- groups -------------------------------------------------------------------------------------


class Group:
    """One channel-layer group with sockets on this process."""

    __slots__ = ("channel", "delivered", "linger", "members", "name", "ready", "schema")

    def __init__(self, name: str, channel: str, schema: str) -> None:
        self.name, self.channel, self.schema = name, channel, schema
        self.members: set[Any] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.linger: asyncio.TimerHandle | None = None
        self.delivered = FRAMES_DELIVERED.labels(schema)


class RoomFeed(Group):
    """A room's group, with what the hub delivered of its `seq` stream."""

    __slots__ = (
        "high",
        "hole_timer",
        "initialized",
        "pending",
        "repair_again",
        "repairing",
        "room_id",
        "slug",
    )

    def __init__(self, name: str, channel: str, schema: str, slug: str) -> None:
        super().__init__(name, channel, schema)
        self.slug = slug
        self.room_id: int | None = None
        self.high: int | None = None  # highest seq delivered with no hole; None: not read yet
        self.pending: dict[int, dict[str, Any]] = {}  # seq -> event, past a hole
        self.hole_timer: asyncio.TimerHandle | None = None
        self.repairing = False
        self.repair_again = False
        self.initialized: asyncio.Future[None] | None = None


def _room_state(slug: str) -> tuple[int | None, int]:
    from chat.models import Room

    row = Room.objects.filter(slug=slug).values_list("pk", "last_seq").first()
    return (row[0], row[1]) if row else (None, 0)


class Hub:
    """The receiving side of one event loop (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.origin = uuid.uuid4().hex[:12]
        self.layer = get_channel_layer()
        self.groups: dict[str, Group] = {}  # by Redis channel
        self.control = self.layer._get_group_channel_name(f"fanout.{self.origin}")
        self._unconfirmed: Counter[str] = Counter()  # SUBSCRIBEs sent, not yet confirmed
        self._subscribe: list[str] = []
        self._unsubscribe: list[str] = []
        self._flush_handle: asyncio.Handle | None = None
        self._pubsub: Any = None
        self._unsent: deque[tuple[float, str, dict[str, Any]]] = deque()
        self._retry_task: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.reader = start_background(self._read_forever(), name="fanout-reader")

    def channel(self, group: str) -> str:
        name: str = self.layer._get_group_channel_name(group)
        return name

    # --- membership ---------------------------------------------------------------------

    def attach(self, socket: Any, names: list[str], *, room_slug: str | None = None) -> list[Group]:
        """Register a socket in groups (the first name is its room when `room_slug` is given);
        Redis subscriptions that are missing are sent in one batched SUBSCRIBE."""
        joined = []
        for index, name in enumerate(names):
            channel = self.channel(name)
            group = self.groups.get(channel)
            if group is None:
                if index == 0 and room_slug is not None:
                    group = RoomFeed(name, channel, socket.schema_name, room_slug)
                else:
                    group = Group(name, channel, socket.schema_name)
                self.groups[channel] = group
                self._queue_subscribe(channel)
            if group.linger is not None:
                group.linger.cancel()
                group.linger = None
            group.members.add(socket)
            joined.append(group)
        return joined

    async def subscribed(self, groups: list[Group]) -> None:
        """Wait until Redis confirmed the groups' subscriptions: from then on nothing published
        to them is missed. Redis away: go on after WS_SUBSCRIBE_TIMEOUT (the reconnect repairs)."""
        waiting = [asyncio.shield(g.ready) for g in groups if not g.ready.done()]
        if waiting:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waiting), settings.WS_SUBSCRIBE_TIMEOUT)

    def detach(self, socket: Any, groups: list[Group]) -> None:
        for group in groups:
            group.members.discard(socket)
            if (
                not group.members
                and group.linger is None
                and self.groups.get(group.channel) is group
            ):
                group.linger = self.loop.call_later(
                    settings.WS_FEED_LINGER, self._drop_group, group
                )

    def _drop_group(self, group: Group) -> None:
        group.linger = None
        if group.members or self.groups.get(group.channel) is not group:
            return
        del self.groups[group.channel]
        if isinstance(group, RoomFeed) and group.hole_timer is not None:
            group.hole_timer.cancel()
        self._unsubscribe.append(group.channel)
        self._schedule_flush()

    def _queue_subscribe(self, channel: str) -> None:
        self._subscribe.append(channel)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pubsub = self._pubsub
        if pubsub is None:
            return  # (re)connecting: sent by `_read_forever` once it is subscribed
        subscribe, self._subscribe = self._subscribe, []
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        if unsubscribe:
            start_background(self._command(pubsub.unsubscribe, unsubscribe), name="fanout-unsub")
        if subscribe:
            self._unconfirmed.update(subscribe)
            start_background(self._command(pubsub.subscribe, subscribe), name="fanout-sub")

    async def _command(self, command: Callable[..., Awaitable[Any]], channels: list[str]) -> None:
        try:
            await command(*channels)
        except (RedisError, OSError):
            warn_redis_trouble(logger, "fan-out (un)subscribe failed: Redis unreachable")

    # --- the pub/sub connection -------------------------------------------------------------

    def _client(self) -> redis.asyncio.Redis:
        # No silent retry: redis-py would reconnect and re-subscribe behind our back, and
        # whatever was published meanwhile would be a gap no one sees. We reconnect, and repair.
        pool = async_pool(
            socket_connect_timeout=2.0, socket_keepalive=True, retry=Retry(NoBackoff(), 0)
        )
        return redis.asyncio.Redis.from_pool(pool)

    async def _read_forever(self) -> None:
        logger.debug("fan-out hub started")
        delay = 0.1
        while True:
            client = self._client()
            pubsub = client.pubsub(ignore_subscribe_messages=False)
            try:
                # Everything this process serves, in one SUBSCRIBE; groups attached while it is
                # on its way wait in `_subscribe` for the flush after it.
                channels = [self.control, *self.groups]
                self._subscribe.clear()
                self._unsubscribe.clear()
                self._unconfirmed = Counter(channels)
                await pubsub.subscribe(*channels)
                self._pubsub = pubsub
                self._flush()
                if self.reconnects:
                    logger.info("fan-out: pub/sub is back; checking %d groups", len(self.groups))
                await self._read(pubsub, set(channels) if self.reconnects else set())
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                warn_redis_trouble(logger, "fan-out: pub/sub connection lost")
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _read(self, pubsub: Any, resubscribed: set[str]) -> None:
        """Read until the connection fails. `resubscribed`: the channels of a reconnect; once
        Redis confirmed them all, whatever was published while we were away is repaired."""
        silent_since = self.loop.time()
        while True:
            message = await pubsub.get_message(timeout=settings.WS_PUBSUB_HEALTH_INTERVAL)
            now = self.loop.time()
            if message is None:
                # Quiet: a PING of our own (redis-py swallows the answers to its health
                # checks, so they cannot tell a live connection from a dead one); no answer
                # at all for 3 intervals, and the connection is given up and repaired.
                if now - silent_since > 3 * settings.WS_PUBSUB_HEALTH_INTERVAL:
                    raise ConnectionError("no answer on the pub/sub connection")
                await pubsub.ping(b"fanout")
                continue
            silent_since = now
            kind = message["type"]
            if kind == "message":
                self._on_message(message["channel"].decode(), message["data"])
            elif kind == "subscribe":
                channel = message["channel"].decode()
                self._confirmed(channel)
                if resubscribed:
                    resubscribed.discard(channel)
                    if not resubscribed:
                        start_background(self.repair_all("reconnect"), name="fanout-repair")

    def _confirmed(self, channel: str) -> None:
        if self._unconfirmed[channel] > 1:
            self._unconfirmed[channel] -= 1
            return
        self._unconfirmed.pop(channel, None)
        group = self.groups.get(channel)
        if group is not None and not group.ready.done():
            group.ready.set_result(None)

    # --- delivery -----------------------------------------------------------------------------

    def _on_message(self, channel: str, data: bytes) -> None:
        group = self.groups.get(channel)
        if group is None:
            return
        event = self.layer.deserialize(data)
        if event.get("o") == self.origin:
            return  # ours: delivered locally before it was published
        self.deliver(group, event)

    def deliver_local(self, group_name: str, event: dict[str, Any], skip: Any = None) -> None:
        group = self.groups.get(self.channel(group_name))
        if group is not None:
            self.deliver(group, event, skip)

    def deliver(self, group: Group, event: dict[str, Any], skip: Any = None) -> None:
        kind = event["type"]
        if kind == events.ROOM_FRAME:
            seq = event.get("seq")
            if seq is not None and isinstance(group, RoomFeed):
                if skip is not None:
                    event = {**event, "skip": skip}  # local only: never published
                self._offer(group, seq, event)
            else:
                self._write(group, event, skip)
        elif kind == events.USER_FRAME:
            self._write(group, event)
        elif kind == events.SOCKET_CLOSE:
            user, key = event.get("user"), event.get("signing_key")
            for socket in list(group.members):
                if (user is None or socket.actor.id == user) and (
                    key is None or socket.signing_key_id == key
                ):
                    socket.kick(event["code"])
        elif kind == events.ROOM_KICK:
            for socket in list(group.members):
                room = getattr(socket, "room", None)
                if (
                    socket.actor.id == event["user"]
                    and room is not None
                    and room.slug == event["room"]
                ):
                    socket.kick(event["code"])
        elif kind == events.ROOM_RECHECK and group.members:
            from chat import authz

            authz.recheck_room_soon(group.schema, event["room"])

    def _write(self, group: Group, event: dict[str, Any], skip: Any = None) -> None:
        skip = skip or event.get("skip")  # a local event that waited past a hole keeps its skip
        text: str = event["text"]
        size: int = event.get("n") or len(text.encode())
        seq: int | None = event.get("seq")
        count = 0
        if seq is None:
            for socket in group.members:
                if socket is not skip:
                    socket.out.push(text, size, None)
                    count += 1
        else:
            for socket in group.members:
                if seq > socket.floor and socket is not skip:
                    socket.out.push(text, size, seq)
                    count += 1
        if count:
            group.delivered.inc(count)
            at = event.get("at")
            if at is not None:
                BROADCAST_LATENCY.observe(time.time() - at)

    # --- seq order and repair -------------------------------------------------------------

    def _offer(self, feed: RoomFeed, seq: int, event: dict[str, Any]) -> None:
        high = feed.high
        if high is None:
            feed.pending[seq] = event  # the room's state is being read; sorted out then
            return
        if seq <= high or seq in feed.pending:
            return  # delivered already (local copy, Redis copy, or repair)
        if seq != high + 1 or feed.repairing:
            feed.pending[seq] = event
            if len(feed.pending) > settings.WS_REPAIR_LIMIT:
                self.repair_soon(feed, "hole")
            elif feed.hole_timer is None and not feed.repairing:
                feed.hole_timer = self.loop.call_later(
                    settings.WS_GAP_WAIT, self.repair_soon, feed, "hole"
                )
            return
        self._write(feed, event)
        feed.high = seq
        self._advance(feed)

    def _advance(self, feed: RoomFeed) -> None:
        """Deliver what waited past a hole that is now filled; drop what is now old."""
        pending = feed.pending
        if not pending or feed.high is None:
            return
        for seq in [s for s in pending if s <= feed.high]:
            del pending[seq]
        while feed.high + 1 in pending:
            feed.high += 1
            self._write(feed, pending.pop(feed.high))
        if not pending and feed.hole_timer is not None:
            feed.hole_timer.cancel()
            feed.hole_timer = None

    async def prepare(self, feed: RoomFeed) -> None:
        """Read the room's last seq once per room and process, after its subscription is
        confirmed and before the joining socket reads anything: every socket's own reads are
        then at least as recent, and nothing it should get is dropped as old."""
        while feed.high is None:
            if feed.initialized is None:
                feed.initialized = self.loop.create_future()
                start_background(self._initialize(feed), name="fanout-init")
            await asyncio.shield(feed.initialized)

    async def bind(self, feed: RoomFeed, room_id: int) -> None:
        """The socket joined room `room_id`: a feed that had none (created by this join) takes
        it; a feed of an older room of the same slug (deleted, made again) starts over."""
        if feed.room_id is None:
            feed.room_id = room_id
        elif feed.room_id != room_id:
            feed.high, feed.room_id, feed.initialized = None, None, None
            feed.pending.clear()
            await self.prepare(feed)
            if feed.room_id is None:
                feed.room_id = room_id

    async def _initialize(self, feed: RoomFeed) -> None:
        future = feed.initialized
        assert future is not None
        try:
            room_id, last_seq = await in_schema(feed.schema, _room_state, feed.slug)
        except BaseException as exc:
            feed.initialized = None
            if not future.done():
                future.set_exception(exc)
            future.exception()  # retrieved: the joining sockets see it
            return
        feed.room_id, feed.high = room_id, last_seq
        self._advance(feed)
        if feed.pending and feed.hole_timer is None:
            feed.hole_timer = self.loop.call_later(
                settings.WS_GAP_WAIT, self.repair_soon, feed, "hole"
            )
        if not future.done():
            future.set_result(None)

    def repair_soon(self, feed: RoomFeed, reason: str) -> None:
        if feed.hole_timer is not None:
            feed.hole_timer.cancel()
            feed.hole_timer = None
        if self.groups.get(feed.channel) is not feed or feed.room_id is None:
            return
        if feed.repairing:
            feed.repair_again = True
            return
        feed.repairing = True
        start_background(self._repair(feed, reason), name="fanout-repair")

    async def _repair(self, feed: RoomFeed, reason: str) -> None:
        from chat.selectors import repair_frames

        FANOUT_REPAIRS.labels(reason).inc()
        give_up = self.loop.time() + settings.WS_REPAIR_GIVE_UP
        delay = 0.2
        try:
            while True:
                feed.repair_again = False
                since = feed.high
                assert since is not None and feed.room_id is not None
                try:
                    frames, last_seq = await in_schema(
                        feed.schema,
                        repair_frames,
                        room_id=feed.room_id,
                        slug=feed.slug,
                        since=since,
                        limit=settings.WS_REPAIR_LIMIT,
                    )
                except _REPAIR_RETRIES:
                    if self.loop.time() > give_up:
                        self._unrepairable(feed, None)
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if frames is None:  # too many missed, or the room is gone
                    self._unrepairable(feed, last_seq)
                    return
                now = time.time()
                for frame in frames:
                    seq = frame["seq"]
                    if feed.high is not None and seq > feed.high:
                        text = events.encode(frame)
                        self._write(feed, {"text": text, "seq": seq, "at": now})
                        feed.high = seq
                FANOUT_REPAIRED_FRAMES.inc(len(frames))
                if feed.high is not None and last_seq is not None and last_seq > feed.high:
                    feed.high = last_seq  # the rest of the range: deleted messages
                self._advance(feed)
                if not feed.repair_again:
                    break
        finally:
            feed.repairing = False
        if feed.pending and feed.hole_timer is None:
            feed.hole_timer = self.loop.call_later(
                settings.WS_GAP_WAIT, self.repair_soon, feed, "hole"
            )

    def _unrepairable(self, feed: RoomFeed, last_seq: int | None) -> None:
        """Close the room's sockets with 4409: they resume with `since` on a fresh socket."""
        logger.warning(
            "fan-out: room %s/%s cannot be repaired: closing its sockets 4409",
            feed.schema,
            feed.slug,
        )
        FANOUT_REPAIRS.labels("unrepairable").inc()
        for socket in list(feed.members):
            socket.kick(CloseCode.RESYNC)
        if last_seq is not None and feed.high is not None:
            feed.high = max(feed.high, last_seq)
        self._advance(feed)

    async def repair_all(self, reason: str) -> None:
        """After a reconnect: every room of this process, one query per tenant for the rooms'
        last seq, then one per room that missed something. Kicks may have been lost too:
        every socket is re-checked against the database."""
        from chat import authz
        from chat.selectors import rooms_last_seq

        by_schema: dict[str, list[RoomFeed]] = {}
        for group in list(self.groups.values()):
            if isinstance(group, RoomFeed) and group.room_id is not None and group.high is not None:
                by_schema.setdefault(group.schema, []).append(group)
        for schema, feeds in by_schema.items():
            try:
                last = await in_schema(
                    schema, rooms_last_seq, [f.room_id for f in feeds if f.room_id is not None]
                )
            except Exception:
                logger.warning("fan-out: repair check of %s failed", schema, exc_info=True)
                for feed in feeds:
                    self.repair_soon(feed, reason)  # each retries until WS_REPAIR_GIVE_UP
                continue
            self.check_tails(schema, last, reason=reason, wait=False)
        start_background(authz.recheck_all(), name="fanout-recheck")

    def check_tails(
        self, schema: str, last_seqs: dict[int, int], *, reason: str = "tail", wait: bool = True
    ) -> None:
        """Rooms whose last seq in the database is past what this process delivered: repaired
        now (after a reconnect) or, if nothing filled them within WS_GAP_WAIT, then."""
        for group in list(self.groups.values()):
            if not isinstance(group, RoomFeed) or group.schema != schema or group.high is None:
                continue
            last = last_seqs.get(group.room_id or -1)
            if last is None or last <= group.high:
                continue
            if not wait:
                self.repair_soon(group, reason)
            else:
                self.loop.call_later(settings.WS_GAP_WAIT, self._tail_check, group, last)

    def _tail_check(self, feed: RoomFeed, last: int) -> None:
        if feed.high is not None and feed.high < last:
            self.repair_soon(feed, "tail")

    # --- publishing -------------------------------------------------------------------------

    def retry_later(self, group: str, event: dict[str, Any]) -> None:
        """A PUBLISH Redis did not take: sent again, in order, once it does."""
        if len(self._unsent) >= RETRY_MAX_EVENTS:
            self._unsent.popleft()
        self._unsent.append((time.monotonic(), group, event))
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = start_background(self._retry(), name="fanout-retry")

    async def _retry(self) -> None:
        delay = 0.2
        while self._unsent:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            while self._unsent:
                at, group, event = self._unsent[0]
                if time.monotonic() - at > RETRY_MAX_AGE:
                    self._unsent.popleft()
                    continue
                try:
                    await self.layer.group_send(group, event)
                except (RedisError, OSError):
                    break
                self._unsent.popleft()
                delay = 0.2


_REPAIR_RETRIES: tuple[type[BaseException], ...] = (DatabaseUnavailable, *CONNECTION_ERRORS)
_hubs: dict[int, tuple[asyncio.AbstractEventLoop, Hub]] = {}


def hub() -> Hub:
    """This event loop's hub, started at its first socket."""
    loop = asyncio.get_running_loop()
    entry = _hubs.get(id(loop))
    if entry is None or entry[0] is not loop:
        entry = _hubs[id(loop)] = (loop, Hub())
    return entry[1]


def running_hub() -> Hub | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    entry = _hubs.get(id(loop))
    return entry[1] if entry is not None and entry[0] is loop else None


async def publish(group: str, event: dict[str, Any], *, skip: Any = None) -> None:
    """Deliver to this process's sockets of `group` now, then PUBLISH for the other processes
    (the hub skips its own copy). A PUBLISH Redis refuses is counted and retried: what the
    event reports is already stored, so the caller's write does not fail."""
    local = running_hub()
    if local is not None:
        event["o"] = local.origin
        local.deliver_local(group, event, skip)
    try:
        await get_channel_layer().group_send(group, event)
    except (RedisError, OSError):
        LAYER_SEND_FAILURES.inc()
        warn_redis_trouble(logger, "channel-layer send failed: Redis unreachable")
        if local is not None:
            local.retry_later(group, event)
