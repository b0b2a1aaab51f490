"""The login rate limit (PROTOCOL.md section 2, 429): per tenant and username, counted in
Redis so that every server process shares it, at `LOGIN_THROTTLE_RATE` attempts.

The tests start their own servers with a low rate (3/min) so that the shared live server,
at the default rate, never throttles other tests.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api_helpers import PLATFORM_HOST, login, make_platform_user
from tests.conftest import LiveServer, TenantInfo, make_user_in, unique

RATE = "3/min"
ATTEMPTS = 3


@pytest.fixture
def throttled_server(server_factory) -> LiveServer:
    return server_factory(LOGIN_THROTTLE_RATE=RATE)


def wrong_password(server: LiveServer, tenant: TenantInfo, username: str) -> httpx.Response:
    return login(server, tenant.domain, username, "not-the-password")


def test_the_attempt_after_the_limit_is_429_with_retry_after(throttled_server, tenant_a):
    user = make_user_in(tenant_a)
    for _ in range(ATTEMPTS):
        assert wrong_password(throttled_server, tenant_a, user.username).status_code == 401
    response = wrong_password(throttled_server, tenant_a, user.username)
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 60
    assert "detail" in response.json()
    # Throttled means not even the right password gets in until the window has passed.
    right = login(throttled_server, tenant_a.domain, user.username, user.password)
    assert right.status_code == 429


def test_the_limit_counts_the_username_case_insensitively(throttled_server, tenant_a):
    user = make_user_in(tenant_a)
    for name in (user.username, user.username.upper(), user.username.title()):
        assert wrong_password(throttled_server, tenant_a, name).status_code == 401
    assert wrong_password(throttled_server, tenant_a, user.username).status_code == 429


def test_another_username_on_the_same_tenant_is_not_throttled(throttled_server, tenant_a):
    victim, bystander = make_user_in(tenant_a), make_user_in(tenant_a)
    for _ in range(ATTEMPTS + 1):
        wrong_password(throttled_server, tenant_a, victim.username)
    assert wrong_password(throttled_server, tenant_a, victim.username).status_code == 429
    response = login(throttled_server, tenant_a.domain, bystander.username, bystander.password)
    assert response.status_code == 200, response.text


def test_the_same_username_on_another_tenant_is_not_throttled(throttled_server, tenant_a, tenant_b):
    username = unique("twin_")
    make_user_in(tenant_a, username=username)
    twin = make_user_in(tenant_b, username=username)
    for _ in range(ATTEMPTS + 1):
        wrong_password(throttled_server, tenant_a, username)
    assert wrong_password(throttled_server, tenant_a, username).status_code == 429
    response = login(throttled_server, tenant_b.domain, username, twin.password)
    assert response.status_code == 200, response.text


def test_the_platform_host_is_throttled_too(throttled_server):
    operator = make_platform_user(is_admin=True)
    for _ in range(ATTEMPTS):
        response = login(throttled_server, PLATFORM_HOST, operator.username, "wrong")
        assert response.status_code == 401
    response = login(throttled_server, PLATFORM_HOST, operator.username, operator.password)
    assert response.status_code == 429


def test_the_count_is_shared_by_two_server_processes(server_factory, tenant_a):
    first = server_factory(LOGIN_THROTTLE_RATE=RATE)
    second = server_factory(LOGIN_THROTTLE_RATE=RATE)
    user = make_user_in(tenant_a)
    for _ in range(2):
        assert wrong_password(first, tenant_a, user.username).status_code == 401
    assert wrong_password(second, tenant_a, user.username).status_code == 401
    # Alone, the second process has seen one attempt; together they have seen three.
    response = wrong_password(second, tenant_a, user.username)
    assert response.status_code == 429, response.text
    assert "Retry-After" in response.headers
