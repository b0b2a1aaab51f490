"""The hard part of the core: tenant safety and gap-free seq under concurrent load.

Several tenants write through ONE uvicorn process at the same moment, into rooms with the
same name. If setting the schema and running the query could be split by another tenant's
coroutine on the shared ORM thread, rows would land in, or be read from, the wrong schema.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.db import connection

from tests.conftest import LiveServer, TenantInfo, blocking, make_user_in, tokens_for, unique
from tests.support import ws_connect

SOCKETS_PER_TENANT = 4
MESSAGES_PER_SOCKET = 20  # the default burst: no message is rate limited


def _rows(schema_name: str, slug: str) -> list[tuple[int, str]]:
    """(seq, body) of every message of `slug` in `schema_name`, read with explicit SQL."""

    def query() -> list[tuple[int, str]]:
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT m.seq, m.body FROM "{schema_name}".chat_message m '
                f'JOIN "{schema_name}".chat_room r ON r.id = m.room_id WHERE r.slug = %s '
                "ORDER BY m.seq",
                [slug],
            )
            return list(cursor.fetchall())

    return blocking(query)


async def _collect(ws: Any, expected: int, seen: list[dict[str, Any]]) -> None:
    while sum(1 for f in seen if f["type"] == "chat.message") < expected:
        seen.append(json.loads(await ws.recv()))


async def _run_writers(
    servers: list[LiveServer], tenants: list[TenantInfo], slug: str
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Open SOCKETS_PER_TENANT sockets per tenant (spread over `servers`), then have all of
    them send MESSAGES_PER_SOCKET messages at once; return what every socket received."""
    sockets: dict[tuple[str, int], Any] = {}
    for tenant in tenants:
        for i in range(SOCKETS_PER_TENANT):
            user = make_user_in(tenant)
            server = servers[i % len(servers)]
            token = tokens_for(user)["access"]
            path = f"/ws/chat/{slug}/?token={token}"
            sockets[(tenant.schema_name, i)] = await ws_connect(server.ws_url, tenant.domain, path)
    received: dict[tuple[str, int], list[dict[str, Any]]] = {key: [] for key in sockets}
    per_tenant = SOCKETS_PER_TENANT * MESSAGES_PER_SOCKET
    start = asyncio.Event()

    async def write(key: tuple[str, int]) -> None:
        await start.wait()
        schema, index = key
        for n in range(MESSAGES_PER_SOCKET):
            body = f"{schema}|{index}|{n}"
            await sockets[key].send(json.dumps({"type": "message", "message": body}))

    readers = [
        asyncio.create_task(_collect(ws, per_tenant, received[key])) for key, ws in sockets.items()
    ]
    writers = [asyncio.create_task(write(key)) for key in sockets]
    start.set()
    await asyncio.wait_for(asyncio.gather(*writers, *readers), timeout=90)
    for ws in sockets.values():
        await ws.close()
    return received


def _assert_isolated_and_gap_free(
    tenants: list[TenantInfo], slug: str, received: dict[tuple[str, int], list[dict[str, Any]]]
) -> int:
    per_tenant = SOCKETS_PER_TENANT * MESSAGES_PER_SOCKET
    expected_seqs = list(range(1, per_tenant + 1))
    rows_checked = 0
    for tenant in tenants:
        rows = _rows(tenant.schema_name, slug)
        rows_checked += len(rows)
        bodies = [body for _, body in rows]
        assert [seq for seq, _ in rows] == expected_seqs, f"seq gap/duplicate in {tenant}"
        assert all(body.startswith(f"{tenant.schema_name}|") for body in bodies), (
            f"a foreign tenant's row is in {tenant.schema_name}"
        )
        assert sorted(bodies) == sorted(
            f"{tenant.schema_name}|{i}|{n}"
            for i in range(SOCKETS_PER_TENANT)
            for n in range(MESSAGES_PER_SOCKET)
        )
    for (schema, _), frames in received.items():
        messages = [f for f in frames if f["type"] == "chat.message"]
        assert [f for f in frames if f["type"] == "error"] == []
        assert len(messages) == per_tenant
        assert all(f["message"].startswith(f"{schema}|") for f in messages), "cross-tenant frame"
        assert sorted(f["seq"] for f in messages) == expected_seqs
        assert all(f["room"] == slug for f in messages)
    return rows_checked


async def test_three_tenants_writing_same_named_rooms_through_one_process_stay_isolated(
    live_server: LiveServer, tenant_a: TenantInfo, tenant_b: TenantInfo, tenant_c: TenantInfo
) -> None:
    tenants = [tenant_a, tenant_b, tenant_c]
    slug = unique("general_")
    received = await _run_writers([live_server], tenants, slug)
    rows_checked = _assert_isolated_and_gap_free(tenants, slug, received)
    assert rows_checked == len(tenants) * SOCKETS_PER_TENANT * MESSAGES_PER_SOCKET


async def test_writers_on_three_processes_share_one_gap_free_seq_per_room(
    server_factory: Any, tenant_a: TenantInfo, tenant_b: TenantInfo
) -> None:
    servers = [server_factory() for _ in range(3)]
    tenants = [tenant_a, tenant_b]
    slug = unique("shared_")
    received = await _run_writers(servers, tenants, slug)
    _assert_isolated_and_gap_free(tenants, slug, received)


async def test_concurrent_in_schema_calls_never_cross_tenants(
    tenant_a: TenantInfo, tenant_b: TenantInfo, tenant_c: TenantInfo
) -> None:
    """The helper itself, hammered from one event loop: every read sees its own schema."""
    from tenants.context import in_schema

    def current_schema() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            return str(cursor.fetchone()[0])

    tenants = [tenant_a, tenant_b, tenant_c] * 100
    results = await asyncio.gather(*(in_schema(t.schema_name, current_schema) for t in tenants))
    assert results == [t.schema_name for t in tenants]
