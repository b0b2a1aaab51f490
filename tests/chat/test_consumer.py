"""The room socket as a client sees it, in process (WebsocketCommunicator, full ASGI stack).

PROTOCOL.md section 3: frames, error frames that keep the socket open, idempotent
`client_id`, gap-free `seq`, the rate limit and the close codes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import TenantInfo, UserInfo, blocking, tokens_for, unique
from tests.realtime_helpers import CHAT_MESSAGE_FIELDS
from tests.support import TIMEOUT, communicator, connect_expect_close, receive_type

# --- helpers ---------------------------------------------------------------------------------


def room_path(room: str, user: UserInfo, **query: str) -> str:
    params = "".join(f"&{key}={value}" for key, value in query.items())
    return f"/ws/chat/{room}/?token={tokens_for(user)['access']}{params}"


@asynccontextmanager
async def joined(user: UserInfo, room: str) -> AsyncIterator[Any]:
    """An open room socket of `user` (accepted and left open), disconnected afterwards."""
    comm = communicator(user.tenant.domain, room_path(room, user))
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    try:
        yield comm
    finally:
        await comm.disconnect()


async def send_message(comm: Any, text: str, **extra: Any) -> None:
    await comm.send_json_to({"type": "message", "message": text, **extra})


async def receive_message(comm: Any) -> dict[str, Any]:
    return await receive_type(comm, "chat.message")


async def receive_message_of(comm: Any, *, user: str) -> dict[str, Any]:
    """The next `chat.message` written by `user` (skipping the others)."""
    while True:
        frame = await receive_message(comm)
        if frame["user"] == user:
            return frame


async def assert_still_open(comm: Any) -> None:
    """The socket still works: a valid message sent now comes back as `chat.message`."""
    text = unique("alive-")
    await send_message(comm, text)
    frame = await receive_message(comm)
    assert frame["message"] == text


def in_tenant(tenant: TenantInfo, fn: Callable[[], Any]) -> Any:
    from tenants.context import run_in_schema

    return blocking(lambda: run_in_schema(tenant.schema_name, fn))


def stored_messages(tenant: TenantInfo, room: str) -> list[dict[str, Any]]:
    from chat.models import Message

    return in_tenant(
        tenant,
        lambda: list(
            Message.objects.filter(room__slug=room)
            .order_by("seq")
            .values("id", "seq", "body", "client_id", "user_id")
        ),
    )


def history(tenant: TenantInfo, room: str) -> list[dict[str, Any]]:
    """The history selector's `chat.message` frames, oldest first."""
    from chat import selectors
    from chat.models import Room

    return in_tenant(
        tenant,
        lambda: selectors.room_history(
            room=Room.objects.get(slug=room), before=None, after=0, limit=200
        ),
    )


def make_private_room(owner: UserInfo, slug: str) -> None:
    from chat.services import Actor, room_create

    actor = Actor(id=owner.id, username=owner.username, is_admin=owner.is_admin)
    blocking(
        lambda: room_create(
            schema_name=owner.tenant.schema_name,
            actor=actor,
            slug=slug,
            name=slug,
            is_private=True,
        )
    )


# --- chat.message broadcast ------------------------------------------------------------------


async def test_message_is_broadcast_with_all_contract_fields_to_every_socket_in_the_room(
    tenant_a, make_user
):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room) as sender, joined(bob, room) as other:
        await send_message(sender, "hello everyone", client_id="c-1")
        own = await receive_message(sender)
        seen = await receive_message(other)

    assert own == seen
    assert set(own) == CHAT_MESSAGE_FIELDS
    assert own["type"] == "chat.message"
    assert isinstance(own["id"], int)
    assert own["seq"] == 1
    assert own["room"] == room
    assert own["user"] == alice.username
    assert own["message"] == "hello everyone"
    assert own["client_id"] == "c-1"
    assert own["edited_at"] is None
    created_at = datetime.fromisoformat(own["created_at"])
    assert created_at.tzinfo is not None


async def test_message_without_client_id_has_null_client_id(tenant_a, make_user):
    alice = make_user(tenant_a)
    async with joined(alice, unique("room_")) as comm:
        await send_message(comm, "no id")
        frame = await receive_message(comm)
    assert frame["client_id"] is None


async def test_frame_without_type_is_a_message(tenant_a, make_user):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room) as sender, joined(bob, room) as other:
        await sender.send_json_to({"message": "hi"})
        own = await receive_message(sender)
        seen = await receive_message(other)
    assert own["message"] == "hi"
    assert own["user"] == alice.username
    assert seen == own


async def test_socket_in_another_room_does_not_receive_the_message(tenant_a, make_user):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    room, elsewhere = unique("room_"), unique("room_")
    async with joined(alice, room) as sender, joined(bob, elsewhere) as outsider:
        await send_message(sender, "only for room one")
        await receive_message(sender)
        # A marker in the outsider's own room: it must be the first chat.message there.
        await send_message(outsider, "marker")
        first = await receive_message(outsider)
    assert first["message"] == "marker"
    assert first["room"] == elsewhere


async def test_seq_starts_at_one_in_a_new_room_and_increases_by_one(tenant_a, make_user):
    alice = make_user(tenant_a)
    async with joined(alice, unique("room_")) as comm:
        seqs = []
        for n in range(5):
            await send_message(comm, f"m{n}")
            seqs.append((await receive_message(comm))["seq"])
    assert seqs == [1, 2, 3, 4, 5]


async def test_received_message_is_already_in_history(tenant_a, make_user):
    alice = make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room) as comm:
        await send_message(comm, "persisted first", client_id=unique("cid-"))
        frame = await receive_message(comm)
        stored = history(tenant_a, room)
    assert stored == [frame]


# --- client_id idempotency -------------------------------------------------------------------


async def test_same_client_id_from_same_user_is_stored_once_and_echoed_to_sender_only(
    tenant_a, make_user
):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    room = unique("room_")
    client_id = unique("cid-")
    async with joined(alice, room) as sender, joined(bob, room) as other:
        await send_message(sender, "once", client_id=client_id)
        original = await receive_message(sender)
        assert await receive_message(other) == original

        await send_message(sender, "once", client_id=client_id)
        again = await receive_message(sender)

        await send_message(sender, "marker")
        marker = await receive_message(sender)
        next_seen_by_other = await receive_message(other)

    assert again == original  # same id and seq: the original frame, not a new one
    assert next_seen_by_other == marker  # the resend was not broadcast
    assert marker["seq"] == original["seq"] + 1  # and used no seq
    rows = [row for row in stored_messages(tenant_a, room) if row["client_id"] == client_id]
    assert len(rows) == 1


async def test_same_client_id_from_another_user_is_a_new_message(tenant_a, make_user):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    room = unique("room_")
    client_id = unique("cid-")
    async with joined(alice, room) as first, joined(bob, room) as second:
        await send_message(first, "from alice", client_id=client_id)
        from_alice = await receive_message(first)
        await send_message(second, "from bob", client_id=client_id)
        from_bob = await receive_message_of(second, user=bob.username)

    assert from_alice["id"] != from_bob["id"]
    rows = [row for row in stored_messages(tenant_a, room) if row["client_id"] == client_id]
    assert sorted(row["user_id"] for row in rows) == sorted([alice.id, bob.id])


# --- error frames keep the socket open -------------------------------------------------------

TOO_LONG_CLIENT_ID = "c" * 65

BAD_FRAMES = [
    pytest.param("text", "this is not json", "invalid_json", id="non-json-text"),
    pytest.param("bytes", b'{"message": "hi"}', "invalid_frame", id="binary-frame"),
    pytest.param("text", '["message", "hi"]', "invalid_frame", id="json-array"),
    pytest.param("text", '"just a string"', "invalid_frame", id="json-string"),
    pytest.param("json", {"type": "message", "message": 42}, "invalid_frame", id="message-int"),
    pytest.param("json", {"type": "message"}, "invalid_frame", id="message-missing"),
    pytest.param(
        "json", {"type": "message", "message": "x", "client_id": 7}, "invalid_frame", id="cid-int"
    ),
    pytest.param(
        "json",
        {"type": "message", "message": "x", "client_id": TOO_LONG_CLIENT_ID},
        "invalid_frame",
        id="cid-too-long",
    ),
    pytest.param("json", {"type": "shout", "message": "x"}, "unknown_type", id="unknown-type"),
    pytest.param("json", {"type": 5, "message": "x"}, "unknown_type", id="type-not-a-string"),
    pytest.param(
        "json", {"type": "message", "message": "x" * 4001}, "message_too_long", id="4001-chars"
    ),
    pytest.param("json", {"type": "message", "message": ""}, "empty_message", id="empty"),
    pytest.param("json", {"type": "message", "message": "   "}, "empty_message", id="blank"),
]


@pytest.mark.parametrize(("kind", "payload", "code"), BAD_FRAMES)
async def test_bad_frame_is_answered_with_error_frame_stores_nothing_and_keeps_socket_open(
    tenant_a, make_user, kind, payload, code
):
    alice = make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room) as comm:
        if kind == "bytes":
            await comm.send_to(bytes_data=payload)
        elif kind == "text":
            await comm.send_to(text_data=payload)
        else:
            await comm.send_json_to(payload)
        error = await receive_type(comm, "error")
        await assert_still_open(comm)

    assert error["code"] == code
    assert isinstance(error["detail"], str)
    assert error["detail"]
    assert len(stored_messages(tenant_a, room)) == 1  # only the valid message afterwards


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"type": "message", "message": "a\u0000b"}, id="in-message"),
        pytest.param({"type": "message", "message": "ok", "client_id": "c\u0000"}, id="in-cid"),
    ],
)
async def test_nul_character_is_answered_with_invalid_frame_and_keeps_socket_open(
    tenant_a, make_user, frame
):
    alice = make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room) as comm:
        await comm.send_json_to(frame)
        error = await receive_type(comm, "error")
        await assert_still_open(comm)
    assert error["code"] == "invalid_frame"
    assert len(stored_messages(tenant_a, room)) == 1


async def test_message_of_exactly_4000_characters_is_accepted(tenant_a, make_user):
    alice = make_user(tenant_a)
    body = "y" * 4000
    async with joined(alice, unique("room_")) as comm:
        await send_message(comm, body)
        frame = await receive_message(comm)
    assert frame["message"] == body


async def test_sending_too_fast_is_rate_limited_and_limited_messages_are_not_stored(
    tenant_a, make_user
):
    alice = make_user(tenant_a)
    room = unique("room_")
    sent = 40
    async with joined(alice, room) as comm:
        for n in range(sent):
            await send_message(comm, f"burst {n}")
        delivered: list[dict[str, Any]] = []
        limited: list[dict[str, Any]] = []
        while len(delivered) + len(limited) < sent:
            frame = await comm.receive_json_from(timeout=TIMEOUT)
            if frame["type"] == "chat.message":
                delivered.append(frame)
            elif frame["type"] == "error":
                limited.append(frame)

    assert limited, "40 messages at once were all accepted"
    assert delivered, "no message got through"
    for error in limited:
        assert error["code"] == "rate_limited"
        assert error["detail"]
        assert isinstance(error["retry_after"], int | float)
        assert error["retry_after"] > 0
    rows = stored_messages(tenant_a, room)
    assert len(rows) == len(delivered)
    assert sorted(row["body"] for row in rows) == sorted(f["message"] for f in delivered)


class FakeClock:
    """Stands in for the `time` module of the rate limiter, so a test decides what `now` is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_rate_limited_retry_after_is_positive_even_when_a_token_is_almost_refilled(
    tenant_a, make_user, monkeypatch
):
    import chat.ratelimit

    clock = FakeClock()
    monkeypatch.setattr(chat.ratelimit, "time", clock)
    alice = make_user(tenant_a)
    async with joined(alice, unique("room_")) as comm:
        for n in range(20):  # the whole default burst, at one instant
            await send_message(comm, f"burst {n}")
            await receive_message(comm)
        clock.now += 0.09999  # 0.9999 of a token at 10 a second: still not one
        await send_message(comm, "one too many")
        error = await receive_type(comm, "error")
    assert error["code"] == "rate_limited"
    assert error["retry_after"] > 0


async def test_ping_is_answered_with_pong(tenant_a, make_user):
    alice = make_user(tenant_a)
    async with joined(alice, unique("room_")) as comm:
        await comm.send_json_to({"type": "ping"})
        pong = await receive_type(comm, "pong")
    assert pong == {"type": "pong"}


# --- close codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "room",
    [
        pytest.param("r" * 65, id="65-chars"),
        pytest.param("a.b", id="dot"),
        pytest.param("a%20b", id="space"),
        pytest.param("caf%C3%A9", id="non-ascii"),
    ],
)
async def test_room_name_outside_the_pattern_closes_4400(tenant_a, make_user, room):
    alice = make_user(tenant_a)
    comm = communicator(tenant_a.domain, room_path(room, alice))
    assert await connect_expect_close(comm) == 4400


async def test_room_name_of_64_characters_is_accepted(tenant_a, make_user):
    alice = make_user(tenant_a)
    room = unique("room_").ljust(64, "x")
    async with joined(alice, room) as comm:
        await assert_still_open(comm)


@pytest.mark.parametrize("since", ["abc", "-1", "1.5"])
async def test_malformed_since_closes_4400(tenant_a, make_user, since):
    alice = make_user(tenant_a)
    comm = communicator(tenant_a.domain, room_path(unique("room_"), alice, since=since))
    assert await connect_expect_close(comm) == 4400


async def test_private_room_closes_4403_for_a_non_member_and_admits_a_member(tenant_a, make_user):
    owner, stranger = make_user(tenant_a), make_user(tenant_a)
    room = unique("room_")
    make_private_room(owner, room)

    refused = communicator(tenant_a.domain, room_path(room, stranger))
    assert await connect_expect_close(refused) == 4403

    async with joined(owner, room) as comm:
        await assert_still_open(comm)


async def test_frame_larger_than_one_mebibyte_closes_1009(tenant_a, make_user):
    alice = make_user(tenant_a)
    comm = communicator(tenant_a.domain, room_path(unique("room_"), alice))
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    big = json.dumps({"type": "message", "message": "z" * (1024 * 1024)})
    await comm.send_to(text_data=big)
    while True:
        output = await comm.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            break
    await comm.disconnect()
    assert output.get("code") == 1009


async def test_joining_a_missing_room_creates_it_as_public(tenant_a, make_user):
    from chat.models import Room

    alice = make_user(tenant_a)
    room = unique("room_")
    async with joined(alice, room):
        pass
    rooms = in_tenant(tenant_a, lambda: list(Room.objects.filter(slug=room).values("is_private")))
    assert rooms == [{"is_private": False}]
