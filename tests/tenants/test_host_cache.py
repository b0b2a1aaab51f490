"""The tenant of a host is answered from each process's snapshot (tenants/host_cache.py):
a handshake without a token, or with a Host nobody registered, costs no database query
however often it is repeated, and a tenant change reaches every process at once."""

from __future__ import annotations

import re

import httpx
import pytest
import websockets

from tests.api_helpers import PLATFORM_HOST, http, login, make_platform_user
from tests.conftest import LiveServer, make_user_in, tokens_for, unique
from tests.realtime_helpers import close_code, room_path
from tests.support import TIMEOUT, ws_connect

BURST = 40
_DB_CALLS = re.compile(r"^chat_db_seconds_count\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def database_calls(server: LiveServer) -> float:
    """Database calls the process made for WebSockets so far (its /metrics, every op)."""
    text = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    return sum(float(n) for n in _DB_CALLS.findall(text))


async def handshake_without_token(server: LiveServer, host: str) -> int | None:
    ws = await ws_connect(server.ws_url, host, f"/ws/chat/{unique('r')}/")
    try:
        return await close_code(ws)
    finally:
        await ws.close()


async def handshake_status(server: LiveServer, host: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await ws_connect(server.ws_url, host, f"/ws/chat/{unique('r')}/")
    return refused.value.response.status_code


async def test_handshakes_without_token_or_with_unknown_hosts_cost_no_database_query(
    tenant_a, server_factory
):
    server = server_factory()
    assert await handshake_without_token(server, tenant_a.domain) == 4401  # snapshot loaded
    before = database_calls(server)
    codes = [await handshake_without_token(server, tenant_a.domain) for _ in range(BURST)]
    statuses = [
        await handshake_status(server, f"{unique('nobody-')}.localhost") for _ in range(BURST)
    ]
    after = database_calls(server)
    assert codes == [4401] * BURST
    assert statuses == [403] * BURST
    assert after == before, f"{after - before:.0f} database calls for {2 * BURST} handshakes"


async def test_a_tenant_deactivated_on_one_process_answers_404_on_another_at_once(
    make_tenant, server_factory
):
    tenant = make_tenant()
    user = make_user_in(tenant)
    token = tokens_for(user)["access"]
    operator = make_platform_user()
    first, second = server_factory(), server_factory()
    with http(second, tenant.domain, token) as client:  # the second process has it cached
        assert client.get("/api/me/").status_code == 200
    ws = await ws_connect(second.ws_url, tenant.domain, room_path(unique("r"), token))
    await ws.close()

    operator_token = login(first, PLATFORM_HOST, operator.username, operator.password).json()
    with http(first, PLATFORM_HOST, operator_token["access"]) as client:
        assert client.delete(f"/api/tenants/{tenant.schema_name}/").status_code == 204

    with http(second, tenant.domain, token) as client:
        assert client.get("/api/me/").status_code == 404
    assert await handshake_status(second, tenant.domain) == 403

    with http(first, PLATFORM_HOST, operator_token["access"]) as client:
        again = client.patch(f"/api/tenants/{tenant.schema_name}/", json={"is_active": True})
        assert again.status_code == 200
    with http(second, tenant.domain, token) as client:  # and back, at once too
        assert client.get("/api/me/").status_code == 200
