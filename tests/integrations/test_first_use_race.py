"""PROTOCOL section 5: "many first uses at once make one user", on real processes.

A first login of a tenant's user comes as a burst: the tenant's backend asks for server
tokens, the browser's REST calls and its socket carry a token the backend signed itself,
all naming a `sub` that no user has yet, through two uvicorn pods. Every one of them must
succeed, with the same one user."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.api_helpers import bearer
from tests.conftest import (
    LiveServer,
    TenantInfo,
    make_user_in,
    start_pods,
    stop_pods,
    tokens_for,
    unique,
)
from tests.realtime_helpers import claims, frames_until, in_tenant, of_type, room_path
from tests.support import TIMEOUT, ws_connect

ROUNDS = 12
EACH = 4  # server tokens, REST calls and socket handshakes of one round, 12 in all


@dataclass(frozen=True)
class Backend:
    """What the tenant's backend holds: an API key and a signing key it registered."""

    tenant: TenantInfo
    api_key: str
    kid: str
    private: ed25519.Ed25519PrivateKey
    room: str

    def signed(self, sub: str) -> str:
        now = int(time.time())
        payload = {"sub": sub, "iat": now, "exp": now + 600}
        return jwt.encode(payload, self.private, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def pods(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    started = start_pods(tmp_path_factory.mktemp("first_use"), 2)
    yield started
    stop_pods(started)


@pytest.fixture(scope="module")
def backend(pods: list[LiveServer], tenant_x: TenantInfo, django_db_blocker: Any) -> Backend:
    private = ed25519.Ed25519PrivateKey.generate()
    kid = unique("k-")
    x = base64.urlsafe_b64encode(private.public_key().public_bytes_raw()).rstrip(b"=").decode()
    room = unique("lobby_")
    with django_db_blocker.unblock():
        admin = make_user_in(tenant_x, is_admin=True)
        headers = {"Host": tenant_x.domain, **bearer(tokens_for(admin)["access"])}
        with httpx.Client(base_url=pods[0].url, headers=headers, timeout=TIMEOUT) as c:
            key = c.post("/api/keys/", json={"name": "backend"})
            assert key.status_code == 201, key.text
            jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x}
            signing = c.post("/api/signing-keys/", json={"jwk": jwk})
            assert signing.status_code == 201, signing.text
            made = c.post("/api/rooms/", json={"slug": room})  # joins below create nothing
            assert made.status_code == 201, made.text
    return Backend(tenant_x, key.json()["key"], kid, private, room)


def _users_of(tenant: TenantInfo, sub: str) -> list[tuple[int, str]]:
    """(id, username) of every user whose external id is `sub`, or who is named after it."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    return in_tenant(
        tenant,
        lambda: list(
            get_user_model()
            .objects.filter(Q(username=sub) | Q(external_identity__external_id=sub))
            .values_list("pk", "username")
        ),
    )


async def _first_uses(pods: list[LiveServer], backend: Backend, sub: str) -> Any:
    """EACH server tokens, REST calls and socket handshakes for `sub`, all at once, half on
    each pod. Returns (server token answers, /api/me/ answers, the sockets' first frames)."""
    host = backend.tenant.domain
    signed = backend.signed(sub)
    clients = [httpx.AsyncClient(base_url=pod.url, timeout=TIMEOUT) for pod in pods]
    start = asyncio.Event()

    async def server_token(n: int) -> httpx.Response:
        await start.wait()
        return await clients[n % 2].post(
            "/api/server/tokens/",
            json={"user": sub},
            headers={"Host": host, "Authorization": f"Api-Key {backend.api_key}"},
        )

    async def me(n: int) -> httpx.Response:
        await start.wait()
        return await clients[n % 2].get("/api/me/", headers={"Host": host, **bearer(signed)})

    async def socket(n: int) -> Any:
        await start.wait()
        try:
            ws = await ws_connect(pods[n % 2].ws_url, host, room_path(backend.room, signed))
        except websockets.InvalidStatus as exc:  # the handshake answered with an HTTP error
            return {"refused": exc.response.status_code}
        try:
            return (await frames_until(ws, of_type("presence")))[-1]
        except websockets.ConnectionClosed:
            return {"closed": ws.close_code}
        finally:
            await ws.close()

    try:
        tasks = [
            *(asyncio.create_task(server_token(n)) for n in range(EACH)),
            *(asyncio.create_task(me(n)) for n in range(EACH)),
            *(asyncio.create_task(socket(n)) for n in range(EACH)),
        ]
        await asyncio.sleep(0)  # every task waits at the start line
        start.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        for client in clients:
            await client.aclose()
    return done[:EACH], done[EACH : 2 * EACH], done[2 * EACH :]


async def test_many_first_uses_of_a_new_sub_at_once_all_succeed_with_one_user(
    pods: list[LiveServer], backend: Backend
) -> None:
    for _ in range(ROUNDS):
        sub = unique("sub-")
        tokens, mes, frames = await _first_uses(pods, backend, sub)
        assert [r.status_code for r in tokens] == [200] * EACH, [r.text for r in tokens]
        assert [r.status_code for r in mes] == [200] * EACH, [r.text for r in mes]
        users = _users_of(backend.tenant, sub)
        assert len(users) == 1, users
        (user_id, username), *_ = users
        assert username == sub
        assert {int(claims(r.json()["access"])["user_id"]) for r in tokens} == {user_id}
        assert {r.json()["id"] for r in mes} == {user_id}
        for frame in frames:
            assert frame.get("type") == "presence" and sub in frame["users"], frame
    for pod in pods:
        assert "IntegrityError" not in pod.log() and "Traceback" not in pod.log()
