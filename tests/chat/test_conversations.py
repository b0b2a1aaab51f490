"""Direct messages, threads and reactions (PROTOCOL.md section 6) on a real uvicorn server,
over REST and WebSocket, with the concurrency cases that the database must settle: two
users opening their DM at the same moment, replies and reactions racing on one message.
Every refused request or frame is answered (400 naming the field, 404, or an error frame)
and changes nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.api_helpers import assert_field_error, assert_paginated, http
from tests.conftest import LiveServer, TenantInfo, UserInfo, make_user_in, tokens_for, unique
from tests.realtime_helpers import (
    Sockets,
    assert_refused,
    close_code,
    fence,
    frames_until,
    in_tenant,
    of_type,
    ping_pong,
    rest_history,
    say,
    send,
    types,
)

MISSING = object()


def client(server: LiveServer, user: UserInfo) -> Any:
    return http(server, user.tenant.domain, tokens_for(user)["access"])


def open_dm(server: LiveServer, user: UserInfo, **body: Any) -> Any:
    with client(server, user) as c:
        return c.post("/api/dms/", json=body)


def room_row(tenant: TenantInfo, slug: str) -> dict[str, Any] | None:
    from chat.models import Room

    return in_tenant(
        tenant, lambda: Room.objects.filter(slug=slug).values("last_seq", "kind").first()
    )


def message_row(tenant: TenantInfo, message_id: int) -> dict[str, Any] | None:
    from chat.models import Message

    return in_tenant(
        tenant,
        lambda: (
            Message.objects.filter(pk=message_id)
            .values("reply_count", "reactions", "parent_id", "deleted_at")
            .first()
        ),
    )


# --- direct messages -------------------------------------------------------------------------


def test_a_dm_is_made_once_and_both_users_get_the_same_private_room(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    first = open_dm(live_server, alice, user_id=bob.id)
    assert first.status_code == 201, first.text
    room = first.json()
    assert room["kind"] == "dm" and room["is_private"] is True
    assert {alice.username, bob.username} == set(room["name"].split(", "))
    again = open_dm(live_server, alice, user_id=bob.id)
    assert again.status_code == 200 and again.json()["slug"] == room["slug"]
    by_name = open_dm(live_server, bob, username=alice.username)
    assert by_name.status_code == 200 and by_name.json()["slug"] == room["slug"]

    with client(live_server, bob) as c:
        listed = {
            r["slug"]: r for r in assert_paginated(c.get("/api/rooms/", params={"page_size": 200}))
        }
        assert listed[room["slug"]]["kind"] == "dm"
        plain = c.post("/api/rooms/", json={"slug": unique("plain_")}).json()
        assert plain["kind"] == "room"


def test_both_users_opening_their_dm_at_the_same_moment_make_one_room(live_server, tenant_a):
    from chat.models import Membership, Room

    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    calls = [(alice, bob), (bob, alice)] * 6
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(
            pool.map(lambda pair: open_dm(live_server, pair[0], user_id=pair[1].id), calls)
        )
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert [a.status_code for a in answers].count(201) == 1
    assert len({a.json()["slug"] for a in answers}) == 1
    key = f"{min(alice.id, bob.id)}:{max(alice.id, bob.id)}"
    rooms = in_tenant(
        tenant_a, lambda: list(Room.objects.filter(dm_key=key).values_list("pk", flat=True))
    )
    assert len(rooms) == 1
    members = in_tenant(
        tenant_a,
        lambda: sorted(
            Membership.objects.filter(room_id=rooms[0]).values_list("user_id", flat=True)
        ),
    )
    assert members == sorted([alice.id, bob.id])


async def test_a_dm_carries_messages_and_unread_counts_and_keeps_others_out(live_server, tenant_a):
    alice, bob, eve = (make_user_in(tenant_a) for _ in range(3))
    slug = open_dm(live_server, alice, user_id=bob.id).json()["slug"]
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        for _ in range(3):
            await say(ws)
        outsider = await sockets.room(live_server, eve, slug)
        assert await close_code(outsider) == 4403
    with client(live_server, bob) as c:
        listed = {
            r["slug"]: r for r in assert_paginated(c.get("/api/rooms/", params={"page_size": 200}))
        }
    assert listed[slug]["unread_count"] == 3
    with client(live_server, eve) as c:
        assert c.get(f"/api/rooms/{slug}/messages/").status_code == 404
        slugs = {
            r["slug"] for r in assert_paginated(c.get("/api/rooms/", params={"page_size": 200}))
        }
    assert slug not in slugs


async def test_the_other_user_hears_room_added_when_a_dm_is_opened(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    async with Sockets() as sockets:
        notes = await sockets.notifications(live_server, bob)
        await ping_pong(notes)
        slug = open_dm(live_server, alice, user_id=bob.id).json()["slug"]
        added = (await frames_until(notes, of_type("room.added")))[-1]
    assert added["room"]["slug"] == slug and added["room"]["kind"] == "dm"


def test_nobody_is_added_to_or_removed_from_a_dm_and_it_stays_private(live_server, tenant_a):
    from chat.models import Membership

    alice, bob, eve = (make_user_in(tenant_a) for _ in range(3))
    admin = make_user_in(tenant_a, is_admin=True)
    slug = open_dm(live_server, alice, user_id=bob.id).json()["slug"]
    with client(live_server, admin) as c:
        assert c.post(f"/api/rooms/{slug}/members/", json={"user_id": eve.id}).status_code == 400
        assert c.delete(f"/api/rooms/{slug}/members/{bob.id}/").status_code == 400
        assert_field_error(c.patch(f"/api/rooms/{slug}/", json={"is_private": False}), "is_private")
    members = in_tenant(
        tenant_a,
        lambda: sorted(
            Membership.objects.filter(room__slug=slug).values_list("user_id", flat=True)
        ),
    )
    assert members == sorted([alice.id, bob.id])
    assert room_row(tenant_a, slug) is not None


async def test_dm_slugs_are_reserved_a_join_or_a_room_create_never_makes_one(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug = f"dm-{alice.id}-{10**9}"
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        assert await close_code(ws) == 4403
    with client(live_server, alice) as c:
        assert_field_error(c.post("/api/rooms/", json={"slug": slug}), "slug")
    assert room_row(tenant_a, slug) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": "7"}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": 0}, "user_id"),
        ({"user_id": 10**12}, "user_id"),
        ({"user_id": 2**70}, "user_id"),
        ({"username": 7}, "username"),
        ({"username": "nobody-" + "x" * 20}, "username"),
        ({"user_id": 1, "username": "x"}, "user_id"),
    ],
    ids=[
        "empty",
        "string",
        "bool",
        "zero",
        "unknown",
        "huge",
        "username-int",
        "unknown-name",
        "both",
    ],
)
def test_bad_dm_requests_are_400_naming_the_field_and_make_nothing(
    live_server, tenant_a, body, field
):
    from chat.models import Room

    alice = make_user_in(tenant_a)
    before = in_tenant(tenant_a, lambda: Room.objects.filter(kind="dm").count())
    assert_field_error(open_dm(live_server, alice, **body), field)
    assert in_tenant(tenant_a, lambda: Room.objects.filter(kind="dm").count()) == before


def test_a_dm_with_oneself_a_deactivated_user_or_another_tenants_user_is_refused(
    live_server, tenant_a, tenant_b
):
    from django.contrib.auth import get_user_model

    alice, gone = make_user_in(tenant_a), make_user_in(tenant_a)
    foreign = make_user_in(tenant_b)
    in_tenant(tenant_a, lambda: get_user_model().objects.filter(pk=gone.id).update(is_active=False))
    assert_field_error(open_dm(live_server, alice, user_id=alice.id), "user_id")
    assert_field_error(open_dm(live_server, alice, user_id=gone.id), "user_id")
    assert_field_error(open_dm(live_server, alice, username=foreign.username), "username")


# --- threads ----------------------------------------------------------------------------------


async def test_a_reply_carries_its_parent_and_the_root_counts_it(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("thread_")
    async with Sockets() as sockets:
        alice_ws = await sockets.room(live_server, alice, slug)
        bob_ws = await sockets.room(live_server, bob, slug)
        root = await say(alice_ws, "root")
        assert root["parent_id"] is None and root["reply_count"] == 0
        await send(bob_ws, {"type": "message", "message": "first reply", "parent_id": root["id"]})
        reply = (await frames_until(alice_ws, of_type("chat.message")))[-1]
        assert reply["parent_id"] == root["id"] and "reply_count" not in reply
        assert reply["seq"] == root["seq"] + 1
        # A reply to a reply joins the root's thread.
        await send(alice_ws, {"type": "message", "message": "nested", "parent_id": reply["id"]})
        nested = (await frames_until(bob_ws, lambda f: f.get("message") == "nested"))[-1]
        assert nested["parent_id"] == root["id"]

    history = {m["id"]: m for m in rest_history(live_server, alice, slug)}
    assert history[root["id"]]["reply_count"] == 2
    assert history[reply["id"]]["parent_id"] == root["id"]
    with client(live_server, bob) as c:
        replies = c.get(f"/api/rooms/{slug}/messages/{root['id']}/replies/").json()
        assert [m["id"] for m in replies] == [reply["id"], nested["id"]]
        after = c.get(
            f"/api/rooms/{slug}/messages/{root['id']}/replies/", params={"after": reply["seq"]}
        ).json()
        assert [m["id"] for m in after] == [nested["id"]]
        assert c.get(f"/api/rooms/{slug}/messages/{reply['id']}/replies/").status_code == 404


async def test_resume_replays_replies_with_their_parent(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug = unique("thread_")
    with client(live_server, alice) as c:
        root = c.post(f"/api/rooms/{slug}/messages/", json={"message": "x"})
        assert root.status_code == 404  # the room does not exist yet over REST
        c.post("/api/rooms/", json={"slug": slug})
        root = c.post(f"/api/rooms/{slug}/messages/", json={"message": "root"}).json()
        made = [
            c.post(
                f"/api/rooms/{slug}/messages/", json={"message": f"r{i}", "parent_id": root["id"]}
            )
            for i in range(3)
        ]
    assert all(r.status_code == 201 for r in made)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug, since=root["seq"])
        frames = await frames_until(ws, of_type("resume.done"))
    replayed = [f for f in frames if f["type"] == "chat.message"]
    assert [f["message"] for f in replayed] == ["r0", "r1", "r2"]
    assert all(f["parent_id"] == root["id"] for f in replayed)


def test_concurrent_replies_are_counted_exactly(live_server, tenant_a):
    users = [make_user_in(tenant_a) for _ in range(8)]
    slug = unique("thread_")
    with client(live_server, users[0]) as c:
        c.post("/api/rooms/", json={"slug": slug})
        root = c.post(f"/api/rooms/{slug}/messages/", json={"message": "root"}).json()

    def reply(user: UserInfo) -> list[int]:
        with client(live_server, user) as c:
            return [
                c.post(
                    f"/api/rooms/{slug}/messages/",
                    json={"message": unique("r-"), "parent_id": root["id"]},
                ).status_code
                for _ in range(5)
            ]

    with ThreadPoolExecutor(len(users)) as pool:
        codes = [code for batch in pool.map(reply, users) for code in batch]
    assert codes == [201] * 40
    assert message_row(tenant_a, root["id"])["reply_count"] == 40
    with client(live_server, users[1]) as c:
        replies = c.get(
            f"/api/rooms/{slug}/messages/{root['id']}/replies/", params={"limit": 200}
        ).json()
    assert len(replies) == 40
    assert [r["seq"] for r in replies] == sorted(r["seq"] for r in replies)


async def test_deleting_a_reply_uncounts_it_and_the_room_learns_its_root(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("thread_")
    async with Sockets() as sockets:
        alice_ws = await sockets.room(live_server, alice, slug)
        bob_ws = await sockets.room(live_server, bob, slug)
        root = await say(alice_ws, "root")
        await send(alice_ws, {"type": "message", "message": "oops", "parent_id": root["id"]})
        reply = (await frames_until(alice_ws, lambda f: f.get("message") == "oops"))[-1]
        await send(alice_ws, {"type": "delete", "id": reply["id"]})
        deleted = (await frames_until(bob_ws, of_type("chat.message.deleted")))[-1]
    assert deleted == {
        "type": "chat.message.deleted",
        "id": reply["id"],
        "seq": reply["seq"],
        "room": slug,
        "parent_id": root["id"],
    }
    assert message_row(tenant_a, root["id"])["reply_count"] == 0


@pytest.mark.parametrize(
    "parent",
    ["7", True, 1.5, 0, -3, [1], 2**63],
    ids=["string", "bool", "float", "zero", "negative", "list", "huge"],
)
async def test_a_bad_parent_id_is_invalid_frame_and_stores_nothing(live_server, tenant_a, parent):
    alice = make_user_in(tenant_a)
    slug = unique("thread_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        await say(ws)
        await assert_refused(
            ws, {"type": "message", "message": "x", "parent_id": parent}, "invalid_frame"
        )
    with client(live_server, alice) as c:
        response = c.post(
            f"/api/rooms/{slug}/messages/", json={"message": "x", "parent_id": parent}
        )
    assert_field_error(response, "parent_id")
    assert room_row(tenant_a, slug)["last_seq"] == 1


async def test_a_parent_of_another_room_or_tenant_or_a_deleted_one_is_not_found(
    live_server, tenant_a, tenant_b
):
    alice = make_user_in(tenant_a)
    foreign = make_user_in(tenant_b)
    slug, other = unique("thread_"), unique("thread_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        other_ws = await sockets.room(live_server, alice, other)
        foreign_ws = await sockets.room(live_server, foreign, slug)
        elsewhere = await say(other_ws)
        gone = await say(ws)
        foreign_msg = await say(foreign_ws)
        await send(ws, {"type": "delete", "id": gone["id"]})
        await frames_until(ws, of_type("chat.message.deleted"))
        for parent in (elsewhere["id"], gone["id"], 10**15):
            await assert_refused(
                ws, {"type": "message", "message": "x", "parent_id": parent}, "not_found"
            )
        await assert_refused(
            foreign_ws,
            {"type": "message", "message": "x", "parent_id": gone["id"]},
            "not_found",
        )
        with client(live_server, alice) as c:
            response = c.post(
                f"/api/rooms/{slug}/messages/", json={"message": "x", "parent_id": elsewhere["id"]}
            )
        assert_field_error(response, "parent_id")
    assert room_row(tenant_a, slug)["last_seq"] == 1
    assert room_row(tenant_b, slug)["last_seq"] == 1
    assert foreign_msg["room"] == slug


def test_replies_of_unknown_or_foreign_messages_are_404(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug, other = unique("thread_"), unique("thread_")
    with client(live_server, alice) as c:
        for s in (slug, other):
            c.post("/api/rooms/", json={"slug": s})
        elsewhere = c.post(f"/api/rooms/{other}/messages/", json={"message": "x"}).json()
        assert c.get(f"/api/rooms/{slug}/messages/{elsewhere['id']}/replies/").status_code == 404
        assert c.get(f"/api/rooms/{slug}/messages/999999999/replies/").status_code == 404
        bad = c.get(f"/api/rooms/{other}/messages/{elsewhere['id']}/replies/", params={"after": -1})
        assert_field_error(bad, "after")


# --- reactions --------------------------------------------------------------------------------


async def test_reactions_reach_the_room_with_counts_and_are_idempotent(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("react_")
    async with Sockets() as sockets:
        alice_ws = await sockets.room(live_server, alice, slug)
        bob_ws = await sockets.room(live_server, bob, slug)
        message = await say(alice_ws)
        await frames_until(bob_ws, of_type("chat.message"))
        await send(bob_ws, {"type": "react", "id": message["id"], "emoji": "+1"})
        seen = [(await frames_until(ws, of_type("chat.reaction")))[-1] for ws in (alice_ws, bob_ws)]
        assert (
            seen[0]
            == seen[1]
            == {
                "type": "chat.reaction",
                "id": message["id"],
                "seq": message["seq"],
                "room": slug,
                "user": bob.username,
                "emoji": "+1",
                "op": "add",
                "counts": {"+1": 1},
            }
        )
        await send(alice_ws, {"type": "react", "id": message["id"], "emoji": "+1"})
        for ws in (alice_ws, bob_ws):
            await frames_until(ws, of_type("chat.reaction"))
        # Again: a no-op, answered to the sender only.
        await send(bob_ws, {"type": "react", "id": message["id"], "emoji": "+1"})
        again = (await frames_until(bob_ws, of_type("chat.reaction")))[-1]
        assert again["counts"] == {"+1": 2}
        _, observed = await fence(bob_ws, alice_ws)
        assert "chat.reaction" not in types(observed)
        await send(bob_ws, {"type": "unreact", "id": message["id"], "emoji": "+1"})
        removed = (await frames_until(alice_ws, of_type("chat.reaction")))[-1]
        assert removed["op"] == "remove" and removed["counts"] == {"+1": 1}
        await send(alice_ws, {"type": "react", "id": message["id"], "emoji": "🎉"})
        await frames_until(alice_ws, of_type("chat.reaction"))

    history = {m["id"]: m for m in rest_history(live_server, bob, slug)}
    assert history[message["id"]]["reactions"] == {"+1": 1, "🎉": 1}
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, bob, slug, since=0)
        replayed = [
            f
            for f in await frames_until(ws, of_type("resume.done"))
            if f.get("id") == message["id"]
        ]
    assert replayed[0]["reactions"] == {"+1": 1, "🎉": 1}


def test_concurrent_reactions_over_rest_are_counted_exactly(live_server, tenant_a):
    users = [make_user_in(tenant_a) for _ in range(10)]
    slug = unique("react_")
    with client(live_server, users[0]) as c:
        c.post("/api/rooms/", json={"slug": slug})
        message = c.post(f"/api/rooms/{slug}/messages/", json={"message": "vote"}).json()
    url = f"/api/rooms/{slug}/messages/{message['id']}/reactions/"

    def react(user: UserInfo) -> list[int]:
        with client(live_server, user) as c:
            return [c.post(url, json={"emoji": emoji}).status_code for emoji in ("+1", "+1", "ok")]

    with ThreadPoolExecutor(len(users)) as pool:
        codes = [code for batch in pool.map(react, users) for code in batch]
    assert sorted(codes) == sorted([201, 200, 201] * 10)
    assert message_row(tenant_a, message["id"])["reactions"] == {"+1": 10, "ok": 10}
    with client(live_server, users[3]) as c:
        removed = c.delete(url, params={"emoji": "ok"})
        assert removed.status_code == 200 and removed.json()["counts"] == {"+1": 10, "ok": 9}
        again = c.delete(url, params={"emoji": "ok"})
        assert again.status_code == 200 and again.json()["counts"] == {"+1": 10, "ok": 9}


async def test_at_most_twenty_distinct_emoji_on_a_message(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug = unique("react_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        message = await say(ws)
        with client(live_server, alice) as c:
            url = f"/api/rooms/{slug}/messages/{message['id']}/reactions/"
            for i in range(20):
                assert c.post(url, json={"emoji": f"e{i}"}).status_code == 201
            assert_field_error(c.post(url, json={"emoji": "one-too-many"}), "emoji")
        await assert_refused(
            ws, {"type": "react", "id": message["id"], "emoji": "x21"}, "invalid_frame"
        )
        # An emoji already there still counts up.
        bob = make_user_in(tenant_a)
        with client(live_server, bob) as c:
            assert c.post(url, json={"emoji": "e3"}).status_code == 201
    assert len(message_row(tenant_a, message["id"])["reactions"]) == 20


VALID_ID = object()


@pytest.mark.parametrize(
    "frame",
    [
        {"emoji": "+1"},
        {"id": "7", "emoji": "+1"},
        {"id": True, "emoji": "+1"},
        {"id": VALID_ID, "emoji": ""},
        {"id": VALID_ID, "emoji": "x" * 33},
        {"id": VALID_ID, "emoji": 5},
        {"id": VALID_ID, "emoji": "a\x00b"},
        {"id": VALID_ID, "emoji": "   "},
        {"id": VALID_ID},
    ],
    ids=["no-id", "string-id", "bool-id", "empty", "too-long", "int", "nul", "blank", "no-emoji"],
)
@pytest.mark.parametrize("frame_type", ["react", "unreact"])
async def test_bad_react_frames_are_invalid_frame_and_change_nothing(
    live_server, tenant_a, frame, frame_type
):
    alice = make_user_in(tenant_a)
    slug = unique("react_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        message = await say(ws)
        body = {k: (message["id"] if v is VALID_ID else v) for k, v in frame.items()}
        await assert_refused(ws, {"type": frame_type, **body}, "invalid_frame")
    assert message_row(tenant_a, message["id"])["reactions"] == {}


async def test_reacting_to_a_deleted_foreign_or_unknown_message_is_not_found(
    live_server, tenant_a, tenant_b
):
    alice = make_user_in(tenant_a)
    foreign = make_user_in(tenant_b)
    slug, other = unique("react_"), unique("react_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        other_ws = await sockets.room(live_server, alice, other)
        foreign_ws = await sockets.room(live_server, foreign, slug)
        gone = await say(ws)
        elsewhere = await say(other_ws)
        mine = await say(ws)
        await send(ws, {"type": "delete", "id": gone["id"]})
        await frames_until(ws, of_type("chat.message.deleted"))
        for target in (gone["id"], elsewhere["id"], 10**15):
            await assert_refused(ws, {"type": "react", "id": target, "emoji": "+1"}, "not_found")
        await assert_refused(
            foreign_ws, {"type": "react", "id": mine["id"], "emoji": "+1"}, "not_found"
        )
        with client(live_server, alice) as c:
            url = f"/api/rooms/{slug}/messages/{elsewhere['id']}/reactions/"
            assert c.post(url, json={"emoji": "+1"}).status_code == 404
    assert message_row(tenant_a, elsewhere["id"])["reactions"] == {}
    assert message_row(tenant_a, mine["id"])["reactions"] == {}


async def test_react_frames_take_rate_limit_tokens(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug = unique("react_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, alice, slug)
        message = await say(ws)
        for i in range(80):  # 20 tokens of burst, 10 a second
            await send(ws, {"type": "react", "id": message["id"], "emoji": f"r{i % 15}"})
        frames = await frames_until(ws, lambda f: f.get("code") == "rate_limited")
        assert frames[-1]["retry_after"] > 0
        await ping_pong(ws)


def test_reaction_webhooks_carry_the_counts(live_server, make_tenant):
    import json

    from integrations.models import Delivery, Webhook

    tenant = make_tenant()
    alice = make_user_in(tenant)
    in_tenant(
        tenant,
        lambda: Webhook.objects.create(
            url="https://hooks.example.com/x",
            events=["reaction.added", "reaction.removed"],
            secret="s",
        ),
    )
    slug = unique("react_")
    with client(live_server, alice) as c:
        c.post("/api/rooms/", json={"slug": slug})
        message = c.post(f"/api/rooms/{slug}/messages/", json={"message": "m"}).json()
        url = f"/api/rooms/{slug}/messages/{message['id']}/reactions/"
        assert c.post(url, json={"emoji": "+1"}).status_code == 201
        assert c.post(url, json={"emoji": "+1"}).status_code == 200  # a no-op: no event
        assert c.delete(url, params={"emoji": "+1"}).status_code == 200
    bodies = in_tenant(
        tenant,
        lambda: [
            json.loads(b) for b in Delivery.objects.order_by("pk").values_list("body", flat=True)
        ],
    )
    assert [b["type"] for b in bodies] == ["reaction.added", "reaction.removed"]
    assert bodies[0]["data"] == {
        "room": slug,
        "message_id": message["id"],
        "user": alice.username,
        "emoji": "+1",
        "counts": {"+1": 1},
    }
    assert bodies[1]["data"]["counts"] == {}
