"""Authorization is live (PROTOCOL.md section 3): a socket loses the rights the database no
longer gives it, within 5 s through the kick a service sends, and within the safety-net
interval when that kick was lost (the row changed behind the services' back).

Two real uvicorn processes serve this module: one with the periodic re-check off (so a pass
of the safety net cannot be what closed a socket in the kick tests), one re-checking every
second (the lost-kick tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api_helpers import KICK_TIMEOUT, assert_socket_open, close_code_within, http
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    make_user_in,
    set_user_active,
    start_server,
    tokens_for,
    unique,
)
from tests.realtime_helpers import (
    SAFETY_NET_TIMEOUT,
    Sockets,
    frames_until,
    in_tenant,
    rest_history,
    say,
    send,
    start_safety_net,
)


@pytest.fixture(scope="module")
def kicks_only(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Any]:
    server = start_server(tmp_path_factory.mktemp("kicks"), WS_AUTH_RECHECK_INTERVAL="0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def safety_net(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Any]:
    server = start_safety_net(tmp_path_factory.mktemp("net"))
    yield server
    server.stop()


def as_user(server: LiveServer, user: UserInfo) -> Any:
    return http(server, user.tenant.domain, tokens_for(user)["access"])


def private_room_with(server: LiveServer, admin: UserInfo, *members: UserInfo) -> str:
    """A public room (created by joining it) that `members` are already members of."""
    slug = unique("authz_")
    with as_user(server, admin) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
        for member in members:
            response = client.post(f"/api/rooms/{slug}/members/", json={"user_id": member.id})
            assert response.status_code == 201, response.text
    return slug


def make_private_in_database(tenant: TenantInfo, slug: str) -> None:
    """The lost kick: the row changes, no service runs, no event goes out."""
    from chat.models import Room

    assert in_tenant(tenant, lambda: Room.objects.filter(slug=slug).update(is_private=True)) == 1


def delete_in_database(tenant: TenantInfo, slug: str) -> None:
    from chat.models import Room

    in_tenant(tenant, lambda: Room.objects.filter(slug=slug).delete())


def set_user_admin(user: UserInfo, is_admin: bool) -> None:
    from django.contrib.auth import get_user_model

    in_tenant(
        user.tenant,
        lambda: get_user_model().objects.filter(pk=user.id).update(is_staff=is_admin),
    )


async def edit_answer(ws: Any, message_id: int) -> dict[str, Any]:
    """Send an edit; the first answer to it (an error, or the room's edited frame)."""
    await send(ws, {"type": "edit", "id": message_id, "message": unique("edited-")})
    frames = await frames_until(ws, lambda f: f.get("type") in ("error", "chat.message.edited"))
    return frames[-1]


# --- a room made private ----------------------------------------------------------------------


async def test_room_made_private_closes_its_non_members_4403_within_5s_and_keeps_its_members(
    kicks_only, tenant_a
):
    admin = make_user_in(tenant_a, is_admin=True)
    member, outsider, other_outsider = (make_user_in(tenant_a) for _ in range(3))
    slug = private_room_with(kicks_only, admin, member)
    async with Sockets() as sockets:
        member_ws = await sockets.room(kicks_only, member, slug)
        outsiders = [
            await sockets.room(kicks_only, user, slug) for user in (outsider, other_outsider)
        ]
        for ws in (member_ws, *outsiders):
            await assert_socket_open(ws)
        with as_user(kicks_only, admin) as client:
            response = client.patch(f"/api/rooms/{slug}/", json={"is_private": True})
        assert response.status_code == 200, response.text
        for ws in outsiders:
            assert await close_code_within(ws, KICK_TIMEOUT) == 4403
        await assert_socket_open(member_ws)
        await say(member_ws)


async def test_room_made_private_behind_the_services_back_closes_non_members_within_the_interval(
    safety_net, tenant_a
):
    admin = make_user_in(tenant_a, is_admin=True)
    member, outsider = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = private_room_with(safety_net, admin, member)
    async with Sockets() as sockets:
        member_ws = await sockets.room(safety_net, member, slug)
        outsider_ws = await sockets.room(safety_net, outsider, slug)
        await assert_socket_open(outsider_ws)
        make_private_in_database(tenant_a, slug)
        assert await close_code_within(outsider_ws, SAFETY_NET_TIMEOUT) == 4403
        await assert_socket_open(member_ws)


# --- a demoted admin --------------------------------------------------------------------------


async def test_demoted_admin_can_no_longer_edit_someone_elses_message_on_an_open_socket(
    kicks_only, tenant_a
):
    boss = make_user_in(tenant_a, is_admin=True)
    demoted = make_user_in(tenant_a, is_admin=True)
    author = make_user_in(tenant_a)
    slug = unique("demote_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(kicks_only, author, slug)
        admin_ws = await sockets.room(kicks_only, demoted, slug)
        message = await say(author_ws)
        assert (await edit_answer(admin_ws, message["id"]))["type"] == "chat.message.edited"

        with as_user(kicks_only, boss) as client:
            response = client.patch(f"/api/users/{demoted.id}/", json={"is_admin": False})
        assert response.status_code == 200, response.text
        answer = await edit_answer(admin_ws, message["id"])
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
        await assert_socket_open(admin_ws)


async def test_admin_demoted_in_the_database_only_is_refused_edits_and_deletes_at_once(
    kicks_only, tenant_a
):
    demoted = make_user_in(tenant_a, is_admin=True)
    author = make_user_in(tenant_a)
    slug = unique("demote_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(kicks_only, author, slug)
        admin_ws = await sockets.room(kicks_only, demoted, slug)
        message = await say(author_ws)
        set_user_admin(demoted, False)
        answer = await edit_answer(admin_ws, message["id"])
        assert answer["type"] == "error" and answer["code"] == "forbidden", answer
        await send(admin_ws, {"type": "delete", "id": message["id"]})
        frames = await frames_until(
            admin_ws, lambda f: f.get("type") in ("error", "chat.message.deleted")
        )
        assert frames[-1].get("code") == "forbidden", frames[-1]
    history = rest_history(kicks_only, author, slug)
    assert [m["message"] for m in history] == [message["message"]]


# --- a deactivated user -----------------------------------------------------------------------


async def test_user_deactivated_in_the_database_is_closed_4401_at_next_message_not_stored(
    kicks_only, tenant_a
):
    user, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("deact_")
    token = tokens_for(user)["access"]
    async with Sockets() as sockets:
        ws = await sockets.room(kicks_only, user, slug, token=token)
        await say(ws)
        set_user_active(user, False)
        text = unique("after-")
        await send(ws, {"type": "message", "message": text})
        assert await close_code_within(ws, KICK_TIMEOUT) == 4401
    assert text not in [m["message"] for m in rest_history(kicks_only, reader, slug)]
    with http(kicks_only, tenant_a.domain, token) as client:
        response = client.post(f"/api/rooms/{slug}/messages/", json={"message": "rest"})
    assert response.status_code == 401, response.text
    assert "rest" not in [m["message"] for m in rest_history(kicks_only, reader, slug)]


async def test_user_deactivated_in_the_database_is_closed_4401_within_the_interval_while_idle(
    safety_net, tenant_a
):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        room_ws = await sockets.room(safety_net, user, unique("deact_"))
        notes_ws = await sockets.notifications(safety_net, user)
        await assert_socket_open(room_ws)
        await assert_socket_open(notes_ws)
        set_user_active(user, False)
        assert await close_code_within(room_ws, SAFETY_NET_TIMEOUT) == 4401
        assert await close_code_within(notes_ws, SAFETY_NET_TIMEOUT) == 4401


# --- a deleted room ----------------------------------------------------------------------------


async def test_room_deleted_in_the_database_closes_its_sockets_4403_within_the_interval(
    safety_net, tenant_a
):
    user = make_user_in(tenant_a)
    slug, elsewhere = unique("gone_"), unique("stays_")
    async with Sockets() as sockets:
        ws = await sockets.room(safety_net, user, slug)
        other_ws = await sockets.room(safety_net, user, elsewhere)
        await assert_socket_open(ws)
        delete_in_database(tenant_a, slug)
        assert await close_code_within(ws, SAFETY_NET_TIMEOUT) == 4403
        await assert_socket_open(other_ws)


async def test_member_removed_in_the_database_is_closed_4403_within_the_interval(
    safety_net, tenant_a
):
    from chat.models import Membership

    admin = make_user_in(tenant_a, is_admin=True)
    member, stays = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = private_room_with(safety_net, admin, member, stays)
    with as_user(safety_net, admin) as client:
        assert client.patch(f"/api/rooms/{slug}/", json={"is_private": True}).status_code == 200
    async with Sockets() as sockets:
        ws = await sockets.room(safety_net, member, slug)
        stays_ws = await sockets.room(safety_net, stays, slug)
        await assert_socket_open(ws)
        in_tenant(
            tenant_a,
            lambda: Membership.objects.filter(room__slug=slug, user_id=member.id).delete(),
        )
        assert await close_code_within(ws, SAFETY_NET_TIMEOUT) == 4403
        await assert_socket_open(stays_ws)


# --- the `auth` frame ---------------------------------------------------------------------------


async def test_auth_frame_after_a_lost_kick_closes_the_socket_4403_instead_of_auth_ok(
    kicks_only, tenant_a
):
    admin = make_user_in(tenant_a, is_admin=True)
    outsider = make_user_in(tenant_a)
    slug = private_room_with(kicks_only, admin)
    async with Sockets() as sockets:
        ws = await sockets.room(kicks_only, outsider, slug)
        await assert_socket_open(ws)
        make_private_in_database(tenant_a, slug)
        await assert_socket_open(ws)  # nobody told it: the re-check is off on this server
        await send(ws, {"type": "auth", "token": tokens_for(outsider)["access"]})
        assert await close_code_within(ws, KICK_TIMEOUT) == 4403


# --- the cost of the safety net ---------------------------------------------------------------


def test_recheck_of_a_tenants_sockets_costs_the_same_few_queries_for_3_or_60_sockets(tenant_a):
    from chat.authz import tenant_state
    from chat.models import Membership, Room
    from tenants.context import run_in_schema

    def sockets_of(count: int) -> tuple[list[int], list[int]]:
        users = [make_user_in(tenant_a).id for _ in range(count)]

        def rooms() -> list[int]:
            made = [
                Room.objects.create(slug=unique("cost_"), is_private=n % 2 == 0)
                for n in range(count)
            ]
            Membership.objects.bulk_create(
                [Membership(room=room, user_id=uid) for room, uid in zip(made, users, strict=True)]
            )
            return [room.pk for room in made]

        return users, in_tenant(tenant_a, rooms)

    counts = []
    for size in (3, 60):
        users, rooms = sockets_of(size)
        with CaptureQueriesContext(connection) as queries:
            state = run_in_schema(
                tenant_a.schema_name, tenant_state, tenant_a.schema_name, users, rooms
            )
        assert set(state.users) == set(users) and set(state.rooms) == set(rooms)
        pairs = zip(users, rooms, strict=True)
        assert all(state.close_code(uid, rid) is None for uid, rid in pairs)
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] <= 5, counts
