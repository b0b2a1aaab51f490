"""No tenant can starve another (issue 8, item 4), on a real uvicorn process.

Tenant A loads the database threads with what its users may do: sockets that reconnect
with `since=0` to a room with a long history and drop the socket at once (a flaky mobile
client: each costs a replay of WS_REPLAY_LIMIT messages that nobody waits for), and
sockets writing messages as fast as A's (raised) rate limit lets them. Meanwhile tenant B
chats and the load balancer polls `/readyz`. With one FIFO queue in front of the database
threads, B's messages and the probe wait behind A's backlog; with per-tenant queues they
wait for at most one call per busy thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import (
    TEST_DATABASE_URL,
    LiveServer,
    TenantInfo,
    blocking,
    make_user_in,
    tokens_for,
    unique,
)
from tests.support import ws_connect

HISTORY = 1000  # = WS_REPLAY_LIMIT: every reconnect replays all of it
BODY_CHARS = 2000
RECONNECTERS = int(os.environ.get("FAIRNESS_RECONNECTERS", "48"))
WRITERS = 10
LOAD_SECONDS = float(os.environ.get("FAIRNESS_SECONDS", "12"))
# Generous: B's echo and /readyz are checked against these, not against a latency target.
ECHO_TIMEOUT = 5.0
READYZ_TIMEOUT = 5.0


def _unlimited(tenant: TenantInfo) -> None:
    from tenants.models import Tenant

    blocking(
        lambda: Tenant.objects.filter(pk=tenant.pk).update(
            rate_limit_per_second=10_000.0, rate_limit_burst=10_000
        )
    )


def _fill_history(tenant: TenantInfo, slug: str, user_id: int) -> None:
    """HISTORY messages in `slug`, inserted in one statement (the trigger numbers them)."""
    schema = tenant.schema_name
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{schema}".chat_room (slug, name, is_private, created_by_id, last_seq, '
            "created_at) VALUES (%s, %s, false, %s, 0, now())",
            (slug, slug, user_id),
        )
        conn.execute(
            f'INSERT INTO "{schema}".chat_message (room_id, user_id, body) '
            f'SELECT r.id, %s, repeat(%s, %s) FROM "{schema}".chat_room r, '
            "generate_series(1, %s) WHERE r.slug = %s",
            (user_id, "x", BODY_CHARS, HISTORY, slug),
        )


async def _reconnect_forever(server: LiveServer, host: str, path: str, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set():
        try:
            ws = await ws_connect(server.ws_url, host, path)
            await ws.close()
            count += 1
        except Exception:
            await asyncio.sleep(0.05)
    return count


async def _write_forever(ws: Any, stop: asyncio.Event) -> int:
    count = 0

    async def drain() -> None:
        while True:
            await ws.recv()

    reader = asyncio.ensure_future(drain())
    try:
        while not stop.is_set():
            await ws.send(json.dumps({"type": "message", "message": f"load {count}"}))
            count += 1
            await asyncio.sleep(0.005)
    finally:
        reader.cancel()
    return count


async def _b_round_trips(ws: Any, stop: asyncio.Event) -> list[float | None]:
    """B sends a message every 0.5 s; the seconds to its echo (None: no echo in time)."""
    latencies: list[float | None] = []
    while not stop.is_set():
        text = unique("b-")
        started = time.monotonic()
        await ws.send(json.dumps({"type": "message", "message": text}))
        try:
            async with asyncio.timeout(ECHO_TIMEOUT):
                while json.loads(await ws.recv()).get("message") != text:
                    pass
            latencies.append(time.monotonic() - started)
        except TimeoutError:
            latencies.append(None)
        await asyncio.sleep(0.5)
    return latencies


async def _readyz_polls(server: LiveServer, stop: asyncio.Event) -> list[tuple[int, float]]:
    polls: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=READYZ_TIMEOUT) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = (await client.get("/readyz")).status_code
            except httpx.TimeoutException:
                status = 0
            polls.append((status, time.monotonic() - started))
            await asyncio.sleep(0.5)
    return polls


@pytest.mark.timeout(300)  # a fresh tenant, a filled room, 14 s of load
async def test_a_tenant_loading_the_database_neither_delays_another_tenant_nor_fails_readyz(
    server_factory: Any, make_tenant: Any, tenant_b: TenantInfo
) -> None:
    # Two database threads, so that a handful of A's sockets can saturate them.
    server: LiveServer = server_factory(DB_THREADS="2")
    tenant_a: TenantInfo = make_tenant()
    _unlimited(tenant_a)
    user_a = make_user_in(tenant_a)
    token_a = tokens_for(user_a)["access"]
    history = unique("history")
    _fill_history(tenant_a, history, user_a.id)
    user_b = make_user_in(tenant_b)
    b_socket = await ws_connect(
        server.ws_url,
        tenant_b.domain,
        f"/ws/chat/{unique('calm')}/?token={tokens_for(user_b)['access']}",
    )
    writers = [
        await ws_connect(
            server.ws_url, tenant_a.domain, f"/ws/chat/{unique('busy')}/?token={token_a}"
        )
        for _ in range(WRITERS)
    ]
    stop = asyncio.Event()
    replay_path = f"/ws/chat/{history}/?token={token_a}&since=0"
    load = [
        *(
            asyncio.ensure_future(_reconnect_forever(server, tenant_a.domain, replay_path, stop))
            for _ in range(RECONNECTERS)
        ),
        *(asyncio.ensure_future(_write_forever(ws, stop)) for ws in writers),
    ]
    try:
        await asyncio.sleep(2.0)  # let A's backlog build up
        b_task = asyncio.ensure_future(_b_round_trips(b_socket, stop))
        probe_task = asyncio.ensure_future(_readyz_polls(server, stop))
        await asyncio.sleep(LOAD_SECONDS)
        stop.set()
        latencies, polls = await asyncio.wait_for(asyncio.gather(b_task, probe_task), 30)
        done = await asyncio.wait_for(asyncio.gather(*load), 30)
    finally:
        stop.set()
        for task in load:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in [b_socket, *writers]), return_exceptions=True)
    reconnects, writes = sum(done[:RECONNECTERS]), sum(done[RECONNECTERS:])
    summary = (
        f"A: {reconnects} reconnects, {writes} writes; B echo seconds: "
        f"{[None if x is None else round(x, 3) for x in latencies]}; "
        f"/readyz: {[(s, round(t, 3)) for s, t in polls]}"
    )
    print(summary)
    # A really loaded the server (else this proves nothing)...
    assert reconnects >= RECONNECTERS and writes >= WRITERS * 10, summary
    # ...and B was answered every time, and the pod stayed ready throughout.
    assert len(latencies) >= 5 and None not in latencies, summary
    assert len(polls) >= 5 and {status for status, _ in polls} == {200}, summary
