"""The life of a socket's session (PROTOCOL.md section 3): in-band `auth`, token expiry (4401),
server pings, and deactivation closing every socket of the user, on real uvicorn processes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.api_helpers import KICK_TIMEOUT, http
from tests.conftest import LiveServer, UserInfo, blocking, make_user_in, tokens_for, unique
from tests.realtime_helpers import (
    Sockets,
    access_with_lifetime,
    claims,
    close_code,
    frames_during,
    frames_until,
    of_type,
    ping_pong,
    recv,
    send,
)
from tests.support import TIMEOUT

SHORT_LIFETIME = 3  # seconds, JWT_ACCESS_LIFETIME of the servers that test expiry


def login(server: LiveServer, user: UserInfo) -> str:
    """An access token from the server's own token endpoint (its own lifetime setting)."""
    response = httpx.post(
        f"{server.url}/api/auth/token/",
        json={"username": user.username, "password": user.password},
        headers={"Host": user.tenant.domain},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(moment - time.time(), 0.0))


# --- in-band auth ----------------------------------------------------------------------------


async def test_auth_with_a_fresh_token_of_the_same_user_answers_auth_ok_with_its_exp(
    live_server, tenant_a
):
    user = make_user_in(tenant_a)
    fresh = access_with_lifetime(user, 7200)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, user, unique("auth_"))
        await send(ws, {"type": "auth", "token": fresh})
        reply = (await frames_until(ws, of_type("auth.ok")))[-1]
        assert reply == {"type": "auth.ok", "exp": claims(fresh)["exp"]}
        await ping_pong(ws)


def bad_auth_token(kind: str, user: UserInfo, tenant_b: Any) -> Any:
    if kind == "other_user":
        return tokens_for(make_user_in(user.tenant))["access"]
    if kind == "other_tenant":
        return tokens_for(make_user_in(tenant_b))["access"]
    if kind == "refresh":
        return tokens_for(user)["refresh"]
    if kind == "expired":
        return access_with_lifetime(user, -60)
    if kind == "tampered":
        token = tokens_for(user)["access"]
        return token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    return {"garbage": "not.a.jwt", "null": None, "number": 12345}[kind]


@pytest.mark.parametrize(
    "kind",
    ["other_user", "other_tenant", "refresh", "expired", "tampered", "garbage", "null", "number"],
)
async def test_auth_with_anything_but_a_valid_token_of_the_same_user_closes_4401(
    live_server, tenant_a, tenant_b, kind
):
    user = make_user_in(tenant_a)
    token = bad_auth_token(kind, user, tenant_b)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, user, unique("auth_"))
        assert (await recv(ws))["type"] == "presence"  # open and working
        await send(ws, {"type": "auth", "token": token})
        assert await close_code(ws) == 4401


async def test_auth_without_a_token_field_closes_4401(live_server, tenant_a):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, user, unique("auth_"))
        await ping_pong(ws)
        await send(ws, {"type": "auth"})
        assert await close_code(ws) == 4401


# --- expiry ----------------------------------------------------------------------------------


async def test_socket_closes_4401_when_its_token_expires(server_factory, tenant_a):
    server = server_factory(JWT_ACCESS_LIFETIME=str(SHORT_LIFETIME))
    user = make_user_in(tenant_a)
    before = time.time()
    token = login(server, user)
    after = time.time()  # a loaded machine may take seconds to answer: bound by both ends
    exp = claims(token)["exp"]
    assert before + SHORT_LIFETIME - 1 <= exp <= after + SHORT_LIFETIME + 1
    async with Sockets() as sockets:
        ws = await sockets.room(server, user, unique("exp_"), token=token)
        await ping_pong(ws)
        assert await close_code(ws, timeout=exp - time.time() + 8) == 4401
        closed = time.time()
    assert exp - 1.5 <= closed <= exp + 5, closed - exp


async def test_auth_with_a_fresh_token_before_expiry_keeps_the_socket_open_past_the_old_one(
    server_factory, tenant_a
):
    lifetime = 3 * SHORT_LIFETIME  # room for a slow login before the old token expires
    server = server_factory(JWT_ACCESS_LIFETIME=str(lifetime))
    user = make_user_in(tenant_a)
    first = login(server, user)
    old_exp = claims(first)["exp"]
    async with Sockets() as sockets:
        ws = await sockets.room(server, user, unique("exp_"), token=first)
        await ping_pong(ws)

        await sleep_until(old_exp - 5.0)  # the fresh token then outlives the old one by >= 4 s
        fresh = login(server, user)
        new_exp = claims(fresh)["exp"]
        assert new_exp >= old_exp + 2
        await send(ws, {"type": "auth", "token": fresh})
        assert (await frames_until(ws, of_type("auth.ok")))[-1] == {
            "type": "auth.ok",
            "exp": new_exp,
        }

        await sleep_until(old_exp + 0.7)
        await ping_pong(ws)  # still open past the old expiry
        # ... and the session now ends with the new token.
        assert await close_code(ws, timeout=new_exp - time.time() + 8) == 4401
    assert time.time() >= new_exp - 0.5


# --- server pings ----------------------------------------------------------------------------


async def test_server_pings_every_ws_ping_interval_on_room_and_notification_sockets(
    server_factory, tenant_a
):
    server = server_factory(WS_PING_INTERVAL="1")
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        room = await sockets.room(server, user, unique("ping_"))
        notifications = await sockets.notifications(server, user)
        seen = await asyncio.gather(frames_during(room, 3.5), frames_during(notifications, 3.5))
    for frames in seen:
        pings = [f for f in frames if f.get("type") == "ping"]
        assert 2 <= len(pings) <= 5, frames
        assert all(ping == {"type": "ping"} for ping in pings)


async def test_without_ws_ping_interval_override_no_ping_arrives_within_seconds(
    live_server, tenant_a
):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, user, unique("ping_"))
        frames = await frames_during(ws, 2.0)
    assert "ping" not in [f.get("type") for f in frames]  # the default interval is 30 s


# --- deactivation ----------------------------------------------------------------------------


def deactivate_over_rest(server: LiveServer, user: UserInfo) -> None:
    admin = make_user_in(user.tenant, is_admin=True)
    with http(server, user.tenant.domain, tokens_for(admin)["access"]) as client:
        response = client.delete(f"/api/users/{user.id}/")
    assert response.status_code == 204, response.text


def deactivate_with_the_service(server: LiveServer, user: UserInfo) -> None:
    from django.contrib.auth import get_user_model

    from accounts.services import user_deactivate
    from tenants.context import run_in_schema

    def deactivate() -> None:
        target = run_in_schema(
            user.tenant.schema_name, lambda: get_user_model().objects.get(pk=user.id)
        )
        user_deactivate(schema_name=user.tenant.schema_name, user=target)

    blocking(deactivate)


@pytest.mark.parametrize(
    "deactivate",
    [deactivate_over_rest, deactivate_with_the_service],
    ids=["rest-delete", "service"],
)
async def test_deactivating_a_user_closes_their_room_and_notification_sockets_4401(
    live_server, server_factory, tenant_a, deactivate
):
    other_process = server_factory()
    user, neighbour = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("deact_")
    token = tokens_for(user)["access"]
    async with Sockets() as sockets:
        room = await sockets.room(other_process, user, slug, token=token)
        room_here = await sockets.room(live_server, user, slug, token=token)
        notifications = await sockets.notifications(other_process, user, token=token)
        neighbours = await sockets.room(other_process, neighbour, slug)
        for ws in (room, room_here, notifications, neighbours):
            await ping_pong(ws)

        deactivate(live_server, user)

        codes = await asyncio.gather(
            *(close_code(ws, KICK_TIMEOUT) for ws in (room, room_here, notifications))
        )
        assert codes == [4401, 4401, 4401]
        await ping_pong(neighbours)

        again = await sockets.room(other_process, user, slug, token=token)
        assert await close_code(again) == 4401
