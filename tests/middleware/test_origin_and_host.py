"""Origin and Host on the WebSocket handshake, tenant resolution on HTTP, and the probes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, TenantInfo, UserInfo, blocking, make_user_in, tokens_for
from tests.conftest import unique as unique_name
from tests.support import TIMEOUT, communicator, receive_type, ws_connect

REFUSED_HANDSHAKE_STATUSES = (403, 404)


# --- helpers ---------------------------------------------------------------------------------


def chat_path(token: str, room: str = "general") -> str:
    return f"/ws/chat/{room}/?token={token}"


async def handshake(host: str, path: str, *, origin: str | None = None) -> tuple[bool, object]:
    """In-process handshake; `(True, _)` also proves the socket answers a ping."""
    comm = communicator(host, path, origin=origin)
    connected, code = await comm.connect(timeout=TIMEOUT)
    if connected:
        await comm.send_json_to({"type": "ping"})
        assert (await receive_type(comm, "pong"))["type"] == "pong"
        await comm.disconnect()
    return connected, code


def schemas_holding_room(slug: str) -> list[str]:
    """Every tenant schema (active or not) that has a room called `slug`."""
    from chat.models import Room
    from tenants.context import run_in_schema
    from tenants.models import Tenant

    def scan() -> list[str]:
        schemas = run_in_schema(
            "public",
            lambda: list(
                Tenant.objects.exclude(schema_name="public").values_list("schema_name", flat=True)
            ),
        )
        return [
            schema
            for schema in schemas
            if run_in_schema(schema, lambda: Room.objects.filter(slug=slug).exists())
        ]

    return blocking(scan)


def set_tenant_active(tenant: TenantInfo, active: bool) -> None:
    from tenants.context import run_in_schema
    from tenants.host_cache import tenants_changed
    from tenants.models import Tenant

    blocking(
        lambda: run_in_schema(
            "public", lambda: Tenant.objects.filter(pk=tenant.pk).update(is_active=active)
        )
    )
    tenants_changed()  # as tenants/services.py does after every tenant write


def http(live_server: LiveServer, host: str) -> httpx.Client:
    return httpx.Client(base_url=live_server.url, headers={"Host": host}, timeout=TIMEOUT)


async def real_handshake_status(
    live_server: LiveServer, host: str, path: str, **kwargs: Any
) -> int:
    """The HTTP status of a handshake the real server refuses."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        ws = await ws_connect(live_server.ws_url, host, path, **kwargs)
        await ws.close()
    return refused.value.response.status_code


@pytest.fixture(scope="module")
def deactivated_tenant(
    make_tenant: Callable[[], TenantInfo], django_db_blocker: Any
) -> Iterator[tuple[TenantInfo, UserInfo, str]]:
    """A fresh tenant with one user and that user's access token, then deactivated."""
    with django_db_blocker.unblock():
        tenant = make_tenant()
        user = make_user_in(tenant)
        token = tokens_for(user)["access"]
        set_tenant_active(tenant, False)
    yield tenant, user, token


# --- Origin ------------------------------------------------------------------------------------


async def test_handshake_without_origin_is_allowed(tenant_a, make_user, access_token):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(tenant_a.domain, chat_path(token))
    assert connected


@pytest.mark.parametrize(
    "origin",
    ["http://{domain}", "https://{domain}", "http://{domain}:8000", "http://localhost:8000"],
    ids=["tenant-domain", "tenant-domain-https", "tenant-domain-with-port", "platform-host"],
)
async def test_origin_of_an_allowed_host_is_allowed(tenant_a, make_user, access_token, origin):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(
        tenant_a.domain, chat_path(token), origin=origin.format(domain=tenant_a.domain)
    )
    assert connected


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://evil.example:8000",
        "http://acme-t.localhost.evil.example",
        "",
        "not a url",
    ],
    ids=["foreign", "foreign-with-port", "suffix-trick", "empty", "junk"],
)
async def test_foreign_origin_is_refused_at_the_handshake(
    tenant_a, make_user, access_token, origin
):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(tenant_a.domain, chat_path(token), origin=origin)
    assert not connected


async def test_origin_null_is_refused_at_the_handshake(tenant_a, make_user, access_token):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(tenant_a.domain, chat_path(token), origin="null")
    assert not connected


async def test_foreign_origin_gets_http_403_from_a_real_server(
    live_server, tenant_a, make_user, access_token
):
    token = access_token(make_user(tenant_a))
    status = await real_handshake_status(
        live_server, tenant_a.domain, chat_path(token), origin="https://evil.example"
    )
    assert status == 403


# --- Host --------------------------------------------------------------------------------------


async def test_host_with_a_port_resolves_the_tenant(tenant_a, make_user, access_token):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(f"{tenant_a.domain}:8000", chat_path(token))
    assert connected


async def test_host_in_upper_case_resolves_the_tenant(tenant_a, make_user, access_token):
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(tenant_a.domain.upper(), chat_path(token))
    assert connected


async def test_joining_a_new_room_creates_it_in_the_hosts_schema_only(
    tenant_a, make_user, access_token
):
    # Control for the "nothing created" checks below: a real join is seen by the scan.
    slug = unique_name("made_")
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(tenant_a.domain, chat_path(token, slug))
    assert connected
    assert schemas_holding_room(slug) == [tenant_a.schema_name]


@pytest.mark.parametrize(
    "host",
    ["nowhere-x.localhost", "nowhere-x.localhost:8000", "10.1.2.3:8000", "", "localhost"],
    ids=["unknown", "unknown-with-port", "ip", "empty", "platform-host"],
)
async def test_unknown_host_is_refused_and_nothing_is_created(
    tenant_a, make_user, access_token, host
):
    slug = unique_name("ghost_")
    # The token is valid for tenant_a: the Host is the only thing wrong.
    token = access_token(make_user(tenant_a))
    connected, _ = await handshake(host, chat_path(token, slug))
    assert not connected
    assert schemas_holding_room(slug) == []


async def test_unknown_host_is_refused_by_a_real_server(
    live_server, tenant_a, make_user, access_token
):
    slug = unique_name("ghost_")
    token = access_token(make_user(tenant_a))
    status = await real_handshake_status(live_server, "nowhere-y.localhost", chat_path(token, slug))
    assert status in REFUSED_HANDSHAKE_STATUSES
    assert schemas_holding_room(slug) == []


def test_unknown_host_answers_http_404_json(live_server):
    with http(live_server, "nowhere-z.localhost") as client:
        response = client.get("/api/me/")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_host_with_a_port_resolves_the_tenant_over_http(live_server, tenant_a, make_user):
    user = make_user(tenant_a)
    with http(live_server, f"{tenant_a.domain}:8000") as client:
        response = client.get(
            "/api/me/", headers={"Authorization": f"Bearer {tokens_for(user)['access']}"}
        )
    assert response.status_code == 200
    assert response.json()["username"] == user.username


# --- deactivated tenant -------------------------------------------------------------------------


async def test_deactivated_tenant_refuses_the_websocket_handshake(deactivated_tenant):
    tenant, _, token = deactivated_tenant
    slug = unique_name("closed_")
    connected, _ = await handshake(tenant.domain, chat_path(token, slug))
    assert not connected
    assert schemas_holding_room(slug) == []


async def test_deactivated_tenant_refuses_the_handshake_on_a_real_server(
    live_server, deactivated_tenant
):
    tenant, _, token = deactivated_tenant
    status = await real_handshake_status(live_server, tenant.domain, chat_path(token))
    assert status in REFUSED_HANDSHAKE_STATUSES


def test_deactivated_tenant_answers_http_404_json(live_server, deactivated_tenant):
    tenant, _, token = deactivated_tenant
    with http(live_server, tenant.domain) as client:
        me = client.get("/api/me/", headers={"Authorization": f"Bearer {token}"})
        login = client.post("/api/auth/token/", json={"username": "x", "password": "y"})
    assert me.status_code == 404
    assert "detail" in me.json()
    assert login.status_code == 404


async def test_reactivated_tenant_accepts_the_handshake_again(make_tenant):
    tenant = make_tenant()
    token = tokens_for(make_user_in(tenant))["access"]
    set_tenant_active(tenant, False)
    refused, _ = await handshake(tenant.domain, chat_path(token))
    set_tenant_active(tenant, True)
    accepted, _ = await handshake(tenant.domain, chat_path(token))
    assert (refused, accepted) == (False, True)


# --- probes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize(
    "host",
    ["{domain}", "{domain}:8000", "localhost", "10.1.2.3:8000", "10.1.2.3", "unknown-q.example"],
    ids=["tenant", "tenant-with-port", "platform", "ip-with-port", "ip", "unknown"],
)
def test_probes_answer_200_on_any_host_without_auth(live_server, tenant_a, path, host):
    with http(live_server, host.format(domain=tenant_a.domain)) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readiness_reports_database_and_channel_layer(live_server):
    with http(live_server, "10.1.2.3:8000") as client:
        body = client.get("/readyz").json()
    assert body == {"status": "ok", "database": True, "channel_layer": True}
