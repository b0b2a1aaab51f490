"""The WebSocket token check (`?token=`): every bad token is accepted, then closed with 4401.

In-process tests drive the full ASGI stack with a `WebsocketCommunicator`; the last ones use a
real uvicorn process and the `websockets` client, as a browser or app would meet the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
import websockets
from django.conf import settings

from tests.conftest import TenantInfo, UserInfo, blocking, set_user_active, tokens_for, unique
from tests.support import (
    TIMEOUT,
    communicator,
    connect_expect_close,
    receive_type,
    ws_connect,
    ws_receive_type,
)

UNAUTHORIZED = 4401


# --- helpers ---------------------------------------------------------------------------------


def chat_path(token: str | None, room: str = "general") -> str:
    return f"/ws/chat/{room}/" if token is None else f"/ws/chat/{room}/?token={token}"


def access_claims(user: UserInfo, **overrides: Any) -> dict[str, Any]:
    """The claims of a genuine access token of `user` (what the token endpoint would issue)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": str(user.id),
        "tenant": user.tenant.schema_name,
        "username": user.username,
    }
    claims.update(overrides)
    return claims


def signed(claims: dict[str, Any], *, key: str | None = None, algorithm: str = "HS256") -> str:
    """A JWT signed with the deployment's key (or `key`) using PyJWT."""
    return jwt.encode(claims, key or settings.SECRET_KEY, algorithm=algorithm)


def b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_alg_none(claims: dict[str, Any]) -> str:
    """The classic `alg: none` forgery: header and claims, empty signature."""
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims)}."


def simplejwt_access(user: UserInfo, *, expires_in: timedelta) -> str:
    """An access token built with simplejwt's AccessToken for `user`, `exp` moved by hand."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from tenants.context import run_in_schema

    def build() -> str:
        token = AccessToken.for_user(get_user_model().objects.get(pk=user.id))
        token["tenant"] = user.tenant.schema_name
        token.set_exp(from_time=timezone.now(), lifetime=expires_in)
        return str(token)

    return blocking(lambda: run_in_schema(user.tenant.schema_name, build))


def delete_user(user: UserInfo) -> None:
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    blocking(
        lambda: run_in_schema(
            user.tenant.schema_name,
            lambda: get_user_model().objects.filter(pk=user.id).delete(),
        )
    )


async def close_code_for(host: str, token: str | None) -> int | None:
    return await connect_expect_close(communicator(host, chat_path(token)))


async def assert_stays_open(host: str, token: str) -> None:
    """The handshake is accepted and the socket answers a ping (it was not closed)."""
    comm = communicator(host, chat_path(token))
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    await comm.send_json_to({"type": "ping"})
    assert (await receive_type(comm, "pong"))["type"] == "pong"
    await comm.disconnect()


# --- the happy path and the controls of the hand-built tokens -------------------------------


async def test_valid_access_token_keeps_the_socket_open(tenant_a, make_user, access_token):
    user = make_user(tenant_a)
    await assert_stays_open(tenant_a.domain, access_token(user))


async def test_hand_built_token_signed_with_the_real_key_keeps_the_socket_open(tenant_a, make_user):
    # Control for the forgeries below: the same claims, correctly signed, are accepted.
    user = make_user(tenant_a)
    await assert_stays_open(tenant_a.domain, signed(access_claims(user)))


async def test_simplejwt_token_with_future_exp_keeps_the_socket_open(tenant_a, make_user):
    # Control for the expired token below: only `exp` differs.
    user = make_user(tenant_a)
    await assert_stays_open(
        tenant_a.domain, simplejwt_access(user, expires_in=timedelta(minutes=5))
    )


# --- no token, or not a token ------------------------------------------------------------------


async def test_missing_token_closes_4401(tenant_a):
    assert await close_code_for(tenant_a.domain, None) == UNAUTHORIZED


async def test_empty_token_closes_4401(tenant_a):
    assert await close_code_for(tenant_a.domain, "") == UNAUTHORIZED


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "%00%ff", "x" * 2000],
    ids=["word", "three-dots", "empty-claims", "binary", "long"],
)
async def test_garbage_token_closes_4401(tenant_a, garbage):
    assert await close_code_for(tenant_a.domain, garbage) == UNAUTHORIZED


# --- forged or unusable tokens -----------------------------------------------------------------


async def test_expired_access_token_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    token = simplejwt_access(user, expires_in=-timedelta(hours=1))
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_token_signed_with_another_key_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    token = signed(access_claims(user), key="not-the-deployment-key-0123456789abcdef")
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_alg_none_token_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    assert await close_code_for(tenant_a.domain, unsigned_alg_none(access_claims(user))) == (
        UNAUTHORIZED
    )


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_token_signed_with_another_algorithm_closes_4401(tenant_a, make_user):
    # Right key, wrong algorithm: only the configured one (HS256) is accepted.
    user = make_user(tenant_a)
    token = signed(access_claims(user), algorithm="HS512")
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_refresh_token_used_as_access_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    assert await close_code_for(tenant_a.domain, tokens_for(user)["refresh"]) == UNAUTHORIZED


@pytest.mark.parametrize("claim", ["tenant", "token_type", "exp", "jti"])
async def test_token_missing_a_required_claim_closes_4401(tenant_a, make_user, claim):
    user = make_user(tenant_a)
    claims = access_claims(user)
    del claims[claim]
    assert await close_code_for(tenant_a.domain, signed(claims)) == UNAUTHORIZED


async def test_token_with_non_numeric_user_id_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    token = signed(access_claims(user, user_id="not-a-number"))
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


# --- tokens of other tenants ------------------------------------------------------------------


async def test_token_of_other_tenant_closes_4401(tenant_a, tenant_b, make_user, access_token):
    stranger = make_user(tenant_b)
    assert await close_code_for(tenant_a.domain, access_token(stranger)) == UNAUTHORIZED


async def test_token_of_same_username_in_other_tenant_closes_4401(
    tenant_a, tenant_b, make_user, access_token
):
    username = unique("twin_")
    at_home = make_user(tenant_a, username=username)
    elsewhere = make_user(tenant_b, username=username)
    assert await close_code_for(tenant_a.domain, access_token(elsewhere)) == UNAUTHORIZED
    # ...while the namesake of this tenant gets in with its own token.
    await assert_stays_open(tenant_a.domain, access_token(at_home))


async def test_token_of_other_tenant_with_colliding_user_id_closes_4401(
    tenant_a, tenant_b, make_user
):
    # Ids are per schema: tenant_b may well have issued a token whose user_id is the id of a
    # tenant_a user. Only the tenant claim tells them apart.
    local = make_user(tenant_a)
    token = signed(access_claims(local, tenant=tenant_b.schema_name))
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_platform_user_token_on_tenant_host_closes_4401(tenant_a, make_user, access_token):
    public = TenantInfo(schema_name="public", domain="localhost", pk=0)
    operator = make_user(public)
    assert await close_code_for(tenant_a.domain, access_token(operator)) == UNAUTHORIZED


# --- users that cannot log in anymore --------------------------------------------------------


async def test_deactivated_user_closes_4401(tenant_a, make_user, access_token):
    user = make_user(tenant_a)
    token = access_token(user)
    set_user_active(user, False)
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_reactivated_user_gets_in_again(tenant_a, make_user, access_token):
    user = make_user(tenant_a)
    token = access_token(user)
    set_user_active(user, False)
    set_user_active(user, True)
    await assert_stays_open(tenant_a.domain, token)


async def test_deleted_user_closes_4401(tenant_a, make_user, access_token):
    user = make_user(tenant_a)
    token = access_token(user)
    delete_user(user)
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


async def test_nonexistent_user_id_closes_4401(tenant_a, make_user):
    user = make_user(tenant_a)
    token = signed(access_claims(user, user_id=str(2_000_000_000)))
    assert await close_code_for(tenant_a.domain, token) == UNAUTHORIZED


# --- a real uvicorn and a real client ----------------------------------------------------------


async def real_close_code(ws: Any) -> int | None:
    """Wait for the server to close `ws`; the code the client library saw."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the server closed without a close frame"
    assert ws.close_code == closed.value.rcvd.code
    return closed.value.rcvd.code


@pytest.mark.parametrize("token", [None, "garbage"], ids=["missing", "garbage"])
async def test_bad_token_close_code_4401_reaches_a_real_client(live_server, tenant_a, token):
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, chat_path(token))
    assert await real_close_code(ws) == UNAUTHORIZED


async def test_token_of_other_tenant_closes_4401_on_a_real_server(
    live_server, tenant_a, tenant_b, make_user, access_token
):
    token = access_token(make_user(tenant_b))
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, chat_path(token))
    assert await real_close_code(ws) == UNAUTHORIZED


async def test_token_without_user_id_claim_closes_4401_on_a_real_server(
    live_server, tenant_a, make_user
):
    # Correctly signed, right tenant, but no `user_id`: still just a bad token.
    claims = access_claims(make_user(tenant_a))
    del claims["user_id"]
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, chat_path(signed(claims)))
    assert await real_close_code(ws) == UNAUTHORIZED


async def test_valid_token_stays_open_on_a_real_server(
    live_server, tenant_a, make_user, access_token
):
    ws = await ws_connect(
        live_server.ws_url, tenant_a.domain, chat_path(access_token(make_user(tenant_a)))
    )
    try:
        await ws.send(json.dumps({"type": "ping"}))
        assert (await ws_receive_type(ws, "pong"))["type"] == "pong"
    finally:
        await ws.close()


async def test_server_log_never_shows_the_token_of_a_handshake(
    live_server, tenant_a, make_user, access_token
):
    good = access_token(make_user(tenant_a))
    bad = signed(access_claims(make_user(tenant_a)), key="another-key-0123456789abcdef0123")
    room = unique("logroom")

    # Accepted and kept open...
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, chat_path(good, room))
    await ws.send(json.dumps({"type": "ping"}))
    await ws_receive_type(ws, "pong")
    await ws.close()
    # ...accepted then closed 4401, with another parameter before the token...
    ws = await ws_connect(
        live_server.ws_url, tenant_a.domain, f"/ws/chat/{room}/?since=0&token={bad}"
    )
    assert await real_close_code(ws) == UNAUTHORIZED
    # ...and refused at the handshake (foreign Origin).
    with pytest.raises(websockets.InvalidStatus):
        await ws_connect(
            live_server.ws_url,
            tenant_a.domain,
            chat_path(good, room),
            origin="https://evil.example",
        )
    await asyncio.sleep(0.5)  # let uvicorn flush its log lines

    log = live_server.log()
    assert f"/ws/chat/{room}/" in log, "uvicorn did not log the handshakes: nothing was tested"
    for token in (good, bad):
        assert token not in log
        assert token.rsplit(".", 1)[1] not in log  # not even the signature alone
        assert token.split(".")[1] not in log  # nor the claims
    assert "token=" not in log
