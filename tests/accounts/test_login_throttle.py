"""The login rate limits (PROTOCOL.md section 2, 429): per tenant and username (as the token
serializer cleans it), and per client IP, counted in Redis so that every server process shares
them, at `LOGIN_THROTTLE_RATE` and `LOGIN_THROTTLE_IP_RATE` attempts.

The tests start their own servers with a low rate (3/min) so that the shared live server,
at the default rate, never throttles other tests.
"""

from __future__ import annotations

import random
import uuid

import httpx
import pytest

from tests.api_helpers import PLATFORM_HOST, http, login, make_platform_user
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


def test_parallel_attempts_cannot_outrun_the_budget(server_factory, tenant_a):
    """Forty guesses at once, on four processes: only the budget's three check the password."""
    from concurrent.futures import ThreadPoolExecutor

    servers = [server_factory(LOGIN_THROTTLE_RATE=RATE) for _ in range(4)]
    user = make_user_in(tenant_a)
    with ThreadPoolExecutor(40) as pool:
        codes = list(
            pool.map(
                lambda i: wrong_password(servers[i % 4], tenant_a, user.username).status_code,
                range(40),
            )
        )
    assert sorted(codes) == [401] * ATTEMPTS + [429] * (40 - ATTEMPTS), codes


# --- the name as authentication sees it ---------------------------------------------------


def test_whitespace_and_unicode_space_variants_of_a_username_share_its_budget(
    throttled_server, tenant_a
):
    user = make_user_in(tenant_a)
    # The token serializer trims all of these to the same name, so they are one budget.
    for name in (f" {user.username}", f"{user.username}\t", f"\u3000{user.username}"):
        assert wrong_password(throttled_server, tenant_a, name).status_code == 401
    response = wrong_password(throttled_server, tenant_a, f"{user.username}\n")
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_a_numeric_username_sent_as_a_number_is_throttled_with_its_text(throttled_server, tenant_a):
    digits = str(uuid.uuid4().int)[:12]
    make_user_in(tenant_a, username=digits)
    with http(throttled_server, tenant_a.domain) as client:
        for _ in range(ATTEMPTS):
            body = {"username": int(digits), "password": "not-the-password"}
            assert client.post("/api/auth/token/", json=body).status_code == 401
    response = wrong_password(throttled_server, tenant_a, digits)
    assert response.status_code == 429, response.text


# --- the per-IP budget ------------------------------------------------------------------------

IP_RATE = "5/min"
IP_ATTEMPTS = 5


def own_address() -> str:
    """A loopback address of this test alone (all of 127.0.0.0/8 reaches the server), so
    that the per-IP count is not shared with the rest of the run's logins from 127.0.0.1."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def login_from(
    server: LiveServer, address: str, host: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(
        base_url=server.url, transport=transport, headers={"Host": host, **(headers or {})}
    ) as client:
        return client.post("/api/auth/token/", json=body)


@pytest.fixture
def ip_throttled_server(server_factory) -> LiveServer:
    return server_factory(LOGIN_THROTTLE_IP_RATE=IP_RATE)


def test_many_usernames_from_one_address_hit_the_ip_budget(ip_throttled_server, tenant_a):
    address = own_address()
    for _ in range(IP_ATTEMPTS):
        body = {"username": unique("nobody_"), "password": "guess"}
        assert login_from(ip_throttled_server, address, tenant_a.domain, body).status_code == 401
    body = {"username": unique("nobody_"), "password": "guess"}
    response = login_from(ip_throttled_server, address, tenant_a.domain, body)
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["Retry-After"]) <= 60
    # Another address is not throttled: the budget is the address's, not the server's.
    user = make_user_in(tenant_a)
    body = {"username": user.username, "password": user.password}
    assert login_from(ip_throttled_server, own_address(), tenant_a.domain, body).status_code == 200


def test_malformed_usernames_count_against_the_ip_budget(ip_throttled_server, tenant_a):
    address = own_address()
    for username in ([], {"a": 1}, True, ["alice"], {"username": "alice"}):
        body = {"username": username, "password": "guess"}
        assert login_from(ip_throttled_server, address, tenant_a.domain, body).status_code == 400
    body = {"username": [unique("x")], "password": "guess"}
    response = login_from(ip_throttled_server, address, tenant_a.domain, body)
    assert response.status_code == 429, response.text


def test_a_forged_x_forwarded_for_does_not_buy_a_fresh_ip_budget(ip_throttled_server, tenant_a):
    address = own_address()
    for n in range(IP_ATTEMPTS + 1):
        body = {"username": unique("nobody_"), "password": "guess"}
        forged = {"X-Forwarded-For": f"10.0.{n}.1"}
        response = login_from(ip_throttled_server, address, tenant_a.domain, body, forged)
    assert response.status_code == 429, response.text
