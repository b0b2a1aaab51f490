"""Section 4 of the contract, "no silent gap on a live socket", with the faults injected into
real processes: a Redis of the test's own SIGKILLed and started again mid-traffic, its pub/sub
connections killed (`CLIENT KILL TYPE pubsub`), messages stored whose publish never happened
(rows written behind the server's back: a hole, a tail, more than the repair takes, a resend),
and a client that stops reading (4408).

After each fault every socket that stayed open must have every stored message exactly once,
in seq order; a socket the server could not repair is closed with 4409 and resumes with
`since`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import websockets

from tests.api_helpers import http
from tests.conftest import LiveServer, UserInfo, make_user_in, tokens_for, unique
from tests.e2e.conftest import RedisProcess
from tests.realtime_helpers import (
    Sockets,
    fence,
    frames_until,
    in_tenant,
    insert_messages,
    of_type,
    rest_history,
    room_path,
    send,
)

SLOW = 30.0  # generous: the machine may be busy


class Collector:
    """Reads a socket all along (so it never becomes a slow client) and keeps its frames."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.closed = self.ws.close_code or 1006

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f.get("type") == "chat.message"]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _stored_seqs(server: LiveServer, user: UserInfo, slug: str) -> list[int]:
    return [m["seq"] for m in rest_history(server, user, slug)]


async def _until_complete(collectors: list[Collector], expected: set[int]) -> float:
    """Wait until every collector has every expected seq, or was closed; seconds waited."""
    started = time.monotonic()
    deadline = started + SLOW
    while time.monotonic() < deadline:
        if all(c.closed is not None or expected <= set(c.seqs()) for c in collectors):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _assert_complete_once_in_order(collectors: list[Collector], expected: set[int]) -> None:
    for n, collector in enumerate(collectors):
        seqs = collector.seqs()
        assert seqs == sorted(set(seqs)), f"socket {n}: a duplicate or out of order: {seqs}"
        if collector.closed is None:
            missing = sorted(expected - set(seqs))
            assert not missing, f"socket {n} stayed open and missed {missing}"
        else:
            assert collector.closed == 4409, f"socket {n} closed with {collector.closed}"


def _ready(server: LiveServer) -> int:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


async def _open_room(sockets: Sockets, server: LiveServer, user: UserInfo, slug: str) -> Any:
    ws = await sockets.room(server, user, slug)
    await frames_until(ws, of_type("presence"))
    return ws


FAST_SENDER = {"CHAT_RATE_PER_SECOND": "100", "CHAT_RATE_BURST": "100"}


async def test_open_sockets_miss_nothing_across_a_redis_sigkill_and_restart(
    server_factory: Any, tenant_a: Any, redis_process: RedisProcess
) -> None:
    env = {"REDIS_URL": redis_process.url, **FAST_SENDER}
    first, second = server_factory(**env), server_factory(**env)
    alice, bob, carol = (make_user_in(tenant_a) for _ in range(3))
    slug = unique("restart-")
    with http(first, tenant_a.domain, tokens_for(alice)["access"]) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
    async with Sockets() as sockets:
        sender = await _open_room(sockets, first, alice, slug)
        readers = [
            await _open_room(sockets, first, bob, slug),
            await _open_room(sockets, second, carol, slug),
            await _open_room(sockets, second, bob, slug),
        ]
        collectors = [Collector(ws) for ws in (sender, *readers)]
        ready_while_down = None
        restarted_at = 0.0
        for n in range(60):
            await send(sender, {"type": "message", "message": f"m{n}", "client_id": f"c{n}"})
            if n == 20:
                redis_process.kill()
                await asyncio.sleep(0.3)
                ready_while_down = await asyncio.to_thread(_ready, first)
            if n == 35:
                redis_process.start()
                restarted_at = time.monotonic()
            await asyncio.sleep(0.08)
        assert ready_while_down == 503  # /readyz says so while Redis is away
        stored = set(await asyncio.to_thread(_stored_seqs, second, bob, slug))
        assert len(stored) == 60  # PostgreSQL took every message throughout
        await _until_complete(collectors, stored)
        complete_after = time.monotonic() - restarted_at
        for c in collectors:
            await c.stop()
        _assert_complete_once_in_order(collectors, stored)
        # The sender got its own chat.message for every message, Redis or not.
        echoed = {f["client_id"] for f in collectors[0].frames if f.get("type") == "chat.message"}
        assert echoed == {f"c{n}" for n in range(60)}
        assert complete_after < SLOW
        print(f"redis restart: every open socket complete {complete_after:.2f} s after restart")
    for server in (first, second):
        assert "Exception in ASGI application" not in server.log()


async def test_killed_pubsub_connections_lose_nothing(
    server_factory: Any, tenant_a: Any, redis_process: RedisProcess
) -> None:
    """The case of the issue: two `CLIENT KILL TYPE pubsub` while alice sends 40 messages
    0.11 s apart; bob's socket on the other process must get all 40, once, in order."""
    env = {"REDIS_URL": redis_process.url, **FAST_SENDER}
    first, second = server_factory(**env), server_factory(**env)
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("kill-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, first, alice, slug)
        receiver = await _open_room(sockets, second, bob, slug)
        collectors = [Collector(sender), Collector(receiver)]
        kills = 0
        for n in range(40):
            await send(sender, {"type": "message", "message": f"k{n}"})
            if n in (10, 14):
                kills += redis_process.client().client_kill_filter(_type="pubsub")
            await asyncio.sleep(0.11)
        assert kills >= 4  # both processes' pub/sub connections, twice
        stored = set(await asyncio.to_thread(_stored_seqs, second, bob, slug))
        assert len(stored) == 40
        await _until_complete(collectors, stored)
        for c in collectors:
            await c.stop()
        _assert_complete_once_in_order(collectors, stored)
        assert collectors[1].closed is None


async def test_a_message_whose_publish_never_happened_is_delivered_before_the_next(
    server_factory: Any, tenant_a: Any
) -> None:
    """Rows written behind the server's back are messages whose publish was lost: the next
    message reveals the hole, which is read from PostgreSQL and delivered first."""
    server = server_factory(WS_AUTH_RECHECK_INTERVAL="0")  # no periodic check: the hole does it
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("hole-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, server, alice, slug)
        receiver = await _open_room(sockets, server, bob, slug)
        last = await asyncio.to_thread(insert_messages, alice, slug, 3)
        frames = await fence(sender, receiver)
        for seen in frames:
            messages = [f for f in seen if f.get("type") == "chat.message"]
            assert [m["seq"] for m in messages] == [last - 2, last - 1, last, last + 1]
            assert [m["message"] for m in messages[:3]] == ["bulk 1", "bulk 2", "bulk 3"]


async def test_a_lost_last_message_is_found_by_the_periodic_check(
    server_factory: Any, tenant_a: Any
) -> None:
    """No later message reveals it: the periodic authorization pass reads the rooms' last
    seq in the query it makes anyway, and the gap is repaired."""
    server = server_factory(WS_AUTH_RECHECK_INTERVAL="1")
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("tail-")
    async with Sockets() as sockets:
        receiver = await _open_room(sockets, server, bob, slug)
        last = await asyncio.to_thread(insert_messages, alice, slug, 2)
        frames = await frames_until(receiver, lambda f: f.get("seq") == last, SLOW)
        messages = [f for f in frames if f.get("type") == "chat.message"]
        assert [m["seq"] for m in messages] == [last - 1, last]


async def test_more_missed_than_the_repair_takes_closes_4409_and_since_resumes(
    server_factory: Any, tenant_a: Any
) -> None:
    server = server_factory(WS_AUTH_RECHECK_INTERVAL="0", WS_REPAIR_LIMIT="5")
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("toomany-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, server, alice, slug)
        receiver = await _open_room(sockets, server, bob, slug)
        before = await asyncio.to_thread(insert_messages, alice, slug, 0)
        await asyncio.to_thread(insert_messages, alice, slug, 10)
        await send(sender, {"type": "message", "message": "revealer"})
        for ws in (receiver, sender):
            try:
                async with asyncio.timeout(SLOW):
                    async for _ in ws:
                        pass
            except websockets.ConnectionClosed:
                pass
            assert ws.close_code == 4409
        resumed = await sockets.room(server, bob, slug, since=before)
        frames = await frames_until(resumed, of_type("resume.done"))
        seqs = [f["seq"] for f in frames if f.get("type") == "chat.message"]
        assert seqs == list(range(before + 1, before + 12))


def _insert_with_client_id(author: UserInfo, slug: str, client_id: str) -> int:
    from django.db import connection

    from chat.models import Room

    def insert() -> int:
        room = Room.objects.get(slug=slug)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO chat_message (room_id, user_id, body, client_id)"
                " VALUES (%s, %s, 'never published', %s) RETURNING seq",
                [room.pk, author.id, client_id],
            )
            row = cursor.fetchone()
        assert row is not None
        return int(row[0])

    return in_tenant(author.tenant, insert)


async def test_a_resend_of_a_message_never_broadcast_reaches_the_room_once(
    server_factory: Any, tenant_a: Any
) -> None:
    server = server_factory(WS_AUTH_RECHECK_INTERVAL="0")
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resend-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, server, alice, slug)
        receiver = await _open_room(sockets, server, bob, slug)
        seq = await asyncio.to_thread(_insert_with_client_id, alice, slug, "lost-cid")
        await send(
            sender, {"type": "message", "message": "never published", "client_id": "lost-cid"}
        )
        answer = await frames_until(sender, lambda f: f.get("client_id") == "lost-cid")
        assert answer[-1]["seq"] == seq
        frames = await fence(sender, receiver)
        sender_copies = [f for f in frames[0] if f.get("client_id") == "lost-cid"]
        receiver_copies = [f for f in frames[1] if f.get("client_id") == "lost-cid"]
        assert sender_copies == []  # the answer was its one copy
        assert [f["seq"] for f in receiver_copies] == [seq]


def _closes_with(server: LiveServer, code: int) -> int:
    """How many sockets the server closed with `code` (its /metrics)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    prefix = f'chat_close_codes_total{{code="{code}"}} '
    return sum(
        int(float(line[len(prefix) :])) for line in text.splitlines() if line.startswith(prefix)
    )


class StalledClient:
    """A WebSocket client that stops reading its TCP socket after the handshake, with a tiny
    receive buffer so that the server's buffers fill after a few hundred KiB instead of
    megabytes (client libraries read ahead into memory; this one does not). Frames are
    parsed with the `websockets` sans-I/O protocol when it reads again."""

    def __init__(self, server: LiveServer, host: str, path: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(parse_uri(f"{server.ws_url}{path}"), max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(SLOW)
        self.sock.connect(("127.0.0.1", server.port))
        request = self.protocol.connect()
        del request.headers["Host"]
        request.headers["Host"] = host
        self.protocol.send_request(request)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        while self.protocol.handshake_exc is None and not self._events():
            self.protocol.receive_data(self.sock.recv(65536))
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc

    def _events(self) -> list[Any]:
        return self.protocol.events_received()

    def read_to_close(self) -> int | None:
        """Read again, to the end: the close code the server sent (None: none came)."""
        while self.protocol.close_rcvd is None:
            data = self.sock.recv(1 << 20)
            if not data:
                break
            self.protocol.receive_data(data)
            self._events()
        self.sock.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None


async def test_a_client_that_stops_reading_is_closed_4408_and_the_room_goes_on(
    server_factory: Any, tenant_a: Any
) -> None:
    server = server_factory(
        WS_MAX_OUTBOUND_BYTES="262144",
        CHAT_MAX_MESSAGE_CHARS="60000",
        # uvicorn's own keepalive would close the stalled socket (1011, no pong) after 40 s
        # on a slow machine: out of the way here.
        UVICORN_WS_PING_INTERVAL="600",
        **FAST_SENDER,
    )
    alice, bob, slow = (make_user_in(tenant_a) for _ in range(3))
    slug = unique("slow-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, server, alice, slug)
        reader = await _open_room(sockets, server, bob, slug)
        stalled = await asyncio.to_thread(
            StalledClient, server, tenant_a.domain, room_path(slug, tokens_for(slow)["access"])
        )
        collector, echoes = Collector(reader), Collector(sender)
        big = "x" * 50_000
        # Until the server counts a 4408: how much the kernel buffers varies with the load,
        # so the amount is not fixed (it takes a few MB of 50 KB messages).
        for n in range(400):
            await send(sender, {"type": "message", "message": f"{n} {big}"})
            if n % 10 == 9:
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(_closes_with, server, 4408):
                    break
        assert await asyncio.to_thread(_closes_with, server, 4408) == 1
        stored = set(await asyncio.to_thread(_stored_seqs, server, bob, slug))
        await _until_complete([collector], stored)
        await _until_complete([echoes], stored)
        for c in (collector, echoes):
            await c.stop()
        _assert_complete_once_in_order([collector, echoes], stored)
        assert collector.closed is None and echoes.closed is None
        # The stalled client reads again: what the kernel held, then the 4408.
        assert await asyncio.to_thread(stalled.read_to_close) == 4408
    assert "Exception in ASGI application" not in server.log()


async def test_an_idle_pubsub_connection_is_kept_not_mistaken_for_a_dead_one(
    server_factory: Any, tenant_a: Any
) -> None:
    """Quiet for many health intervals: the hub's own PINGs are answered, so it neither
    reconnects (and repairs every room) nor misses what comes after."""
    env = {"WS_PUBSUB_HEALTH_INTERVAL": "0.3"}
    first, second = server_factory(**env), server_factory(**env)
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("idle-")
    async with Sockets() as sockets:
        sender = await _open_room(sockets, first, alice, slug)
        receiver = await _open_room(sockets, second, bob, slug)
        await asyncio.sleep(3)  # ten intervals, no traffic
        frames = await fence(sender, receiver)
        assert [f["type"] for f in frames[1]][-1] == "chat.message"
    for server in (first, second):
        log = server.log()
        assert "pub/sub connection lost" not in log
        assert "pub/sub is back" not in log
