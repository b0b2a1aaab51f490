"""Users created by a tenant's backend spend a per-tenant budget (USER_CREATE_RATE), shared by
every server process, like rooms do: a first use of an external id past it is a 429 with
Retry-After (server tokens, and tenant-signed tokens over REST) or a 4429 close (a
tenant-signed token's WebSocket handshake), nothing is created, and tokens for users who
exist already are never limited by it. Another tenant's budget is its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api_helpers import bearer, username_exists
from tests.conftest import LiveServer, TenantInfo, start_server
from tests.integrations.test_integration import _ed25519, _token, _ws_close_code, admin_client
from tests.integrations.test_integration import api_key as make_api_key
from tests.support import TIMEOUT

BUDGET = 5


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    """Two processes: the budget is the tenant's, not one process's."""
    started = [
        start_server(tmp_path_factory.mktemp("users"), USER_CREATE_RATE=f"{BUDGET}/h")
        for _ in range(2)
    ]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def tenant(make_tenant: Any) -> TenantInfo:
    return make_tenant()


def backend(server: LiveServer, tenant: TenantInfo, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Host": tenant.domain, "Authorization": f"Api-Key {key}"},
        timeout=TIMEOUT,
    )


def test_server_tokens_past_the_budget_are_429_and_create_nobody_but_known_users_pass(
    servers, tenant, make_tenant
):
    key = make_api_key(servers[0], tenant)
    answers = []
    for n in range(BUDGET):
        with backend(servers[n % 2], tenant, key) as c:
            answers.append(c.post("/api/server/tokens/", json={"user": f"new-{n}"}).status_code)
    assert answers == [200] * BUDGET
    for server in servers:
        with backend(server, tenant, key) as c:
            refused = c.post("/api/server/tokens/", json={"user": f"late-{server.port}"})
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert not username_exists(tenant, f"late-{server.port}")
            # Users that exist: as many tokens as the backend wants.
            known = [c.post("/api/server/tokens/", json={"user": "new-0"}) for _ in range(10)]
            assert {r.status_code for r in known} == {200}
            me = c.get("/api/me/", headers=bearer(known[0].json()["access"]))
            assert me.json()["username"] == "new-0"
    other = make_tenant()
    with backend(servers[1], other, make_api_key(servers[1], other)) as c:
        assert c.post("/api/server/tokens/", json={"user": "late-0"}).status_code == 200


async def test_tenant_signed_first_uses_past_the_budget_are_429_or_4429_and_create_nobody(
    servers, tenant
):
    private, jwk = _ed25519("k-budget")
    with admin_client(servers[0], tenant) as c:
        assert c.post("/api/signing-keys/", json={"jwk": jwk}).status_code == 201
    for n in range(BUDGET):
        token = _token(private, "k-budget", sub=f"signed-{n}", username=None)
        with httpx.Client(
            base_url=servers[n % 2].url, headers={"Host": tenant.domain}, timeout=TIMEOUT
        ) as c:
            assert c.get("/api/me/", headers=bearer(token)).status_code == 200
    late = _token(private, "k-budget", sub="signed-late", username=None)
    with httpx.Client(
        base_url=servers[1].url, headers={"Host": tenant.domain}, timeout=TIMEOUT
    ) as c:
        refused = c.get("/api/me/", headers=bearer(late))
        assert refused.status_code == 429, refused.text
        assert "retry-after" in refused.headers
        known = _token(private, "k-budget", sub="signed-0", username=None)
        assert c.get("/api/me/", headers=bearer(known)).status_code == 200
    assert await _ws_close_code(servers[0], tenant, late) == 4429
    assert not username_exists(tenant, "signed-late")
