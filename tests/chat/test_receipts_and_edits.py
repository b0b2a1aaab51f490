"""Read markers (`read` -> `message.read`), `edit` and `delete` (PROTOCOL.md section 3), on the
live uvicorn server, with the REST views a client checks afterwards (unread counts, history).
Every refused frame is answered with an error frame and leaves the socket open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.conftest import LiveServer, UserInfo, make_user_in, unique
from tests.realtime_helpers import (
    CHAT_MESSAGE_FIELDS,
    Frame,
    Sockets,
    assert_refused,
    error_of,
    fence,
    frames_until,
    insert_messages,
    listed_room,
    of_type,
    ping_pong,
    read_marker,
    rest_history,
    say,
    send,
    types,
)

MISSING = object()


def read_frame(user: UserInfo, seq: int) -> Frame:
    return {"type": "message.read", "user": user.username, "seq": seq}


async def read_reply(ws: Any) -> Frame:
    return (await frames_until(ws, of_type("message.read")))[-1]


def unread_count(server: LiveServer, user: UserInfo, slug: str) -> int:
    room = listed_room(server, user, slug)
    assert room is not None, f"{slug} is not in {user.username}'s room list"
    return room["unread_count"]


def history_item(server: LiveServer, user: UserInfo, slug: str, message_id: int) -> Frame | None:
    return next((m for m in rest_history(server, user, slug) if m["id"] == message_id), None)


# --- read markers ----------------------------------------------------------------------------


async def test_read_moves_the_marker_and_the_room_gets_message_read(live_server, tenant_a):
    reader, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("read_")
    insert_messages(other, slug, 3)
    async with Sockets() as sockets:
        reader_ws = await sockets.room(live_server, reader, slug)
        other_ws = await sockets.room(live_server, other, slug)
        await send(reader_ws, {"type": "read", "seq": 2})
        assert await read_reply(reader_ws) == read_frame(reader, 2)
        assert await read_reply(other_ws) == read_frame(reader, 2)
    assert read_marker(reader, slug) == 2


async def test_lower_or_equal_seq_never_moves_the_marker_back_and_only_the_sender_hears(
    live_server, tenant_a
):
    reader, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("read_")
    insert_messages(other, slug, 5)
    async with Sockets() as sockets:
        reader_ws = await sockets.room(live_server, reader, slug)
        other_ws = await sockets.room(live_server, other, slug)
        await send(reader_ws, {"type": "read", "seq": 4})
        await read_reply(reader_ws)
        await read_reply(other_ws)

        for lower in (1, 4):
            await send(reader_ws, {"type": "read", "seq": lower})
            assert await read_reply(reader_ws) == read_frame(reader, 4)
        _, seen = await fence(reader_ws, other_ws)
        assert "message.read" not in types(seen), seen
    assert read_marker(reader, slug) == 4


@pytest.mark.parametrize(
    "seq",
    ["2", -1, MISSING, None, 1.5, True, [2]],
    ids=["string", "negative", "missing", "null", "float", "bool", "list"],
)
async def test_bad_seq_is_answered_invalid_frame_and_moves_nothing(live_server, tenant_a, seq):
    reader = make_user_in(tenant_a)
    slug = unique("read_")
    insert_messages(reader, slug, 3)
    frame: dict[str, Any] = {"type": "read"}
    if seq is not MISSING:
        frame["seq"] = seq
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, reader, slug)
        await assert_refused(ws, frame, "invalid_frame")
    assert read_marker(reader, slug) is None


@pytest.mark.parametrize("beyond", [4, 10**9, 2**63, 10**30], ids=str)
async def test_seq_beyond_the_last_message_is_capped_at_the_rooms_last_seq(
    live_server, tenant_a, beyond
):
    reader, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("read_")
    insert_messages(other, slug, 3)
    async with Sockets() as sockets:
        reader_ws = await sockets.room(live_server, reader, slug)
        other_ws = await sockets.room(live_server, other, slug)
        await send(reader_ws, {"type": "read", "seq": beyond})
        assert await read_reply(reader_ws) == read_frame(reader, 3)
        assert await read_reply(other_ws) == read_frame(reader, 3)
    assert read_marker(reader, slug) == 3
    assert unread_count(live_server, reader, slug) == 0


async def test_unread_count_in_the_room_list_drops_as_the_marker_moves(live_server, tenant_a):
    reader, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("read_")
    insert_messages(other, slug, 5)
    assert unread_count(live_server, reader, slug) == 5
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, reader, slug)
        for seq, expected in ((2, 3), (1, 3), (5, 0)):
            await send(ws, {"type": "read", "seq": seq})
            await read_reply(ws)
            assert unread_count(live_server, reader, slug) == expected, seq
        other_ws = await sockets.room(live_server, other, slug)
        await say(other_ws)
    assert unread_count(live_server, reader, slug) == 1
    assert unread_count(live_server, other, slug) == 6  # markers are per user


# --- edit ------------------------------------------------------------------------------------


async def test_author_edit_reaches_the_room_as_chat_message_edited_and_history_shows_it(
    live_server, tenant_a
):
    author, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("edit_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        other_ws = await sockets.room(live_server, other, slug)
        original = await say(author_ws, "first version")
        await send(author_ws, {"type": "edit", "id": original["id"], "message": "second version"})
        edited = [
            (await frames_until(ws, of_type("chat.message.edited")))[-1]
            for ws in (author_ws, other_ws)
        ]

    assert edited[0] == edited[1]
    frame = edited[0]
    assert set(frame) == CHAT_MESSAGE_FIELDS
    assert frame["type"] == "chat.message.edited"
    assert frame["message"] == "second version"
    unchanged = ("id", "seq", "room", "user", "client_id", "created_at")
    assert {k: frame[k] for k in unchanged} == {k: original[k] for k in unchanged}
    edited_at = datetime.fromisoformat(frame["edited_at"])
    assert edited_at >= datetime.fromisoformat(original["created_at"])

    item = history_item(live_server, other, slug, original["id"])
    assert item is not None
    assert item["message"] == "second version"
    assert item["edited_at"] == frame["edited_at"]


async def test_edit_by_another_member_is_forbidden_and_changes_nothing(live_server, tenant_a):
    author, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("edit_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        other_ws = await sockets.room(live_server, other, slug)
        original = await say(author_ws, "mine")
        await assert_refused(
            other_ws, {"type": "edit", "id": original["id"], "message": "hijacked"}, "forbidden"
        )
        seen = await fence(other_ws, author_ws)
        assert all("chat.message.edited" not in types(frames) for frames in seen), seen
    item = history_item(live_server, author, slug, original["id"])
    assert item is not None
    assert (item["message"], item["edited_at"]) == ("mine", None)


async def test_tenant_admin_may_edit_someone_elses_message(live_server, tenant_a):
    author, admin = make_user_in(tenant_a), make_user_in(tenant_a, is_admin=True)
    slug = unique("edit_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        admin_ws = await sockets.room(live_server, admin, slug)
        original = await say(author_ws, "rude words")
        await send(admin_ws, {"type": "edit", "id": original["id"], "message": "[moderated]"})
        frame = (await frames_until(author_ws, of_type("chat.message.edited")))[-1]
    assert (frame["id"], frame["user"], frame["message"]) == (
        original["id"],
        author.username,
        "[moderated]",
    )
    assert history_item(live_server, author, slug, original["id"])["message"] == "[moderated]"


async def test_edit_of_an_unknown_message_or_one_of_another_room_is_not_found(
    live_server, tenant_a
):
    author = make_user_in(tenant_a)
    slug, elsewhere = unique("edit_"), unique("edit_")
    async with Sockets() as sockets:
        elsewhere_ws = await sockets.room(live_server, author, elsewhere)
        foreign = await say(elsewhere_ws, "in the other room")
        ws = await sockets.room(live_server, author, slug)
        for message_id in (987_654_321, foreign["id"]):
            await assert_refused(
                ws, {"type": "edit", "id": message_id, "message": "x"}, "not_found"
            )
    item = history_item(live_server, author, elsewhere, foreign["id"])
    assert item is not None and item["message"] == "in the other room"


async def test_edit_with_an_id_beyond_bigint_is_not_found_and_keeps_the_socket_open(
    live_server, tenant_a
):
    author = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, author, unique("edit_"))
        await send(ws, {"type": "edit", "id": 2**63, "message": "x"})
        assert (await error_of(ws))["code"] == "not_found"
        await ping_pong(ws)


@pytest.mark.parametrize(
    "message_id",
    ["1", 1.5, True, None, MISSING, 0, -3, {"id": 1}],
    ids=["string", "float", "bool", "null", "missing", "zero", "negative", "object"],
)
async def test_edit_with_a_bad_id_is_invalid_frame(live_server, tenant_a, message_id):
    author = make_user_in(tenant_a)
    slug = unique("edit_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, author, slug)
        original = await say(ws, "keep me")
        frame: dict[str, Any] = {"type": "edit", "message": "changed"}
        if message_id is not MISSING:
            frame["id"] = message_id
        await assert_refused(ws, frame, "invalid_frame")
    assert history_item(live_server, author, slug, original["id"])["message"] == "keep me"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_message"),
        ("   \n\t", "empty_message"),
        ("x" * 4001, "message_too_long"),
        (MISSING, "invalid_frame"),
        (42, "invalid_frame"),
    ],
    ids=["empty", "blank", "4001-chars", "missing", "not-a-string"],
)
async def test_edit_with_a_bad_new_text_is_refused_with_its_code(live_server, tenant_a, text, code):
    author = make_user_in(tenant_a)
    slug = unique("edit_")
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, author, slug)
        original = await say(ws, "keep me")
        frame: dict[str, Any] = {"type": "edit", "id": original["id"]}
        if text is not MISSING:
            frame["message"] = text
        await assert_refused(ws, frame, code)
    item = history_item(live_server, author, slug, original["id"])
    assert (item["message"], item["edited_at"]) == ("keep me", None)


async def test_edit_of_exactly_4000_characters_is_accepted(live_server, tenant_a):
    author = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, author, unique("edit_"))
        original = await say(ws)
        await send(ws, {"type": "edit", "id": original["id"], "message": "y" * 4000})
        frame = (await frames_until(ws, of_type("chat.message.edited")))[-1]
    assert frame["message"] == "y" * 4000


# --- delete ----------------------------------------------------------------------------------


async def test_author_delete_reaches_the_room_and_the_message_leaves_history(live_server, tenant_a):
    author, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("del_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        other_ws = await sockets.room(live_server, other, slug)
        doomed = await say(author_ws, "oops")
        kept = await say(author_ws, "fine")
        await send(author_ws, {"type": "delete", "id": doomed["id"]})
        for ws in (author_ws, other_ws):
            frame = (await frames_until(ws, of_type("chat.message.deleted")))[-1]
            assert frame["type"] == "chat.message.deleted"
            assert (frame["id"], frame["seq"]) == (doomed["id"], doomed["seq"])

        assert [m["id"] for m in rest_history(live_server, other, slug)] == [kept["id"]]
        # A deleted message is gone for edits and deletes alike.
        await assert_refused(
            author_ws, {"type": "edit", "id": doomed["id"], "message": "back?"}, "not_found"
        )
        await assert_refused(author_ws, {"type": "delete", "id": doomed["id"]}, "not_found")
    assert [m["id"] for m in rest_history(live_server, other, slug)] == [kept["id"]]


async def test_delete_by_another_member_is_forbidden_and_the_message_stays(live_server, tenant_a):
    author, other = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("del_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        other_ws = await sockets.room(live_server, other, slug)
        original = await say(author_ws, "stays")
        await assert_refused(other_ws, {"type": "delete", "id": original["id"]}, "forbidden")
        seen = await fence(other_ws, author_ws)
        assert all("chat.message.deleted" not in types(frames) for frames in seen), seen
    assert history_item(live_server, other, slug, original["id"]) is not None


async def test_tenant_admin_may_delete_someone_elses_message(live_server, tenant_a):
    author, admin = make_user_in(tenant_a), make_user_in(tenant_a, is_admin=True)
    slug = unique("del_")
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        admin_ws = await sockets.room(live_server, admin, slug)
        original = await say(author_ws, "spam")
        await send(admin_ws, {"type": "delete", "id": original["id"]})
        frame = (await frames_until(author_ws, of_type("chat.message.deleted")))[-1]
    assert (frame["id"], frame["seq"]) == (original["id"], original["seq"])
    assert history_item(live_server, author, slug, original["id"]) is None


@pytest.mark.parametrize(
    ("message_id", "code"),
    [("1", "invalid_frame"), (MISSING, "invalid_frame"), (987_654_321, "not_found")],
    ids=["string", "missing", "unknown"],
)
async def test_delete_with_a_bad_or_unknown_id_is_refused(live_server, tenant_a, message_id, code):
    author = make_user_in(tenant_a)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, author, unique("del_"))
        frame: dict[str, Any] = {"type": "delete"}
        if message_id is not MISSING:
            frame["id"] = message_id
        await assert_refused(ws, frame, code)
