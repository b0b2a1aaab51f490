"""Helpers shared by the admin and platform API tests: HTTP clients with a `Host`, actors of
the permission matrix, field-error assertions, and waiting for a socket's close code.

Requests go to 127.0.0.1 with the tenant's (or the platform's) domain in the `Host` header,
as a load balancer forwards them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    make_user_in,
    tokens_for,
    unique,
)
from tests.support import TIMEOUT, ws_connect, ws_receive_type

PLATFORM_HOST = "localhost"
# The contract: kicks (deactivation, removal, deleted room or tenant) arrive within 5 s.
KICK_TIMEOUT = 5.0
PAGINATION_KEYS = {"count", "next", "previous", "results"}

# The actors of every permission matrix (PROTOCOL.md section 2).
ANONYMOUS = "anonymous"
MEMBER = "member"
TENANT_ADMIN = "tenant_admin"
OTHER_TENANT_ADMIN = "other_tenant_admin"
PLATFORM_ADMIN = "platform_admin"
ACTORS = [ANONYMOUS, MEMBER, TENANT_ADMIN, OTHER_TENANT_ADMIN, PLATFORM_ADMIN]


# --- HTTP ------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def http(server: LiveServer, host: str, token: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client of `server` that sends `Host: host` (and the bearer token, if any)."""
    headers = {"Host": host, **(bearer(token) if token else {})}
    with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        yield client


def login(server: LiveServer, host: str, username: str, password: str) -> httpx.Response:
    with http(server, host) as client:
        return client.post("/api/auth/token/", json={"username": username, "password": password})


def assert_field_error(response: httpx.Response, field: str) -> Any:
    """A 400 whose body names `field` (DRF's field errors); returns the field's errors."""
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert field in body, f"400 does not name {field!r}: {body}"
    return body[field]


def assert_paginated(response: httpx.Response) -> list[dict[str, Any]]:
    """A 200 page of DRF's page-number pagination; returns its items."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict) and body.keys() >= PAGINATION_KEYS, body
    assert isinstance(body["results"], list)
    return body["results"]


# --- platform (public schema) users ----------------------------------------------------------


def public_tenant() -> TenantInfo:
    from tenants.models import Tenant

    pk = blocking(lambda: Tenant.objects.get(schema_name="public").pk)
    return TenantInfo(schema_name="public", domain=PLATFORM_HOST, pk=pk)


def make_platform_user(*, is_admin: bool = True) -> UserInfo:
    """A user of the public schema (a platform admin when `is_admin`), made by the service
    that `make run` uses for the platform admin."""
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema
    from tenants.services import user_ensure

    username = unique("op_")
    password = f"pw-{uuid.uuid4().hex}"

    def create() -> int:
        user_ensure(schema_name="public", username=username, password=password, is_admin=is_admin)
        return run_in_schema("public", lambda: get_user_model().objects.get(username=username).pk)

    user_id = blocking(create)
    return UserInfo(
        id=user_id, username=username, password=password, tenant=public_tenant(), is_admin=is_admin
    )


def access_of(user: UserInfo | None) -> str | None:
    return tokens_for(user)["access"] if user is not None else None


# --- WebSockets ------------------------------------------------------------------------------


async def open_room_socket(
    server: LiveServer, user: UserInfo, slug: str, token: str | None = None
) -> Any:
    """A real socket of `user` in room `slug` on `server`, known to be past its handshake and
    in its groups (it answered a ping)."""
    token = token or tokens_for(user)["access"]
    ws = await ws_connect(server.ws_url, user.tenant.domain, f"/ws/chat/{slug}/?token={token}")
    await assert_socket_open(ws)
    return ws


async def assert_socket_open(ws: Any) -> None:
    """The socket still answers: a `ping` gets a `pong`."""
    await ws.send(json.dumps({"type": "ping"}))
    await ws_receive_type(ws, "pong")


async def close_code_within(ws: Any, timeout: float = KICK_TIMEOUT) -> int | None:
    """The close code the server sends within `timeout` seconds (frames before it are read and
    dropped); fails with TimeoutError if the socket is still open then."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def connect_close_code(
    server: LiveServer, user: UserInfo, slug: str, token: str
) -> int | None:
    """Open a socket that the server accepts and then closes; the close code."""
    ws = await ws_connect(server.ws_url, user.tenant.domain, f"/ws/chat/{slug}/?token={token}")
    try:
        return await close_code_within(ws, TIMEOUT)
    finally:
        await ws.close()


# --- the cast of a permission matrix ---------------------------------------------------------


@dataclass(frozen=True)
class Cast:
    """One tenant's member and admin, another tenant's admin and a platform admin, each with
    an access token issued the way the token endpoint issues it."""

    tenant: TenantInfo
    member: UserInfo
    admin: UserInfo
    other_admin: UserInfo
    platform_admin: UserInfo
    tokens: dict[str, str | None]

    def token(self, actor: str) -> str | None:
        return self.tokens[actor]


def make_cast(tenant: TenantInfo, other_tenant: TenantInfo) -> Cast:
    member = make_user_in(tenant)
    admin = make_user_in(tenant, is_admin=True)
    other_admin = make_user_in(other_tenant, is_admin=True)
    platform_admin = make_platform_user(is_admin=True)
    return Cast(
        tenant=tenant,
        member=member,
        admin=admin,
        other_admin=other_admin,
        platform_admin=platform_admin,
        tokens={
            ANONYMOUS: None,
            MEMBER: access_of(member),
            TENANT_ADMIN: access_of(admin),
            OTHER_TENANT_ADMIN: access_of(other_admin),
            PLATFORM_ADMIN: access_of(platform_admin),
        },
    )


# --- rows, read the way the app stores them ---------------------------------------------------


def user_row(tenant: TenantInfo, user_id: int) -> dict[str, Any] | None:
    """`{username, is_active, is_staff}` of a user in the tenant's schema (None if absent)."""
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    def read() -> dict[str, Any] | None:
        return (
            get_user_model()
            .objects.filter(pk=user_id)
            .values("username", "is_active", "is_staff")
            .first()
        )

    return blocking(lambda: run_in_schema(tenant.schema_name, read))


def username_exists(tenant: TenantInfo, username: str) -> bool:
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    return blocking(
        lambda: run_in_schema(
            tenant.schema_name,
            lambda: get_user_model().objects.filter(username=username).exists(),
        )
    )
