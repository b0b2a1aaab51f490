"""The token endpoints and `/api/me/`, over HTTP on a real uvicorn, as a client meets them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import LiveServer, UserInfo, blocking, set_user_active, unique
from tests.support import TIMEOUT

PLATFORM_HOST = "localhost"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[Any]:
    """`api(host)`: an httpx client of the live server that sends `Host: host`."""
    clients: list[httpx.Client] = []

    def make(host: str) -> httpx.Client:
        client = httpx.Client(base_url=live_server.url, headers={"Host": host}, timeout=TIMEOUT)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, read the way a client would (without the server's key)."""
    return jwt.decode(token, options={"verify_signature": False})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: httpx.Client, user: UserInfo, password: str | None = None) -> httpx.Response:
    return client.post(
        "/api/auth/token/",
        json={"username": user.username, "password": password or user.password},
    )


def login_pair(client: httpx.Client, user: UserInfo) -> dict[str, str]:
    response = login(client, user)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/api/auth/token/refresh/", json={"refresh": token})


def delete_user(user: UserInfo) -> None:
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    blocking(
        lambda: run_in_schema(
            user.tenant.schema_name,
            lambda: get_user_model().objects.filter(pk=user.id).delete(),
        )
    )


# --- obtaining a pair -----------------------------------------------------------------------


def test_good_credentials_get_a_pair_carrying_the_tenant_claim(api, tenant_a, make_user):
    user = make_user(tenant_a)
    response = login(api(tenant_a.domain), user)
    assert response.status_code == 200
    body = response.json()
    access, refresh_ = claims(body["access"]), claims(body["refresh"])
    assert access["tenant"] == refresh_["tenant"] == tenant_a.schema_name
    assert (access["token_type"], refresh_["token_type"]) == ("access", "refresh")
    assert str(access["user_id"]) == str(user.id)


def test_wrong_password_is_401(api, tenant_a, make_user):
    user = make_user(tenant_a)
    response = login(api(tenant_a.domain), user, password="not-the-password")
    assert response.status_code == 401
    assert "access" not in response.json()


def test_unknown_username_is_401(api, tenant_a):
    response = api(tenant_a.domain).post(
        "/api/auth/token/", json={"username": unique("nobody_"), "password": "whatever"}
    )
    assert response.status_code == 401


def test_deactivated_user_cannot_log_in(api, tenant_a, make_user):
    user = make_user(tenant_a)
    set_user_active(user, False)
    assert login(api(tenant_a.domain), user).status_code == 401


def test_platform_host_refuses_a_tenant_users_credentials(api, tenant_a, make_user):
    # Users live in their tenant's schema; the platform host only knows the public schema's.
    user = make_user(tenant_a)
    assert login(api(PLATFORM_HOST), user).status_code == 401


def test_same_username_in_two_tenants_logs_in_only_on_its_own_host(
    api, tenant_a, tenant_b, make_user
):
    username = unique("twin_")
    in_a = make_user(tenant_a, username=username)
    in_b = make_user(tenant_b, username=username)
    assert in_a.password != in_b.password
    host_a, host_b = api(tenant_a.domain), api(tenant_b.domain)

    own_a, own_b = login(host_a, in_a), login(host_b, in_b)
    assert (own_a.status_code, own_b.status_code) == (200, 200)
    assert claims(own_a.json()["access"])["tenant"] == tenant_a.schema_name
    assert claims(own_b.json()["access"])["tenant"] == tenant_b.schema_name
    assert login(host_b, in_a).status_code == 401
    assert login(host_a, in_b).status_code == 401


# --- /api/me/ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_admin", [False, True], ids=["user", "admin"])
def test_access_token_shows_the_user_on_me(api, tenant_a, make_user, is_admin):
    user = make_user(tenant_a, is_admin=is_admin)
    client = api(tenant_a.domain)
    access = login_pair(client, user)["access"]
    response = client.get("/api/me/", headers=bearer(access))
    assert response.status_code == 200
    assert response.json() == {"id": user.id, "username": user.username, "is_admin": is_admin}


def test_me_without_token_is_401(api, tenant_a):
    assert api(tenant_a.domain).get("/api/me/").status_code == 401


def test_me_with_garbage_token_is_401(api, tenant_a):
    assert api(tenant_a.domain).get("/api/me/", headers=bearer("garbage")).status_code == 401


def test_access_token_of_other_tenant_is_401_on_me(api, tenant_a, tenant_b, make_user):
    stranger = make_user(tenant_b)
    access = login_pair(api(tenant_b.domain), stranger)["access"]
    assert api(tenant_a.domain).get("/api/me/", headers=bearer(access)).status_code == 401


def test_access_token_of_same_username_in_other_tenant_is_401_on_me(
    api, tenant_a, tenant_b, make_user
):
    username = unique("twin_")
    make_user(tenant_a, username=username)
    elsewhere = make_user(tenant_b, username=username)
    access = login_pair(api(tenant_b.domain), elsewhere)["access"]
    assert api(tenant_a.domain).get("/api/me/", headers=bearer(access)).status_code == 401


def test_refresh_token_used_as_bearer_is_401_on_me(api, tenant_a, make_user):
    client = api(tenant_a.domain)
    pair = login_pair(client, make_user(tenant_a))
    assert client.get("/api/me/", headers=bearer(pair["refresh"])).status_code == 401


def test_deactivated_users_access_token_is_401_on_me(api, tenant_a, make_user):
    user = make_user(tenant_a)
    client = api(tenant_a.domain)
    access = login_pair(client, user)["access"]
    set_user_active(user, False)
    assert client.get("/api/me/", headers=bearer(access)).status_code == 401


def test_deleted_users_access_token_is_401_on_me(api, tenant_a, make_user):
    user = make_user(tenant_a)
    client = api(tenant_a.domain)
    access = login_pair(client, user)["access"]
    delete_user(user)
    assert client.get("/api/me/", headers=bearer(access)).status_code == 401


# --- refresh and rotation ------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_is_then_refused(api, tenant_a, make_user):
    user = make_user(tenant_a)
    client = api(tenant_a.domain)
    old = login_pair(client, user)

    response = refresh(client, old["refresh"])
    assert response.status_code == 200
    new = response.json()
    assert new["refresh"] != old["refresh"]
    assert claims(new["refresh"])["tenant"] == tenant_a.schema_name
    me = client.get("/api/me/", headers=bearer(new["access"]))
    assert me.status_code == 200
    assert me.json()["id"] == user.id

    assert refresh(client, old["refresh"]).status_code == 401  # blacklisted by the rotation
    assert refresh(client, new["refresh"]).status_code == 200  # the rotated one still works


def test_refresh_of_other_tenant_is_401(api, tenant_a, tenant_b, make_user):
    stranger = make_user(tenant_b)
    pair = login_pair(api(tenant_b.domain), stranger)
    assert refresh(api(tenant_a.domain), pair["refresh"]).status_code == 401
    # Refused elsewhere, yet still good at home: the failed attempt did not consume it.
    assert refresh(api(tenant_b.domain), pair["refresh"]).status_code == 200


def test_refresh_of_a_tenant_on_the_platform_host_is_401(api, tenant_a, make_user):
    pair = login_pair(api(tenant_a.domain), make_user(tenant_a))
    assert refresh(api(PLATFORM_HOST), pair["refresh"]).status_code == 401


def test_access_token_on_the_refresh_endpoint_is_401(api, tenant_a, make_user):
    client = api(tenant_a.domain)
    pair = login_pair(client, make_user(tenant_a))
    assert refresh(client, pair["access"]).status_code == 401


def test_deactivated_users_refresh_is_401(api, tenant_a, make_user):
    user = make_user(tenant_a)
    client = api(tenant_a.domain)
    pair = login_pair(client, user)
    set_user_active(user, False)
    assert refresh(client, pair["refresh"]).status_code == 401


def test_deleted_users_refresh_is_401(api, tenant_a, make_user):
    user = make_user(tenant_a)
    client = api(tenant_a.domain)
    pair = login_pair(client, user)
    delete_user(user)
    assert refresh(client, pair["refresh"]).status_code == 401


# --- logout ---------------------------------------------------------------------------------


def test_logout_answers_205_and_the_refresh_is_then_refused(api, tenant_a, make_user):
    client = api(tenant_a.domain)
    pair = login_pair(client, make_user(tenant_a))
    response = client.post(
        "/api/auth/logout/", json={"refresh": pair["refresh"]}, headers=bearer(pair["access"])
    )
    assert response.status_code == 205
    assert refresh(client, pair["refresh"]).status_code == 401


def test_logout_without_access_token_is_401_and_keeps_the_refresh(api, tenant_a, make_user):
    client = api(tenant_a.domain)
    pair = login_pair(client, make_user(tenant_a))
    assert client.post("/api/auth/logout/", json={"refresh": pair["refresh"]}).status_code == 401
    assert refresh(client, pair["refresh"]).status_code == 200


def test_logout_with_another_users_refresh_does_not_blacklist_it(api, tenant_a, make_user):
    client = api(tenant_a.domain)
    mine = login_pair(client, make_user(tenant_a))
    theirs = login_pair(client, make_user(tenant_a))
    response = client.post(
        "/api/auth/logout/", json={"refresh": theirs["refresh"]}, headers=bearer(mine["access"])
    )
    assert response.status_code in (400, 401, 403)
    assert refresh(client, theirs["refresh"]).status_code == 200


def test_logout_with_another_tenants_refresh_is_refused(api, tenant_a, tenant_b, make_user):
    host_a, host_b = api(tenant_a.domain), api(tenant_b.domain)
    mine = login_pair(host_a, make_user(tenant_a))
    theirs = login_pair(host_b, make_user(tenant_b))
    response = host_a.post(
        "/api/auth/logout/", json={"refresh": theirs["refresh"]}, headers=bearer(mine["access"])
    )
    assert response.status_code in (400, 401, 403)
    assert refresh(host_b, theirs["refresh"]).status_code == 200
