"""Signing keys of PROTOCOL section 5 on real uvicorn processes: the `kid` characters, the
revocation of a key registered before that rule, and revocation being live (section 3's
rule: the sockets standing on the key's tokens close with 4401 within 5 s, on every pod, and
within the re-check interval when the kick was lost). A token nobody issued is a 401 on
every host, the platform's included.

Two pods run with the periodic re-check off, so that only the revocation's kick can have
closed a socket there; a third re-checks every second (the lost kick).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.api_helpers import (
    KICK_TIMEOUT,
    PLATFORM_HOST,
    assert_field_error,
    assert_socket_open,
    close_code_within,
    http,
)
from tests.conftest import (
    LiveServer,
    TenantInfo,
    make_user_in,
    start_pods,
    stop_pods,
    tokens_for,
    unique,
)
from tests.realtime_helpers import (
    SAFETY_NET_TIMEOUT,
    Sockets,
    in_tenant,
    notifications_path,
    room_path,
    send,
    start_safety_net,
)
from tests.support import ws_receive_type


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Any]:
    started = start_pods(tmp_path_factory.mktemp("pods"), 2, WS_AUTH_RECHECK_INTERVAL="0")
    yield started
    stop_pods(started)


@pytest.fixture(scope="module")
def safety_net(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Any]:
    server = start_safety_net(tmp_path_factory.mktemp("net"))
    yield server
    server.stop()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An Ed25519 key pair of the tenant's backend, and the tokens it signs."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = ed25519.Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes_raw()
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": _b64url(raw)}

    def token(self, sub: str) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iat": now, "exp": now + 600}
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid})


def admin_http(server: LiveServer, tenant: TenantInfo) -> Any:
    return http(server, tenant.domain, tokens_for(make_user_in(tenant, is_admin=True))["access"])


def register(server: LiveServer, tenant: TenantInfo, key: Key) -> None:
    with admin_http(server, tenant) as client:
        response = client.post("/api/signing-keys/", json={"jwk": key.jwk})
    assert response.status_code == 201, response.text


def revoke(server: LiveServer, tenant: TenantInfo, kid: str) -> None:
    with admin_http(server, tenant) as client:
        response = client.delete(f"/api/signing-keys/{quote(kid, safe='')}/")
    assert response.status_code == 204, response.text


def me_status(server: LiveServer, host: str, token: str) -> int:
    with http(server, host, token) as client:
        return client.get("/api/me/").status_code


def insert_legacy_key(tenant: TenantInfo, key: Key) -> None:
    """A row as main let it in, before the `kid` rule (no API would take it now)."""
    from integrations.models import SigningKey

    in_tenant(
        tenant,
        lambda: SigningKey.objects.create(kid=key.kid, kty="OKP", alg="EdDSA", jwk=key.jwk),
    )


def delete_key_in_database(tenant: TenantInfo, kid: str) -> None:
    """The lost kick: the row goes, no service runs, nothing is published."""
    from integrations.models import SigningKey

    in_tenant(tenant, lambda: SigningKey.objects.filter(kid=kid).delete())


# --- the `kid` rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    ["a/b", "", "k" * 65, "with space", "k\u00e9y", "line\n", "per%cent", "..%2F", "a:b"],
)
def test_kid_outside_a_z_0_9_dot_underscore_dash_is_refused_400_naming_jwk(
    pods: list[LiveServer], tenant_a: TenantInfo, kid: str
) -> None:
    with admin_http(pods[0], tenant_a) as client:
        assert_field_error(client.post("/api/signing-keys/", json={"jwk": Key(kid).jwk}), "jwk")


def test_kid_of_64_allowed_characters_is_registered_and_revoked(
    pods: list[LiveServer], tenant_a: TenantInfo
) -> None:
    key = Key(("Az09._-" + unique(""))[:20].ljust(64, "x"))
    register(pods[0], tenant_a, key)
    assert me_status(pods[0], tenant_a.domain, key.token(unique("ext-"))) == 200
    revoke(pods[0], tenant_a, key.kid)
    assert me_status(pods[0], tenant_a.domain, key.token(unique("ext-"))) == 401


@pytest.mark.parametrize("legacy", ["legacy/{}", "legacy {} with/slashes/", "légacy?{}#x"])
def test_key_registered_with_a_slash_before_the_rule_can_be_revoked_and_its_tokens_are_401(
    pods: list[LiveServer], tenant_a: TenantInfo, legacy: str
) -> None:
    key = Key(legacy.format(unique("")))
    insert_legacy_key(tenant_a, key)
    token = key.token(unique("ext-"))
    assert me_status(pods[0], tenant_a.domain, token) == 200
    with admin_http(pods[0], tenant_a) as client:
        listed = client.get("/api/signing-keys/").json()["results"]
        assert key.kid in [item["kid"] for item in listed]
    revoke(pods[0], tenant_a, key.kid)
    assert me_status(pods[0], tenant_a.domain, token) == 401
    assert me_status(pods[1], tenant_a.domain, token) == 401


# --- a token nobody issued, on the platform host -------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "none", "HS256", "RS256"])
def test_token_with_a_kid_is_401_on_the_platform_host_never_a_5xx(
    pods: list[LiveServer], tenant_a: TenantInfo, alg: str
) -> None:
    key = Key(unique("k-"))
    register(pods[0], tenant_a, key)  # a real key of a real tenant: still nothing here
    header = _b64url(f'{{"alg":"{alg}","kid":"{key.kid}","typ":"JWT"}}'.encode())
    body = _b64url(b'{"sub":"x","iat":1,"exp":9999999999}')
    tokens = [key.token("ext-platform"), f"{header}.{body}.", f"{header}.{body}.c2ln"]
    for token in tokens:
        with http(pods[0], PLATFORM_HOST, token) as client:
            for path in ("/api/tenants/", "/api/tenants/acme/"):
                response = client.get(path)
                assert response.status_code == 401, (path, response.status_code, response.text)


# --- revocation is live ------------------------------------------------------------------


async def test_revoking_a_key_closes_its_sockets_on_every_pod_4401_within_5s(
    pods: list[LiveServer], tenant_a: TenantInfo
) -> None:
    revoked, kept = Key(unique("k-gone-")), Key(unique("k-kept-"))
    register(pods[0], tenant_a, revoked)
    register(pods[0], tenant_a, kept)
    host, slug = tenant_a.domain, unique("keys_")
    own_user = make_user_in(tenant_a)
    own_user_by_revoked_key = own_user_signed(revoked, own_user)
    async with Sockets() as sockets:
        doomed, spared = [], []
        for pod in pods:
            doomed.append(await sockets.open(pod, host, room_path(slug, revoked.token("ext-r1"))))
            doomed.append(await sockets.open(pod, host, notifications_path(revoked.token("e-r2"))))
            spared.append(await sockets.open(pod, host, room_path(slug, kept.token("ext-k1"))))
            spared.append(await sockets.room(pod, own_user, slug))
            # Opened with our own token, then re-authenticated with one of the revoked key.
            moved_in = await sockets.room(pod, own_user, slug)
            await ws_receive_type(moved_in, "presence")
            await send(moved_in, {"type": "auth", "token": own_user_by_revoked_key})
            await ws_receive_type(moved_in, "auth.ok")
            doomed.append(moved_in)
            # Opened with the revoked key, then re-authenticated with the kept one.
            moved_out = await sockets.open(pod, host, room_path(slug, revoked.token("ext-m")))
            await ws_receive_type(moved_out, "presence")
            await send(moved_out, {"type": "auth", "token": kept.token("ext-m")})
            await ws_receive_type(moved_out, "auth.ok")
            spared.append(moved_out)
        for ws in (*doomed, *spared):
            await assert_socket_open(ws)
        revoke(pods[0], tenant_a, revoked.kid)
        started = time.monotonic()
        for ws in doomed:
            assert await close_code_within(ws, KICK_TIMEOUT) == 4401
        assert time.monotonic() - started < KICK_TIMEOUT + 1
        for ws in spared:
            await assert_socket_open(ws)


def own_user_signed(key: Key, user: Any) -> str:
    """A token of `key` naming `user` (a user of ours, bound to an external id first)."""
    from integrations.models import ExternalIdentity

    external_id = unique("ext-own-")
    in_tenant(
        user.tenant,
        lambda: ExternalIdentity.objects.create(user_id=user.id, external_id=external_id),
    )
    return key.token(external_id)


async def test_key_deleted_behind_the_services_back_closes_its_sockets_within_the_interval(
    safety_net: LiveServer, tenant_a: TenantInfo
) -> None:
    revoked, kept = Key(unique("k-lost-")), Key(unique("k-stay-"))
    register(safety_net, tenant_a, revoked)
    register(safety_net, tenant_a, kept)
    host, slug = tenant_a.domain, unique("keys_")
    async with Sockets() as sockets:
        room_ws = await sockets.open(safety_net, host, room_path(slug, revoked.token("ext-l1")))
        notes_ws = await sockets.open(safety_net, host, notifications_path(revoked.token("e-l")))
        kept_ws = await sockets.open(safety_net, host, room_path(slug, kept.token("ext-s1")))
        for ws in (room_ws, notes_ws, kept_ws):
            await assert_socket_open(ws)
        delete_key_in_database(tenant_a, revoked.kid)
        assert await close_code_within(room_ws, SAFETY_NET_TIMEOUT) == 4401
        assert await close_code_within(notes_ws, SAFETY_NET_TIMEOUT) == 4401
        await assert_socket_open(kept_ws)
