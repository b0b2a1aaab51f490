"""Graceful drain (PROTOCOL.md section 3, close code 1001): SIGTERM to a real uvicorn process
closes every socket with 1001 (not uvicorn's own 1012), refuses new handshakes the same way
while draining, and lets the process exit within DRAIN_TIMEOUT plus a few seconds; clients
then resume on another process with `since` and miss nothing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from tests.conftest import LiveServer, TenantInfo, make_user_in, tokens_for, unique
from tests.realtime_helpers import (
    Sockets,
    close_code,
    frames_until,
    is_message,
    of_type,
    ping_pong,
    room_path,
    say,
    send,
)
from tests.support import TIMEOUT

GOING_AWAY = 1001
EXIT_SLACK = 5.0  # seconds the process may take after DRAIN_TIMEOUT to be gone


async def wait_exit(server: LiveServer, timeout: float) -> float:
    """Seconds until the server process exited; fails if it is still running after `timeout`."""
    started = time.monotonic()
    await asyncio.to_thread(server.process.wait, timeout)
    return time.monotonic() - started


@contextmanager
def silent_client(
    server: LiveServer, tenant: TenantInfo, path: str, *, receive_buffer: int | None = None
) -> Iterator[socket.socket]:
    """A WebSocket client that completes the handshake and then never reads or answers again
    (a stuck phone on a dead network): it can never finish a close handshake. A small
    `receive_buffer` makes the server's writes to it back up after a few kilobytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {tenant.domain}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield sock
    finally:
        sock.close()


async def test_sigterm_closes_every_socket_with_1001_and_the_process_exits_in_time(
    server_factory, tenant_a
):
    doomed = server_factory()
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug, elsewhere = unique("drain_"), unique("drain_")
    async with Sockets() as sockets:
        clients = [
            await sockets.room(doomed, alice, slug),
            await sockets.room(doomed, bob, slug),
            await sockets.room(doomed, bob, elsewhere),
            await sockets.notifications(doomed, alice),
            await sockets.notifications(doomed, bob),
        ]
        for ws in clients:
            await ping_pong(ws)

        doomed.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(
            *(close_code(ws, settings.DRAIN_TIMEOUT + EXIT_SLACK) for ws in clients)
        )
        assert codes == [GOING_AWAY] * len(clients), doomed.log()[-3000:]
        took = await wait_exit(doomed, settings.DRAIN_TIMEOUT + EXIT_SLACK)
    # Every socket went at once, so the drain did not need its whole timeout.
    assert took < settings.DRAIN_TIMEOUT


async def test_client_resumes_on_another_process_with_since_and_misses_nothing(
    live_server, server_factory, tenant_a
):
    doomed = server_factory()
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("drain_")
    async with Sockets() as sockets:
        alice_ws = await sockets.room(doomed, alice, slug)
        last_seen = await say(alice_ws, "before the drain")
        bob_ws = await sockets.room(live_server, bob, slug)
        await ping_pong(bob_ws)

        doomed.process.send_signal(signal.SIGTERM)
        assert await close_code(alice_ws, settings.DRAIN_TIMEOUT + EXIT_SLACK) == GOING_AWAY
        # The drained socket leaves the room's presence on every process.
        await frames_until(bob_ws, lambda f: f == {"type": "user.left", "user": alice.username})

        missed = [await say(bob_ws, f"while alice was away {n}") for n in range(2)]

        back = await sockets.room(live_server, alice, slug, since=last_seen["seq"])
        frames = await frames_until(back, of_type("resume.done"))
        replayed = [f for f in frames if f["type"] == "chat.message"]
        assert replayed == missed
        assert frames[-1] == {"type": "resume.done", "seq": missed[-1]["seq"]}

        live = await say(bob_ws, "welcome back")
        assert (await frames_until(back, of_type("chat.message")))[-1] == live
    await wait_exit(doomed, settings.DRAIN_TIMEOUT + EXIT_SLACK)


def close_code_read_raw(sock: socket.socket, timeout: float) -> int | None:
    """Read server frames off a raw socket (unmasked, as servers send them) until a close
    frame; its code, or None if the connection ended without one."""
    sock.settimeout(timeout)
    buffer = b""

    def take(count: int) -> bytes | None:
        nonlocal buffer
        while len(buffer) < count:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            buffer += chunk
        taken, buffer = buffer[:count], buffer[count:]
        return taken

    while True:
        head = take(2)
        if head is None:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length >= 126:
            extended = take(2 if length == 126 else 8)
            if extended is None:
                return None
            length = int.from_bytes(extended, "big")
        payload = take(length)
        if payload is None:
            return None
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


async def test_a_client_that_never_answers_the_close_gets_1001_and_does_not_hold_up_exit(
    server_factory, tenant_a
):
    drain_timeout = 3.0
    doomed = server_factory(DRAIN_TIMEOUT=str(drain_timeout))
    user = make_user_in(tenant_a)
    slug = unique("drain_")
    path = room_path(slug, tokens_for(user)["access"])
    async with Sockets() as sockets:
        well_behaved = await sockets.room(doomed, user, slug)
        await ping_pong(well_behaved)
        with silent_client(doomed, tenant_a, path) as silent:
            started = time.monotonic()
            doomed.process.send_signal(signal.SIGTERM)
            assert await close_code(well_behaved, drain_timeout + EXIT_SLACK) == GOING_AWAY
            await wait_exit(doomed, drain_timeout + EXIT_SLACK)
            took = time.monotonic() - started
            code = await asyncio.to_thread(close_code_read_raw, silent, TIMEOUT)
    assert code == GOING_AWAY
    assert took <= drain_timeout + EXIT_SLACK, took


async def test_a_client_that_stopped_reading_with_a_backlog_does_not_hold_up_exit(
    server_factory, tenant_a
):
    """The client above, but with megabytes the server could not write to it: the drain's
    close of that socket must not wait for a client that will never read."""
    drain_timeout = 3.0
    doomed = server_factory(
        DRAIN_TIMEOUT=str(drain_timeout), CHAT_RATE_PER_SECOND="10000", CHAT_RATE_BURST="10000"
    )
    user = make_user_in(tenant_a)
    slug = unique("drain_")
    path = room_path(slug, tokens_for(user)["access"])
    body = "x" * 3900
    async with Sockets() as sockets:
        writer = await sockets.room(doomed, user, slug)
        await ping_pong(writer)
        with silent_client(doomed, tenant_a, path, receive_buffer=4096):
            # About 4 MB for the silent client, far past what the kernel buffers take.
            for n in range(1000):
                await send(writer, {"type": "message", "message": f"{n} {body}"})
            await frames_until(writer, is_message(f"999 {body}"), 60)
            started = time.monotonic()
            doomed.process.send_signal(signal.SIGTERM)
            assert await close_code(writer, drain_timeout + EXIT_SLACK) == GOING_AWAY
            await wait_exit(doomed, drain_timeout + EXIT_SLACK + 30)
            took = time.monotonic() - started
    assert took <= drain_timeout + EXIT_SLACK, took
