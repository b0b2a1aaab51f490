"""Several uvicorn processes on one database and one Redis behave as one service."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from typing import Any

import httpx
import websockets

from tests.conftest import LiveServer, TenantInfo, make_user_in, tokens_for, unique
from tests.support import ws_connect, ws_receive_type


async def test_a_message_sent_on_one_process_reaches_sockets_on_the_others(
    server_factory: Any, tenant_a: TenantInfo
) -> None:
    servers: list[LiveServer] = [server_factory() for _ in range(3)]
    slug = unique("xproc_")
    users = [make_user_in(tenant_a) for _ in servers]
    sockets = [
        await ws_connect(
            s.ws_url, tenant_a.domain, f"/ws/chat/{slug}/?token={tokens_for(u)['access']}"
        )
        for s, u in zip(servers, users, strict=True)
    ]
    try:
        await sockets[0].send(json.dumps({"type": "message", "message": "across pods"}))
        frames = [await ws_receive_type(ws, "chat.message") for ws in sockets]
        assert {f["message"] for f in frames} == {"across pods"}
        assert len({f["id"] for f in frames}) == 1
        assert {f["user"] for f in frames} == {users[0].username}
    finally:
        for ws in sockets:
            await ws.close()


def _history(server: LiveServer, tenant: TenantInfo, token: str, slug: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        response = httpx.get(
            f"{server.url}/api/rooms/{slug}/messages/",
            params={"after": after, "limit": 200},
            headers={"Host": tenant.domain, "Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        if not page:
            return items
        items.extend(page)
        after = page[-1]["seq"]


async def test_sigkill_of_a_process_loses_no_acknowledged_message_and_resends_do_not_duplicate(
    server_factory: Any, tenant_a: TenantInfo
) -> None:
    doomed, survivor = server_factory(), server_factory()
    slug = unique("kill_")
    writer = make_user_in(tenant_a)
    token = tokens_for(writer)["access"]
    path = f"/ws/chat/{slug}/?token={token}"
    client_ids = [str(uuid.uuid4()) for _ in range(60)]
    acked: set[str] = set()

    ws = await ws_connect(doomed.ws_url, tenant_a.domain, path)

    async def read_acks() -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "chat.message":
                    acked.add(frame["client_id"])
        except websockets.ConnectionClosed:
            pass

    reader = asyncio.create_task(read_acks())
    for n, client_id in enumerate(client_ids):
        try:
            await ws.send(json.dumps({"message": f"m{n}", "client_id": client_id}))
        except websockets.ConnectionClosed:
            break
        await asyncio.sleep(0.12)  # under the 10/s rate limit
        if n == 30:
            doomed.stop(signal.SIGKILL)  # mid-stream, no graceful shutdown
    await asyncio.wait_for(reader, timeout=15)
    assert 0 < len(acked) < len(client_ids), "the kill should interrupt the stream"

    stored = {m["client_id"]: m for m in _history(survivor, tenant_a, token, slug)}
    assert acked <= stored.keys(), "an acknowledged message was lost"

    # The client reconnects to the surviving process and resends everything not acknowledged,
    # with the same client_id: nothing is stored twice and seq stays gap-free.
    ws2 = await ws_connect(survivor.ws_url, tenant_a.domain, path)
    try:
        for n, client_id in enumerate(client_ids):
            if client_id in acked:
                continue
            await ws2.send(json.dumps({"message": f"m{n}", "client_id": client_id}))
            frame = await ws_receive_type(ws2, "chat.message")
            assert frame["client_id"] == client_id
            await asyncio.sleep(0.11)
    finally:
        await ws2.close()
    history = _history(survivor, tenant_a, token, slug)
    assert sorted(m["client_id"] for m in history) == sorted(client_ids)
    assert [m["seq"] for m in history] == list(range(1, len(client_ids) + 1))
