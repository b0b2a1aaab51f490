"""Rooms and room members over a real uvicorn (PROTOCOL.md section 2), with the kicks that go
with them: a deleted room's sockets and a removed member's sockets close with 4403, also when
the socket lives on another server process than the request that caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
    connect_close_code,
    http,
    make_cast,
    open_room_socket,
)
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    make_user_in,
    set_user_active,
    start_server,
    tokens_for,
    unique,
)

ROOM_FIELDS = {"slug", "name", "is_private", "created_at", "unread_count", "kind"}
MEMBER_FIELDS = {"user_id", "username", "created_at"}
DENIED = {ANONYMOUS: 401, MEMBER: 403, OTHER_TENANT_ADMIN: 401, PLATFORM_ADMIN: 401}


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[LiveServer]:
    """This module's tenant admin creates a room in nearly every test, dozens a minute: more
    than a user's room budget (ROOM_CREATE_RATE, tested in tests/chat/test_write_budgets.py)."""
    server = start_server(tmp_path_factory.mktemp("rooms"), ROOM_CREATE_RATE="100000/min")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cast(
    tenant_a: TenantInfo, tenant_b: TenantInfo, live_server: LiveServer, django_db_blocker: Any
) -> Cast:
    with django_db_blocker.unblock():
        return make_cast(tenant_a, tenant_b)


def as_actor(server: LiveServer, cast: Cast, actor: str) -> Any:
    return http(server, cast.tenant.domain, cast.token(actor))


def as_user(server: LiveServer, user: UserInfo) -> Any:
    return http(server, user.tenant.domain, tokens_for(user)["access"])


def create_room(server: LiveServer, cast: Cast, *, is_private: bool = False) -> str:
    """A room made by the cast's admin (who is then a member of it if it is private)."""
    slug = unique("room_")
    with as_actor(server, cast, TENANT_ADMIN) as client:
        response = client.post("/api/rooms/", json={"slug": slug, "is_private": is_private})
    assert response.status_code == 201, response.text
    return slug


def add_member(server: LiveServer, cast: Cast, slug: str, user: UserInfo) -> None:
    with as_actor(server, cast, TENANT_ADMIN) as client:
        response = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user.id})
    assert response.status_code == 201, response.text


def room_state(tenant: TenantInfo, slug: str) -> dict[str, Any] | None:
    """The room's row (name, is_private) and its members' ids, or None if it is gone."""
    from chat.models import Membership, Room
    from tenants.context import run_in_schema

    def read() -> dict[str, Any] | None:
        room = Room.objects.filter(slug=slug).values("id", "name", "is_private").first()
        if room is None:
            return None
        members = Membership.objects.filter(room_id=room["id"]).values_list("user_id", flat=True)
        return {"name": room["name"], "is_private": room["is_private"], "members": set(members)}

    return blocking(lambda: run_in_schema(tenant.schema_name, read))


def listed_slugs(server: LiveServer, user: UserInfo) -> dict[str, dict[str, Any]]:
    """Every room `user` sees in GET /api/rooms/ (all pages), by slug."""
    rooms: dict[str, dict[str, Any]] = {}
    with as_user(server, user) as client:
        url: str | None = "/api/rooms/"
        while url:
            response = client.get(url)
            rooms.update({room["slug"]: room for room in assert_paginated(response)})
            following = response.json()["next"]
            # `next` names the tenant's host (the Host header), not 127.0.0.1: keep the path.
            url = urlsplit(following)._replace(scheme="", netloc="").geturl() if following else None
    return rooms


# --- creating and listing rooms --------------------------------------------------------------


def test_member_creates_a_public_room(live_server, cast):
    slug = unique("room_")
    with as_actor(live_server, cast, MEMBER) as client:
        response = client.post("/api/rooms/", json={"slug": slug, "name": "Lobby"})
    assert response.status_code == 201, response.text
    room = response.json()
    assert set(room) == ROOM_FIELDS
    assert (room["slug"], room["name"], room["is_private"], room["unread_count"]) == (
        slug,
        "Lobby",
        False,
        0,
    )


def test_member_creating_a_private_room_is_403_and_creates_nothing(live_server, cast):
    slug = unique("room_")
    with as_actor(live_server, cast, MEMBER) as client:
        response = client.post("/api/rooms/", json={"slug": slug, "is_private": True})
    assert response.status_code == 403
    assert room_state(cast.tenant, slug) is None


def test_admin_creates_a_private_room_and_is_its_first_member(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    state = room_state(cast.tenant, slug)
    assert state is not None
    assert state["is_private"] is True
    assert state["members"] == {cast.admin.id}


@pytest.mark.parametrize(
    ("actor", "status"),
    [
        (ANONYMOUS, 401),
        (MEMBER, 201),
        (TENANT_ADMIN, 201),
        (OTHER_TENANT_ADMIN, 401),
        (PLATFORM_ADMIN, 401),
    ],
)
def test_creating_a_public_room_answers_each_actor_as_the_contract_says(
    live_server, cast, actor, status
):
    slug = unique("room_")
    with as_actor(live_server, cast, actor) as client:
        response = client.post("/api/rooms/", json={"slug": slug})
    assert response.status_code == status, response.text
    assert (room_state(cast.tenant, slug) is not None) == (status == 201)


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
def test_listing_rooms_answers_each_actor_as_the_contract_says(live_server, cast, actor, status):
    with as_actor(live_server, cast, actor) as client:
        response = client.get("/api/rooms/")
    assert response.status_code == status
    if status == 200:
        assert all(set(room) == ROOM_FIELDS for room in assert_paginated(response))


def test_rooms_list_shows_a_private_room_only_to_its_members(live_server, cast):
    outsider = make_user_in(cast.tenant)
    insider = make_user_in(cast.tenant)
    public = create_room(live_server, cast)
    private = create_room(live_server, cast, is_private=True)
    add_member(live_server, cast, private, insider)

    assert {public, private} <= listed_slugs(live_server, insider).keys()
    outsider_sees = listed_slugs(live_server, outsider)
    assert public in outsider_sees
    assert private not in outsider_sees


def test_rooms_list_counts_unread_messages_per_user(live_server, cast):
    reader = make_user_in(cast.tenant)
    slug = create_room(live_server, cast)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        for n in range(3):
            sent = client.post(f"/api/rooms/{slug}/messages/", json={"message": f"m{n}"})
            assert sent.status_code == 201
    assert listed_slugs(live_server, reader)[slug]["unread_count"] == 3


def test_creating_a_room_with_a_taken_slug_is_400_naming_slug(live_server, cast):
    slug = create_room(live_server, cast)
    with as_actor(live_server, cast, MEMBER) as client:
        assert_field_error(client.post("/api/rooms/", json={"slug": slug}), "slug")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "has space"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({}, "slug"),
        ({"slug": "ok_slug", "name": "x" * 201}, "name"),
        ({"slug": "ok_slug", "is_private": "maybe"}, "is_private"),
    ],
    ids=["bad-slug", "long-slug", "no-slug", "long-name", "bad-is-private"],
)
def test_creating_a_room_with_a_bad_field_is_400_naming_it(live_server, cast, body, field):
    if body.get("slug") == "ok_slug":
        body = {**body, "slug": unique("room_")}
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        assert_field_error(client.post("/api/rooms/", json=body), field)


# --- changing and deleting rooms -------------------------------------------------------------


@pytest.mark.parametrize("actor", ACTORS)
def test_changing_a_room_answers_each_actor_as_the_contract_says(live_server, cast, actor):
    slug = create_room(live_server, cast)
    with as_actor(live_server, cast, actor) as client:
        response = client.patch(f"/api/rooms/{slug}/", json={"name": "Renamed"})
    expected = 200 if actor == TENANT_ADMIN else DENIED[actor]
    assert response.status_code == expected, response.text
    assert room_state(cast.tenant, slug)["name"] == ("Renamed" if expected == 200 else slug)
    if expected == 200:
        assert set(response.json()) == ROOM_FIELDS
        assert response.json()["name"] == "Renamed"


@pytest.mark.parametrize("actor", ACTORS)
def test_deleting_a_room_answers_each_actor_as_the_contract_says(live_server, cast, actor):
    slug = create_room(live_server, cast)
    with as_actor(live_server, cast, actor) as client:
        response = client.delete(f"/api/rooms/{slug}/")
    expected = 204 if actor == TENANT_ADMIN else DENIED[actor]
    assert response.status_code == expected, response.text
    assert (room_state(cast.tenant, slug) is None) == (expected == 204)


def test_admin_makes_a_public_room_private_and_back(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        public = client.patch(f"/api/rooms/{slug}/", json={"is_private": False})
        assert public.status_code == 200, public.text
        assert public.json()["is_private"] is False
        private = client.patch(f"/api/rooms/{slug}/", json={"is_private": True})
        assert private.status_code == 200, private.text
        assert private.json()["is_private"] is True
    assert slug not in listed_slugs(live_server, make_user_in(cast.tenant))


def test_admin_who_is_not_a_member_makes_a_public_room_private(live_server, cast):
    slug = create_room(live_server, cast)  # public: its creator is not a member
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        response = client.patch(f"/api/rooms/{slug}/", json={"is_private": True})
    assert room_state(cast.tenant, slug)["is_private"] is True  # the change is applied...
    assert response.status_code == 200, response.text  # ...and reported as such
    assert set(response.json()) == ROOM_FIELDS
    assert response.json()["is_private"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "x" * 201}, "name"), ({"is_private": "maybe"}, "is_private")],
    ids=["long-name", "bad-is-private"],
)
def test_changing_a_room_with_a_bad_field_is_400_naming_it_and_changes_nothing(
    live_server, cast, body, field
):
    slug = create_room(live_server, cast)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        assert_field_error(client.patch(f"/api/rooms/{slug}/", json=body), field)
    assert room_state(cast.tenant, slug) == {"name": slug, "is_private": False, "members": set()}


def test_changing_or_deleting_an_unknown_room_is_404(live_server, cast):
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        assert client.patch("/api/rooms/no_such_room_x/", json={"name": "x"}).status_code == 404
        assert client.delete("/api/rooms/no_such_room_x/").status_code == 404


async def test_deleting_a_room_closes_its_sockets_on_every_process_with_4403(
    live_server, server_factory, cast
):
    slug = create_room(live_server, cast)
    elsewhere = create_room(live_server, cast)
    second = server_factory()
    in_room = await open_room_socket(second, cast.member, slug)
    in_room_here = await open_room_socket(live_server, cast.member, slug)
    in_other_room = await open_room_socket(second, cast.member, elsewhere)
    try:
        with as_actor(live_server, cast, TENANT_ADMIN) as client:
            assert client.delete(f"/api/rooms/{slug}/").status_code == 204
        assert await close_code_within(in_room) == 4403
        assert await close_code_within(in_room_here) == 4403
        await assert_socket_open(in_other_room)
    finally:
        for ws in (in_room, in_room_here, in_other_room):
            await ws.close()
    with as_actor(live_server, cast, MEMBER) as client:
        assert client.get(f"/api/rooms/{slug}/").status_code == 404


# --- members ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberCall:
    method: str
    path: str  # `{slug}`: a private room; `{user_id}`: a member of it, made for the case
    ok: int
    changes: Callable[[set[int], int], bool]  # did an allowed call do its work?


MEMBER_CALLS = {
    "list": MemberCall("GET", "/api/rooms/{slug}/members/", 200, lambda m, u: u in m),
    "add": MemberCall("POST", "/api/rooms/{slug}/members/", 201, lambda m, u: u in m),
    "remove": MemberCall(
        "DELETE", "/api/rooms/{slug}/members/{user_id}/", 204, lambda m, u: u not in m
    ),
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("call", MEMBER_CALLS, ids=str)
def test_members_endpoints_answer_each_actor_as_the_contract_says(live_server, cast, call, actor):
    spec = MEMBER_CALLS[call]
    slug = create_room(live_server, cast, is_private=True)
    user = make_user_in(cast.tenant)
    if call != "add":
        add_member(live_server, cast, slug, user)
    before = room_state(cast.tenant, slug)["members"]
    with as_actor(live_server, cast, actor) as client:
        response = client.request(
            spec.method,
            spec.path.format(slug=slug, user_id=user.id),
            json={"user_id": user.id} if call == "add" else None,
        )
    expected = spec.ok if actor == TENANT_ADMIN else DENIED[actor]
    assert response.status_code == expected, response.text
    after = room_state(cast.tenant, slug)["members"]
    if actor == TENANT_ADMIN:
        assert spec.changes(after, user.id)
    else:
        assert after == before  # a refused call changed nothing


def test_members_list_is_paginated_and_names_each_member(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    member = make_user_in(cast.tenant)
    add_member(live_server, cast, slug, member)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        items = assert_paginated(client.get(f"/api/rooms/{slug}/members/"))
    assert all(set(item) == MEMBER_FIELDS for item in items)
    assert {(i["user_id"], i["username"]) for i in items} == {
        (cast.admin.id, cast.admin.username),
        (member.id, member.username),
    }


def test_adding_a_member_twice_is_200_and_keeps_one_membership(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    user = make_user_in(cast.tenant)
    add_member(live_server, cast, slug, user)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        again = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user.id})
        assert again.status_code == 200, again.text
        assert again.json()["user_id"] == user.id
        items = assert_paginated(client.get(f"/api/rooms/{slug}/members/"))
    assert [i["user_id"] for i in items].count(user.id) == 1


def test_added_member_sees_the_private_room_and_can_read_it(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    user = make_user_in(cast.tenant)
    with as_user(live_server, user) as client:
        assert client.get(f"/api/rooms/{slug}/messages/").status_code == 404
    add_member(live_server, cast, slug, user)
    with as_user(live_server, user) as client:
        assert client.get(f"/api/rooms/{slug}/").status_code == 200
        assert client.get(f"/api/rooms/{slug}/messages/").status_code == 200


@pytest.mark.parametrize(
    "user_id", [987654321, "abc", None, 0], ids=["unknown", "not-a-number", "null", "zero"]
)
def test_adding_a_bad_user_id_is_400_naming_user_id(live_server, cast, user_id):
    slug = create_room(live_server, cast, is_private=True)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        response = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user_id})
    assert_field_error(response, "user_id")
    assert room_state(cast.tenant, slug)["members"] == {cast.admin.id}


def test_adding_a_deactivated_user_is_400_naming_user_id(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    user = make_user_in(cast.tenant)
    set_user_active(user, False)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        response = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user.id})
    assert_field_error(response, "user_id")


def test_members_of_an_unknown_room_are_404(live_server, cast):
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        assert client.get("/api/rooms/no_such_room_x/members/").status_code == 404
        add = client.post("/api/rooms/no_such_room_x/members/", json={"user_id": cast.member.id})
        assert add.status_code == 404
        remove = client.delete(f"/api/rooms/no_such_room_x/members/{cast.member.id}/")
        assert remove.status_code == 404


def test_removing_someone_who_is_not_a_member_is_404(live_server, cast):
    slug = create_room(live_server, cast, is_private=True)
    with as_actor(live_server, cast, TENANT_ADMIN) as client:
        assert client.delete(f"/api/rooms/{slug}/members/{cast.member.id}/").status_code == 404


async def test_removing_a_member_closes_their_socket_in_that_room_on_another_process_only(
    live_server, server_factory, cast
):
    user = make_user_in(cast.tenant)
    neighbour = make_user_in(cast.tenant)
    slug = create_room(live_server, cast, is_private=True)
    other_private = create_room(live_server, cast, is_private=True)
    other_public = create_room(live_server, cast)
    for room in (slug, other_private):
        add_member(live_server, cast, room, user)
    add_member(live_server, cast, slug, neighbour)

    second = server_factory()
    token = tokens_for(user)["access"]
    in_room = await open_room_socket(second, user, slug, token=token)
    in_other_private = await open_room_socket(second, user, other_private, token=token)
    in_other_public = await open_room_socket(second, user, other_public, token=token)
    neighbour_in_room = await open_room_socket(second, neighbour, slug)
    try:
        with as_actor(live_server, cast, TENANT_ADMIN) as client:
            removed = client.delete(f"/api/rooms/{slug}/members/{user.id}/")
        assert removed.status_code == 204, removed.text

        assert await close_code_within(in_room) == 4403
        for still_open in (in_other_private, in_other_public, neighbour_in_room):
            await assert_socket_open(still_open)
    finally:
        for ws in (in_room, in_other_private, in_other_public, neighbour_in_room):
            await ws.close()

    # Removed means removed: no new socket, no history, no posting.
    assert await connect_close_code(second, user, slug, token) == 4403
    assert await connect_close_code(live_server, user, slug, token) == 4403
    with http(live_server, cast.tenant.domain, token) as client:
        assert client.get(f"/api/rooms/{slug}/messages/").status_code == 404
        posted = client.post(f"/api/rooms/{slug}/messages/", json={"message": "still here?"})
        assert posted.status_code == 404
        assert client.get(f"/api/rooms/{slug}/").status_code == 404
    assert slug not in listed_slugs(live_server, user)
    assert room_state(cast.tenant, slug)["members"] == {cast.admin.id, neighbour.id}
