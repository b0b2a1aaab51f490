"""PostgreSQL stopped and started again under a real uvicorn process (PROTOCOL.md section 4,
"PostgreSQL unreachable"): write frames are answered `unavailable` within 5 s on sockets that
stay open, REST answers 503 with Retry-After, a handshake is closed with 1013, `/readyz` says
503; once PostgreSQL is back the same process serves again and a resend stores once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, unique
from tests.pg_cluster import PostgresCluster, seed_cluster
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
from tests.support import ws_connect

# The contract: a write frame is answered within 5 s while PostgreSQL is away.
ANSWER_WITHIN = 5.0
# PostgreSQL back: the pool's reconnect backoff may take a while; generous.
RECOVERY_TIMEOUT = 60.0


async def answer_to(ws: Any, frame: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Send `frame`; the first `error` or own `chat.message*` answer, and how long it took."""
    started = time.monotonic()
    await send(ws, frame)
    frames = await frames_until(
        ws,
        lambda f: f.get("type") == "error" or str(f.get("type")).startswith("chat.message"),
        timeout=ANSWER_WITHIN,
    )
    return frames[-1], time.monotonic() - started


def rest(server: LiveServer, host: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url,
        headers={"Host": host, "Authorization": f"Bearer {token}"},
        timeout=ANSWER_WITHIN,
    )


@pytest.mark.timeout(420)
async def test_postgres_stopped_gives_unavailable_503_and_1013_then_the_same_process_serves_again(
    own_postgres: PostgresCluster, server_factory: Any
) -> None:
    tenant, (alice, bob) = await asyncio.to_thread(seed_cluster, own_postgres, "alice", "bob")
    server = await asyncio.to_thread(server_factory, DATABASE_URL=own_postgres.url)
    slug = unique("pgdown-")
    host = tenant.domain
    async with Sockets() as sockets:
        a = await sockets.open(server, host, room_path(slug, alice["access"]))
        await frames_until(a, of_type("presence"))
        b = await sockets.open(server, host, room_path(slug, bob["access"]))
        await frames_until(b, of_type("presence"))
        first = await say(a, "before the outage")
        await frames_until(b, is_message("before the outage"))

        await asyncio.to_thread(own_postgres.stop, "fast")

        # Every write frame: `unavailable` with retry_after, within 5 s; the socket stays open.
        client_id = unique("cid-")
        writes = [
            {"type": "message", "message": "during the outage", "client_id": client_id},
            {"type": "edit", "id": first["id"], "message": "edited during the outage"},
            {"type": "delete", "id": first["id"]},
            {"type": "read", "seq": first["seq"]},
        ]
        for frame in writes:
            answer, took = await answer_to(a, frame)
            assert answer["type"] == "error", (frame, answer)
            assert answer["code"] == "unavailable", (frame, answer)
            assert answer["retry_after"] > 0 and answer["detail"], answer
            assert took < ANSWER_WITHIN, (frame, took)
        await ping_pong(a)  # still open and served

        # REST: 503 with Retry-After within 5 s, authentication's user lookup included.
        async with rest(server, host, alice["access"]) as client:
            for method, path, body in [
                ("GET", "/api/me/", None),
                ("GET", f"/api/rooms/{slug}/messages/", None),
                ("POST", f"/api/rooms/{slug}/messages/", {"message": "rest during"}),
            ]:
                response = await client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert int(response.headers["Retry-After"]) > 0, path
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False

        # A handshake: accepted, then 1013 "try again later" (not an HTTP 500).
        late = await ws_connect(server.ws_url, host, room_path(slug, bob["access"]))
        assert await close_code(late, timeout=ANSWER_WITHIN + 5) == 1013

        await asyncio.to_thread(own_postgres.start)

        # The same socket's resend (same client_id) is stored once and echoed once.
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            answer, _ = await answer_to(
                a, {"type": "message", "message": "during the outage", "client_id": client_id}
            )
            if answer["type"] == "chat.message":
                break
            assert answer["code"] == "unavailable", answer
            assert time.monotonic() < deadline, "the process did not serve again"
            await asyncio.sleep(answer["retry_after"])
        stored = answer
        # Once more: each database thread finds its dead connection at its own first call, so
        # a call right after the recovery may still be answered `unavailable` (then resent).
        while True:
            again, _ = await answer_to(
                a, {"type": "message", "message": "during the outage", "client_id": client_id}
            )
            if again["type"] == "chat.message":
                break
            assert again["code"] in ("unavailable", "rate_limited"), again
            assert time.monotonic() < deadline, "the process did not serve again"
            await asyncio.sleep(again["retry_after"])
        assert again["id"] == stored["id"]
        seen_by_b = await frames_until(b, is_message("during the outage"))
        fence = await say(a, "after the outage")
        seen_by_b += await frames_until(b, is_message(fence["message"]))
        copies = [f for f in seen_by_b if is_message("during the outage")(f)]
        assert len(copies) == 1, seen_by_b

        # New handshakes, REST and readiness: served again by the same process.
        c = await sockets.open(server, host, room_path(slug, bob["access"]))
        await frames_until(c, of_type("presence"))
        async with rest(server, host, alice["access"]) as client:
            assert (await client.get("/api/me/")).status_code == 200
            history = (await client.get(f"/api/rooms/{slug}/messages/")).json()
            texts = [m["message"] for m in history]
            assert texts.count("during the outage") == 1, texts
            assert "rest during" not in texts
            assert (await client.get("/readyz")).status_code == 200
    assert server.process.poll() is None  # never restarted
    assert "Exception in ASGI application" not in server.log()
