"""The tenant admin API (`/api/me/`, `/api/users/`) over a real uvicorn, as a client meets it.

PROTOCOL.md section 2: tenant admins manage their tenant's users; DELETE deactivates, the
user's tokens stop working at once (refresh included) and their open sockets, on every server
process, close with 4401 within 5 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api_helpers import (
    ACTORS,
    ANONYMOUS,
    MEMBER,
    OTHER_TENANT_ADMIN,
    PLATFORM_ADMIN,
    TENANT_ADMIN,
    Cast,
    assert_field_error,
    assert_paginated,
    assert_socket_open,
    close_code_within,
    http,
    login,
    make_cast,
    open_room_socket,
    user_row,
    username_exists,
)
from tests.conftest import LiveServer, TenantInfo, UserInfo, make_user_in, tokens_for, unique

USER_FIELDS = {"id", "username", "is_admin", "is_active", "date_joined"}
DENIED = {ANONYMOUS: 401, MEMBER: 403, OTHER_TENANT_ADMIN: 401, PLATFORM_ADMIN: 401}


@pytest.fixture(scope="module")
def cast(
    tenant_a: TenantInfo, tenant_b: TenantInfo, live_server: LiveServer, django_db_blocker: Any
) -> Cast:
    with django_db_blocker.unblock():
        return make_cast(tenant_a, tenant_b)


def as_admin(server: LiveServer, cast: Cast) -> Any:
    return http(server, cast.tenant.domain, cast.token(TENANT_ADMIN))


def new_user_body(**overrides: Any) -> dict[str, Any]:
    return {"username": unique("new_"), "password": "a-long-password", **overrides}


# --- /api/me/ ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "status"),
    [
        (ANONYMOUS, 401),
        (MEMBER, 200),
        (TENANT_ADMIN, 200),
        (OTHER_TENANT_ADMIN, 401),
        (PLATFORM_ADMIN, 401),
    ],
)
def test_me_answers_each_actor_as_the_contract_says(live_server, cast, actor, status):
    with http(live_server, cast.tenant.domain, cast.token(actor)) as client:
        response = client.get("/api/me/")
    assert response.status_code == status, response.text
    if status == 200:
        user = cast.member if actor == MEMBER else cast.admin
        assert response.json() == {
            "id": user.id,
            "username": user.username,
            "is_admin": actor == TENANT_ADMIN,
        }


# --- the permission matrix of /api/users/ --------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # `{id}`: a user made for the case
    body: Callable[[], dict[str, Any]] | None
    ok: int


USER_CALLS = {
    "list": Call("GET", "/api/users/", None, 200),
    "create": Call("POST", "/api/users/", new_user_body, 201),
    "show": Call("GET", "/api/users/{id}/", None, 200),
    "change": Call("PATCH", "/api/users/{id}/", lambda: {"username": unique("renamed_")}, 200),
    "deactivate": Call("DELETE", "/api/users/{id}/", None, 204),
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("call", USER_CALLS, ids=str)
def test_users_endpoints_answer_each_actor_as_the_contract_says(live_server, cast, call, actor):
    spec = USER_CALLS[call]
    target = make_user_in(cast.tenant)
    body = spec.body() if spec.body else None
    with http(live_server, cast.tenant.domain, cast.token(actor)) as client:
        response = client.request(spec.method, spec.path.format(id=target.id), json=body)

    expected = spec.ok if actor == TENANT_ADMIN else DENIED[actor]
    assert response.status_code == expected, response.text
    row = user_row(cast.tenant, target.id)
    assert row is not None
    if actor != TENANT_ADMIN:  # a refused call changed nothing
        assert row == {"username": target.username, "is_active": True, "is_staff": False}
        if body is not None:
            assert not username_exists(cast.tenant, body["username"])
    elif call == "deactivate":
        assert row["is_active"] is False
    elif call in ("create", "change"):
        assert username_exists(cast.tenant, body["username"])


# --- happy paths -----------------------------------------------------------------------------


def test_created_user_is_shown_without_password_and_can_log_in(live_server, cast):
    body = new_user_body()
    with as_admin(live_server, cast) as client:
        created = client.post("/api/users/", json=body)
        assert created.status_code == 201, created.text
        user = created.json()
        assert set(user) == USER_FIELDS
        assert (user["username"], user["is_admin"], user["is_active"]) == (
            body["username"],
            False,
            True,
        )
        shown = client.get(f"/api/users/{user['id']}/")
    assert shown.status_code == 200
    assert shown.json() == user
    assert (
        login(live_server, cast.tenant.domain, body["username"], body["password"]).status_code
        == 200
    )


def test_user_created_as_admin_is_an_admin_on_me(live_server, cast):
    body = new_user_body(is_admin=True)
    with as_admin(live_server, cast) as client:
        created = client.post("/api/users/", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["is_admin"] is True
    pair = login(live_server, cast.tenant.domain, body["username"], body["password"]).json()
    with http(live_server, cast.tenant.domain, pair["access"]) as client:
        assert client.get("/api/me/").json()["is_admin"] is True


def test_users_list_is_paginated_and_lists_the_tenants_users_only(live_server, cast, tenant_b):
    stranger = make_user_in(tenant_b)
    with as_admin(live_server, cast) as client:
        first = client.get("/api/users/")
        items = assert_paginated(first)
        assert first.json()["count"] >= 2
        usernames = {item["username"] for item in items}
        page = first.json()
        while page["next"]:
            # `next` names the tenant's host (the Host header), not 127.0.0.1: keep the path.
            path = urlsplit(page["next"])._replace(scheme="", netloc="").geturl()
            page = client.get(path).json()
            usernames |= {item["username"] for item in page["results"]}
    assert {cast.member.username, cast.admin.username} <= usernames
    assert stranger.username not in usernames
    assert all(set(item) == USER_FIELDS for item in items)


def test_users_list_page_size_is_bounded_and_pages_do_not_overlap(live_server, cast):
    for _ in range(3):
        make_user_in(cast.tenant)
    with as_admin(live_server, cast) as client:
        page1 = client.get("/api/users/").json()
        if page1["next"] is None:  # fewer users than a page: the first page is everything
            assert len(page1["results"]) == page1["count"]
            return
        page2 = client.get("/api/users/", params={"page": 2}).json()
    ids1 = {u["id"] for u in page1["results"]}
    ids2 = {u["id"] for u in page2["results"]}
    assert ids1 and ids2 and not ids1 & ids2


def test_patch_renames_and_changes_password_and_the_new_credentials_work(live_server, cast):
    user = make_user_in(cast.tenant)
    new_name, new_password = unique("renamed_"), "another-long-password"
    with as_admin(live_server, cast) as client:
        response = client.patch(
            f"/api/users/{user.id}/", json={"username": new_name, "password": new_password}
        )
    assert response.status_code == 200, response.text
    assert response.json()["username"] == new_name
    assert "password" not in response.json()
    domain = cast.tenant.domain
    assert login(live_server, domain, new_name, new_password).status_code == 200
    assert login(live_server, domain, new_name, user.password).status_code == 401


def test_patch_is_admin_makes_the_user_an_admin_at_once(live_server, cast):
    user = make_user_in(cast.tenant)
    pair = login(live_server, cast.tenant.domain, user.username, user.password).json()
    with http(live_server, cast.tenant.domain, pair["access"]) as own:
        assert own.get("/api/users/").status_code == 403
        with as_admin(live_server, cast) as client:
            response = client.patch(f"/api/users/{user.id}/", json={"is_admin": True})
        assert response.status_code == 200, response.text
        assert own.get("/api/me/").json()["is_admin"] is True
        assert own.get("/api/users/").status_code == 200


def test_unknown_user_id_is_404(live_server, cast):
    with as_admin(live_server, cast) as client:
        for method in ("GET", "PATCH", "DELETE"):
            assert client.request(method, "/api/users/987654321/", json={}).status_code == 404


def test_patch_is_active_true_reactivates_a_deactivated_user(live_server, cast):
    user = make_user_in(cast.tenant)
    with as_admin(live_server, cast) as client:
        assert client.delete(f"/api/users/{user.id}/").status_code == 204
        assert client.get(f"/api/users/{user.id}/").json()["is_active"] is False
        response = client.patch(f"/api/users/{user.id}/", json={"is_active": True})
    assert response.status_code == 200
    assert response.json()["is_active"] is True
    assert login(live_server, cast.tenant.domain, user.username, user.password).status_code == 200


# --- validation ------------------------------------------------------------------------------


def test_creating_a_duplicate_username_is_400_naming_username(live_server, cast):
    with as_admin(live_server, cast) as client:
        response = client.post("/api/users/", json=new_user_body(username=cast.member.username))
    assert_field_error(response, "username")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "short"}, "password"),
        ({"password": ""}, "password"),
        ({"password": None}, "password"),
        ({"username": "has space"}, "username"),
        ({"username": ""}, "username"),
        ({"username": "x" * 151}, "username"),
        ({"is_admin": "maybe"}, "is_admin"),
    ],
    ids=[
        "short-password",
        "empty-password",
        "null-password",
        "bad-username",
        "empty-username",
        "long-username",
        "bad-is-admin",
    ],
)
def test_creating_a_user_with_a_bad_field_is_400_naming_it_and_creates_nothing(
    live_server, cast, body, field
):
    payload = new_user_body(**body)
    with as_admin(live_server, cast) as client:
        response = client.post("/api/users/", json=payload)
    assert_field_error(response, field)
    if payload["username"]:
        assert not username_exists(cast.tenant, payload["username"])


@pytest.mark.parametrize("missing", ["username", "password"])
def test_creating_a_user_without_a_required_field_is_400_naming_it(live_server, cast, missing):
    payload = new_user_body()
    del payload[missing]
    with as_admin(live_server, cast) as client:
        assert_field_error(client.post("/api/users/", json=payload), missing)


def changing_fails(server: LiveServer, cast: Cast, body: dict[str, Any], field: str) -> None:
    """PATCH `body` on a fresh user is a 400 naming `field`, and the user is as it was."""
    user = make_user_in(cast.tenant)
    with as_admin(server, cast) as client:
        assert_field_error(client.patch(f"/api/users/{user.id}/", json=body), field)
    assert user_row(cast.tenant, user.id) == {
        "username": user.username,
        "is_active": True,
        "is_staff": False,
    }
    assert login(server, cast.tenant.domain, user.username, user.password).status_code == 200


def test_renaming_a_user_to_a_taken_username_is_400_naming_username(live_server, cast):
    changing_fails(live_server, cast, {"username": cast.member.username}, "username")


def test_changing_a_password_to_a_short_one_is_400_naming_password(live_server, cast):
    changing_fails(live_server, cast, {"password": "short"}, "password")


def test_users_endpoint_rejects_put(live_server, cast):
    with as_admin(live_server, cast) as client:
        response = client.put(f"/api/users/{cast.member.id}/", json=new_user_body())
    assert response.status_code == 405


# --- deactivation ----------------------------------------------------------------------------


def deactivate(server: LiveServer, cast: Cast, user: UserInfo, how: str) -> httpx.Response:
    with as_admin(server, cast) as client:
        if how == "delete":
            return client.delete(f"/api/users/{user.id}/")
        return client.patch(f"/api/users/{user.id}/", json={"is_active": False})


@pytest.mark.parametrize(("how", "status"), [("delete", 204), ("patch", 200)])
async def test_deactivating_a_user_ends_their_tokens_and_closes_their_sockets_on_every_process(
    live_server, server_factory, cast, how, status
):
    user = make_user_in(cast.tenant)
    neighbour = make_user_in(cast.tenant)
    domain = cast.tenant.domain
    pair = login(live_server, domain, user.username, user.password).json()
    with http(live_server, domain) as client:  # a rotated refresh is the one a client holds
        rotated = client.post("/api/auth/token/refresh/", json={"refresh": pair["refresh"]})
    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()

    second = server_factory()
    slug = unique("kick_")
    on_second = await open_room_socket(second, user, slug, token=pair["access"])
    on_first = await open_room_socket(live_server, user, slug, token=pair["access"])
    bystander = await open_room_socket(second, neighbour, slug)
    try:
        response = deactivate(live_server, cast, user, how)
        assert response.status_code == status, response.text

        assert await close_code_within(on_second) == 4401
        assert await close_code_within(on_first) == 4401
        await assert_socket_open(bystander)  # only that user's sockets are closed
    finally:
        for ws in (on_second, on_first, bystander):
            await ws.close()

    with http(live_server, domain, pair["access"]) as client:
        assert client.get("/api/me/").status_code == 401
        assert (
            client.post("/api/auth/token/refresh/", json={"refresh": pair["refresh"]}).status_code
            == 401
        )
    assert login(live_server, domain, user.username, user.password).status_code == 401
    assert user_row(cast.tenant, user.id)["is_active"] is False  # deactivated, not deleted


def test_admin_cannot_deactivate_themselves_with_delete(live_server, cast, tenant_a):
    admin = make_user_in(tenant_a, is_admin=True)
    with http(live_server, tenant_a.domain, tokens_for(admin)["access"]) as client:
        response = client.delete(f"/api/users/{admin.id}/")
        assert response.status_code == 400
        assert "detail" in response.json()
        assert client.get("/api/me/").status_code == 200
    assert user_row(tenant_a, admin.id)["is_active"] is True


def test_admin_cannot_deactivate_themselves_with_patch(live_server, tenant_a):
    admin = make_user_in(tenant_a, is_admin=True)
    with http(live_server, tenant_a.domain, tokens_for(admin)["access"]) as client:
        response = client.patch(f"/api/users/{admin.id}/", json={"is_active": False})
    assert response.status_code == 400, response.text
    assert user_row(tenant_a, admin.id)["is_active"] is True
