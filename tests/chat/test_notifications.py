"""The per-user notifications socket `/ws/notifications/?token=` (PROTOCOL.md section 3): the
same auth, ping/pong, `auth` and rate limit as a room socket, and the events addressed to the
user from anywhere in the tenant, on every server process: `mention`, `room.added`,
`room.removed`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_helpers import http
from tests.conftest import LiveServer, UserInfo, make_user_in, set_user_active, tokens_for, unique
from tests.realtime_helpers import (
    Frame,
    Sockets,
    access_with_lifetime,
    claims,
    close_code,
    frames_until,
    listed_room,
    of_type,
    ping_pong,
    recv,
    say,
    send,
    types,
)
from tests.support import ws_connect

ROOM_FIELDS = {"slug", "name", "is_private", "created_at", "unread_count", "kind"}


def create_room(server: LiveServer, admin: UserInfo, *, is_private: bool) -> str:
    slug = unique("notif_")
    with http(server, admin.tenant.domain, tokens_for(admin)["access"]) as client:
        response = client.post("/api/rooms/", json={"slug": slug, "is_private": is_private})
    assert response.status_code == 201, response.text
    return slug


def add_member(server: LiveServer, admin: UserInfo, slug: str, user: UserInfo) -> None:
    with http(server, admin.tenant.domain, tokens_for(admin)["access"]) as client:
        response = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user.id})
    assert response.status_code == 201, response.text


def remove_member(server: LiveServer, admin: UserInfo, slug: str, user: UserInfo) -> None:
    with http(server, admin.tenant.domain, tokens_for(admin)["access"]) as client:
        response = client.delete(f"/api/rooms/{slug}/members/{user.id}/")
    assert response.status_code == 204, response.text


def post_message(server: LiveServer, user: UserInfo, slug: str, text: str) -> Frame:
    with http(server, user.tenant.domain, tokens_for(user)["access"]) as client:
        response = client.post(f"/api/rooms/{slug}/messages/", json={"message": text})
    assert response.status_code == 201, response.text
    return response.json()


async def mentions_until(ws: Any, stop_text: str) -> list[Frame]:
    """The `mention` frames up to and including the one whose message is `stop_text`."""
    frames = await frames_until(
        ws, lambda f: f.get("type") == "mention" and f["message"]["message"] == stop_text
    )
    return [f for f in frames if f.get("type") == "mention"]


# --- the socket itself -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "garbage", "refresh", "other_tenant"])
async def test_bad_token_on_the_notifications_socket_closes_4401(
    live_server, tenant_a, tenant_b, kind
):
    user = make_user_in(tenant_a)
    token = {
        "missing": "",
        "garbage": "not.a.jwt",
        "refresh": tokens_for(user)["refresh"],
        "other_tenant": tokens_for(make_user_in(tenant_b))["access"],
    }[kind]
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, f"/ws/notifications/?token={token}")
    try:
        assert await close_code(ws) == 4401
    finally:
        await ws.close()


async def test_notifications_socket_of_a_deactivated_user_closes_4401(live_server, tenant_a):
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    set_user_active(user, False)
    async with Sockets() as sockets:
        ws = await sockets.notifications(live_server, user, token=token)
        assert await close_code(ws) == 4401


async def test_notifications_socket_answers_ping_with_pong_and_auth_with_auth_ok(
    live_server, tenant_a
):
    user = make_user_in(tenant_a)
    fresh = access_with_lifetime(user, 5400)
    async with Sockets() as sockets:
        ws = await sockets.notifications(live_server, user)
        assert types(await ping_pong(ws)) == ["pong"]
        await send(ws, {"type": "auth", "token": fresh})
        assert await recv(ws) == {"type": "auth.ok", "exp": claims(fresh)["exp"]}


async def test_auth_with_another_users_token_on_the_notifications_socket_closes_4401(
    live_server, tenant_a
):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.notifications(live_server, user)
        await ping_pong(ws)
        await send(ws, {"type": "auth", "token": tokens_for(make_user_in(tenant_a))["access"]})
        assert await close_code(ws) == 4401


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "dance"},
        {"type": "message", "message": "hi"},
        {"message": "hi"},
        {"type": "typing"},
        {"type": 7},
    ],
    ids=["unknown", "message", "untyped-message", "typing", "number"],
)
async def test_unknown_frame_type_on_the_notifications_socket_is_unknown_type_and_not_fatal(
    live_server, tenant_a, frame
):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.notifications(live_server, user)
        await send(ws, frame)
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "unknown_type"), error
        await ping_pong(ws)


async def test_notifications_socket_is_rate_limited(live_server, tenant_a):
    user = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.notifications(live_server, user)
        for _ in range(40):
            await send(ws, {"type": "ping"})
        replies = [await recv(ws) for _ in range(40)]
    pongs = [r for r in replies if r["type"] == "pong"]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert len(pongs) + len(limited) == 40, replies
    assert 20 <= len(pongs) < 40  # a burst of 20, then 10 a second
    assert limited and all(r["retry_after"] > 0 for r in limited), limited


# --- mentions --------------------------------------------------------------------------------


async def test_mention_in_a_public_room_reaches_the_named_users_notifications_on_another_process(
    live_server, server_factory, tenant_a
):
    other_process = server_factory()
    author, named, bystander = (make_user_in(tenant_a) for _ in range(3))
    slug = unique("notif_")
    async with Sockets() as sockets:
        named_inbox = await sockets.notifications(other_process, named)
        bystander_inbox = await sockets.notifications(other_process, bystander)
        room = await sockets.room(live_server, author, slug)
        await ping_pong(named_inbox)

        sent = await say(room, f"hey @{named.username}, look")
        mention = (await frames_until(named_inbox, of_type("mention")))[-1]
        assert mention == {"type": "mention", "room": slug, "message": sent}

        # The bystander was not named: a later mention of them is the first thing they get.
        fence = await say(room, f"and @{bystander.username}")
        assert await mentions_until(bystander_inbox, fence["message"]) == [
            {"type": "mention", "room": slug, "message": fence}
        ]


async def test_mention_over_rest_reaches_the_named_users_notifications(live_server, tenant_a):
    author, named = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("notif_")
    async with Sockets() as sockets:
        room = await sockets.room(live_server, author, slug)
        await ping_pong(room)  # the room exists now
        inbox = await sockets.notifications(live_server, named)
        await ping_pong(inbox)
        sent = post_message(live_server, author, slug, f"@{named.username} over REST")
        mention = (await frames_until(inbox, of_type("mention")))[-1]
    assert mention == {"type": "mention", "room": slug, "message": sent}


async def test_self_mention_does_not_notify_the_author(live_server, tenant_a):
    author, friend = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("notif_")
    async with Sockets() as sockets:
        inbox = await sockets.notifications(live_server, author)
        room = await sockets.room(live_server, author, slug)
        friend_room = await sockets.room(live_server, friend, slug)
        await ping_pong(inbox)

        await say(room, f"note to self @{author.username}")
        # Once the next message is echoed, the first one's notifications went out.
        await say(room, "next")
        fence = await say(friend_room, f"@{author.username} ping from a friend")
        mentions = await mentions_until(inbox, fence["message"])
    assert [m["message"]["user"] for m in mentions] == [friend.username], mentions


async def test_mention_in_a_private_room_reaches_members_only(live_server, tenant_a):
    admin = make_user_in(tenant_a, is_admin=True)
    member, outsider = make_user_in(tenant_a), make_user_in(tenant_a)
    private = create_room(live_server, admin, is_private=True)
    public = create_room(live_server, admin, is_private=False)
    add_member(live_server, admin, private, member)
    async with Sockets() as sockets:
        member_inbox = await sockets.notifications(live_server, member)
        outsider_inbox = await sockets.notifications(live_server, outsider)
        private_room = await sockets.room(live_server, admin, private)
        public_room = await sockets.room(live_server, admin, public)
        for ws in (member_inbox, outsider_inbox):
            await ping_pong(ws)

        secret = await say(private_room, f"@{member.username} @{outsider.username} secret plan")
        member_mention = (await frames_until(member_inbox, of_type("mention")))[-1]
        assert member_mention == {"type": "mention", "room": private, "message": secret}
        await say(private_room, "next")  # the secret's notifications have all gone out

        fence = await say(public_room, f"@{outsider.username} public hello")
        mentions = await mentions_until(outsider_inbox, fence["message"])
    assert [m["room"] for m in mentions] == [public], mentions


# --- room.added / room.removed ---------------------------------------------------------------


async def test_adding_and_removing_a_member_over_rest_notifies_them_on_another_process(
    live_server, server_factory, tenant_a
):
    other_process = server_factory()
    admin, user = make_user_in(tenant_a, is_admin=True), make_user_in(tenant_a)
    slug = create_room(live_server, admin, is_private=True)
    for n in range(2):
        post_message(live_server, admin, slug, f"before you came {n}")
    async with Sockets() as sockets:
        inbox = await sockets.notifications(other_process, user)
        await ping_pong(inbox)

        add_member(live_server, admin, slug, user)
        added = (await frames_until(inbox, of_type("room.added")))[-1]
        assert set(added) == {"type", "room"}
        assert set(added["room"]) == ROOM_FIELDS
        assert added["room"]["slug"] == slug
        assert added["room"]["is_private"] is True
        assert added["room"]["unread_count"] == 2
        # The same room object the REST room list shows the new member.
        assert added["room"] == listed_room(live_server, user, slug)

        remove_member(live_server, admin, slug, user)
        removed = (await frames_until(inbox, of_type("room.removed")))[-1]
        assert removed == {"type": "room.removed", "room": slug}


async def test_adding_an_existing_member_again_sends_no_second_room_added(live_server, tenant_a):
    admin, user = make_user_in(tenant_a, is_admin=True), make_user_in(tenant_a)
    slug = create_room(live_server, admin, is_private=True)
    later = create_room(live_server, admin, is_private=True)
    async with Sockets() as sockets:
        inbox = await sockets.notifications(live_server, user)
        await ping_pong(inbox)
        add_member(live_server, admin, slug, user)
        with http(live_server, tenant_a.domain, tokens_for(admin)["access"]) as client:
            again = client.post(f"/api/rooms/{slug}/members/", json={"user_id": user.id})
        assert again.status_code == 200, again.text
        add_member(live_server, admin, later, user)  # the fence
        frames = await frames_until(
            inbox, lambda f: f.get("type") == "room.added" and f["room"]["slug"] == later
        )
    assert [f["room"]["slug"] for f in frames if f["type"] == "room.added"] == [slug, later]


async def test_room_added_unread_count_counts_from_the_users_read_marker_when_re_added(
    live_server, tenant_a
):
    admin, user = make_user_in(tenant_a, is_admin=True), make_user_in(tenant_a)
    slug = create_room(live_server, admin, is_private=True)
    for n in range(3):
        post_message(live_server, admin, slug, f"read by the user {n}")
    add_member(live_server, admin, slug, user)
    async with Sockets() as sockets:
        room = await sockets.room(live_server, user, slug)
        await send(room, {"type": "read", "seq": 3})
        await frames_until(room, of_type("message.read"))
    post_message(live_server, admin, slug, "unread by the user")
    remove_member(live_server, admin, slug, user)

    async with Sockets() as sockets:
        inbox = await sockets.notifications(live_server, user)
        await ping_pong(inbox)
        add_member(live_server, admin, slug, user)
        added = (await frames_until(inbox, of_type("room.added")))[-1]
    listed = listed_room(live_server, user, slug)
    assert listed is not None and listed["unread_count"] == 1
    assert added["room"] == listed
