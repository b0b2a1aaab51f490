"""A connection that PostgreSQL ended while it sat idle is replaced, not used (issue 8,
item 8): the database threads keep theirs for their life, the pool keeps some idle.

Only backends of this run's own test database are terminated, never other databases."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import psycopg
from django.conf import settings
from django.db import connection, connections

from tenants.context import in_schema
from tests.api_helpers import bearer
from tests.conftest import (
    TEST_DATABASE_URL,
    LiveServer,
    TenantInfo,
    make_user_in,
    tokens_for,
    unique,
)
from tests.support import TIMEOUT, ws_connect, ws_receive_type


def _terminate_test_database_backends() -> int:
    """End every other backend connected to the test database; how many were ended."""
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _close_this_threads_connections() -> None:
    """Close the test thread's own connections (terminated above) from the async test: safe,
    nothing else uses them; Django refuses any call from a thread with a running loop."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        connections.close_all()
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _wait_past_idle_check() -> None:
    # The connections must have been idle for longer than the check's threshold.
    time.sleep(getattr(settings, "DB_IDLE_CHECK_SECONDS", 2.0) + 0.5)


def _query_schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.05)")
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])


async def test_database_threads_reconnect_after_their_idle_connections_were_terminated(
    tenant_a: TenantInfo,
) -> None:
    calls = settings.DB_THREADS * 2  # enough to warm, then reach, every database thread
    warm = await asyncio.gather(
        *(in_schema(tenant_a.schema_name, _query_schema) for _ in range(calls))
    )
    assert warm == [tenant_a.schema_name] * calls
    try:
        assert _terminate_test_database_backends() >= 1
        _wait_past_idle_check()
        results = await asyncio.gather(
            *(in_schema(tenant_a.schema_name, _query_schema) for _ in range(calls)),
            return_exceptions=True,
        )
        assert results == [tenant_a.schema_name] * calls
    finally:
        _close_this_threads_connections()  # this thread's connection was terminated too


async def test_a_server_answers_http_websockets_and_readyz_after_its_connections_were_terminated(
    server_factory,
    tenant_a: TenantInfo,  # type: ignore[no-untyped-def]
) -> None:
    server: LiveServer = server_factory(DB_THREADS="2")
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    slug = unique("stale")
    headers = {"Host": tenant_a.domain, **bearer(token)}

    async def chat_round_trip(text: str) -> dict:  # type: ignore[type-arg]
        path = f"/ws/chat/{slug}{text}/?token={token}"  # a room each: only its own echo
        ws = await ws_connect(server.ws_url, tenant_a.domain, path)
        try:
            await ws.send(json.dumps({"type": "message", "message": text}))
            return await ws_receive_type(ws, "chat.message")
        finally:
            await ws.close()

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        # Warm: both database threads, a pooled HTTP connection and the probe's connection.
        for _ in range(3):
            assert (await client.get("/api/rooms/", headers=headers)).status_code == 200
        await asyncio.gather(*(chat_round_trip(f"warm{i}") for i in range(4)))
        assert (await client.get("/readyz")).status_code == 200

        try:
            assert _terminate_test_database_backends() >= 3
            _wait_past_idle_check()
            readyz = await client.get("/readyz")
            rooms = await client.get("/api/rooms/", headers=headers)
            frames = await asyncio.gather(
                *(chat_round_trip(f"after{i}") for i in range(4)), return_exceptions=True
            )
        finally:
            _close_this_threads_connections()
    echoes = [f["message"] if isinstance(f, dict) else repr(f) for f in frames]
    expected = [f"after{i}" for i in range(4)]
    assert (readyz.status_code, rooms.status_code, echoes) == (200, 200, expected), (
        readyz.text,
        rooms.text[:300],
    )
    assert "Traceback" not in server.log()
