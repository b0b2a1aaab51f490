"""Presence, `user.joined` / `user.left` and `user.typing` (PROTOCOL.md section 3), on real
uvicorn processes: presence is kept in Redis and must hold across processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import LiveServer, UserInfo, make_user_in, unique
from tests.realtime_helpers import (
    Sockets,
    fence,
    frames_until,
    of_type,
    ping_pong,
    recv,
    say,
    send,
    types,
)

# Closing a socket returns before the server has run its disconnect handler; give it this
# long before a fence checks that no `user.left` went out.
DISCONNECT_SETTLE = 1.0


def joined(user: str) -> dict[str, str]:
    return {"type": "user.joined", "user": user}


def left(user: str) -> dict[str, str]:
    return {"type": "user.left", "user": user}


async def presence_of(ws: Any) -> list[str]:
    """The first frame of a fresh room socket: it must be `presence`; its users, sorted."""
    frame = await recv(ws)
    assert frame["type"] == "presence", frame
    assert set(frame) == {"type", "users"}, frame
    return sorted(frame["users"])


async def close_when_quiet(closing: Any, *others: Any) -> None:
    """Close a room socket once nothing is on its way to it: a fence it sent itself has come
    back, and every frame published before reached it first.

    A frame the server sends just after the client's close once killed the consumer before its
    cleanup (the busy-room test at the end checks the fix); counting tests still avoid the race.
    """
    await fence(closing, *others)
    await closing.close()


async def enter_first(sockets: Sockets, server: LiveServer, user: UserInfo, slug: str) -> Any:
    """The user's first socket in the room, once its own `user.joined` went out.

    The server sends `presence` and only then publishes `user.joined`; waiting for the
    socket's own copy keeps that announcement from reaching sockets opened afterwards.
    """
    ws = await sockets.room(server, user, slug)
    await presence_of(ws)
    await frames_until(ws, lambda f: f == joined(user.username))
    return ws


async def test_first_frame_is_presence_listing_the_users_in_the_room_newcomer_included(
    live_server, tenant_a
):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        first = await sockets.room(live_server, alice, slug)
        assert await presence_of(first) == [alice.username]
        second = await sockets.room(live_server, bob, slug)
        assert await presence_of(second) == sorted([alice.username, bob.username])


async def test_presence_lists_a_user_with_two_sockets_once(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        for _ in range(2):
            await presence_of(await sockets.room(live_server, alice, slug))
        newcomer = await sockets.room(live_server, bob, slug)
        assert await presence_of(newcomer) == sorted([alice.username, bob.username])


async def test_second_users_first_socket_is_announced_to_the_room_as_user_joined(
    live_server, tenant_a
):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        watcher = await sockets.room(live_server, alice, slug)
        await presence_of(watcher)
        await presence_of(await sockets.room(live_server, bob, slug))
        frames = await frames_until(watcher, lambda f: f == joined(bob.username))
        assert frames[-1] == joined(bob.username)


async def test_second_socket_of_the_same_user_is_not_announced_as_user_joined(
    live_server, tenant_a
):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        await enter_first(sockets, live_server, alice, slug)
        watcher = await enter_first(sockets, live_server, bob, slug)

        second = await sockets.room(live_server, alice, slug)
        await presence_of(second)
        # The second socket's own join would have been published before its message.
        _, seen = await fence(second, watcher)
        assert joined(alice.username) not in seen, seen


async def test_closing_one_of_two_sockets_sends_no_user_left_and_closing_the_last_does(
    live_server, tenant_a
):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        first = await enter_first(sockets, live_server, alice, slug)
        second = await sockets.room(live_server, alice, slug)
        await presence_of(second)
        watcher = await enter_first(sockets, live_server, bob, slug)

        await close_when_quiet(first, second, watcher)
        await asyncio.sleep(DISCONNECT_SETTLE)
        _, seen = await fence(second, watcher)
        assert left(alice.username) not in seen, seen
        newcomer = await sockets.room(live_server, make_user_in(tenant_a), slug)
        assert alice.username in await presence_of(newcomer)
        await frames_until(newcomer, of_type("user.joined"))

        await close_when_quiet(second, watcher)
        frames = await frames_until(watcher, lambda f: f == left(alice.username))
        assert frames[-1] == left(alice.username)
        latecomer = await sockets.room(live_server, make_user_in(tenant_a), slug)
        assert alice.username not in await presence_of(latecomer)


async def test_presence_and_joined_left_hold_across_server_processes(
    live_server, server_factory, tenant_a
):
    other = server_factory()
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        alice_here = await sockets.room(live_server, alice, slug)
        assert await presence_of(alice_here) == [alice.username]
        await frames_until(alice_here, lambda f: f == joined(alice.username))

        bob_there = await sockets.room(other, bob, slug)
        assert await presence_of(bob_there) == sorted([alice.username, bob.username])
        frames = await frames_until(alice_here, lambda f: f == joined(bob.username))
        assert frames[-1] == joined(bob.username)
        await frames_until(bob_there, lambda f: f == joined(bob.username))

        # Alice's second socket lives on the other process: still the same user.
        alice_there = await sockets.room(other, alice, slug)
        assert await presence_of(alice_there) == sorted([alice.username, bob.username])
        _, seen = await fence(alice_there, bob_there)
        assert joined(alice.username) not in seen, seen

        await close_when_quiet(alice_here, alice_there, bob_there)
        await asyncio.sleep(DISCONNECT_SETTLE)
        _, seen = await fence(alice_there, bob_there)
        assert left(alice.username) not in seen, seen

        await close_when_quiet(alice_there, bob_there)
        frames = await frames_until(bob_there, lambda f: f == left(alice.username))
        assert frames[-1] == left(alice.username)
        newcomer = await sockets.room(live_server, make_user_in(tenant_a), slug)
        assert alice.username not in await presence_of(newcomer)


async def test_typing_reaches_the_other_sockets_as_user_typing_but_not_the_typists_own(
    live_server, tenant_a
):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("typing_")
    async with Sockets() as sockets:
        typist = await sockets.room(live_server, alice, slug)
        alice_elsewhere = await sockets.room(live_server, alice, slug)
        watcher = await sockets.room(live_server, bob, slug)
        for ws in (typist, alice_elsewhere, watcher):
            await presence_of(ws)

        await send(typist, {"type": "typing"})
        typing = {"type": "user.typing", "user": alice.username}
        for ws in (watcher, alice_elsewhere):
            frames = await frames_until(ws, of_type("user.typing"))
            assert frames[-1] == typing

        own, *_ = await fence(typist, watcher)
        assert "user.typing" not in types(own), own


async def test_typing_in_one_room_does_not_reach_another_room(live_server, tenant_a):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug, elsewhere = unique("typing_"), unique("typing_")
    async with Sockets() as sockets:
        typist = await sockets.room(live_server, alice, slug)
        watcher = await sockets.room(live_server, bob, slug)
        outsider = await sockets.room(live_server, bob, elsewhere)
        outsider_alice = await sockets.room(live_server, alice, elsewhere)
        for ws in (typist, watcher, outsider, outsider_alice):
            await presence_of(ws)

        await send(typist, {"type": "typing"})
        await frames_until(watcher, of_type("user.typing"))
        # Alice's typing was published before this; a leak would have reached `outsider`.
        _, seen = await fence(outsider_alice, outsider)
        assert "user.typing" not in types(seen), seen


async def test_notifications_socket_sends_no_presence(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    slug = unique("pres_")
    async with Sockets() as sockets:
        await presence_of(await sockets.room(live_server, alice, slug))
        notifications = await sockets.notifications(live_server, alice)
        frames = await ping_pong(notifications)
        assert types(frames) == ["pong"], frames


async def test_same_named_rooms_of_two_tenants_keep_presence_and_typing_apart(
    live_server, tenant_a, tenant_b
):
    slug = unique("pres_")
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    stranger = make_user_in(tenant_b)
    async with Sockets() as sockets:
        alice_ws = await enter_first(sockets, live_server, alice, slug)
        stranger_ws = await sockets.room(live_server, stranger, slug)
        assert await presence_of(stranger_ws) == [stranger.username]
        await frames_until(stranger_ws, lambda f: f == joined(stranger.username))

        bob_ws = await sockets.room(live_server, bob, slug)
        assert await presence_of(bob_ws) == sorted([alice.username, bob.username])
        await send(alice_ws, {"type": "typing"})
        await frames_until(bob_ws, of_type("user.typing"))
        await close_when_quiet(alice_ws, bob_ws)
        await frames_until(bob_ws, lambda f: f == left(alice.username))

        # Everything above happened in tenant A's room; tenant B's saw none of it.
        (own,) = await fence(stranger_ws)
        assert types(own) == ["chat.message"], own


async def test_sockets_closing_while_the_room_is_busy_still_leave_presence(live_server, tenant_a):
    author, visitor = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("busy_")
    stop = asyncio.Event()
    async with Sockets() as sockets:
        author_ws = await sockets.room(live_server, author, slug)
        target = await say(author_ws, "edit me")

        async def keep_the_room_busy() -> None:
            # Edits are broadcast to every socket of the room and are not rate limited.
            count = 0
            while not stop.is_set():
                await send(author_ws, {"type": "edit", "id": target["id"], "message": f"v{count}"})
                count += 1
                if count % 10 == 0:
                    await asyncio.sleep(0.005)

        async def read_the_author() -> None:
            async for _ in author_ws:
                pass

        busy = asyncio.gather(keep_the_room_busy(), read_the_author())
        try:
            for _ in range(30):  # each close races with a broadcast; one lost race shows
                visit = await sockets.room(live_server, visitor, slug)
                await presence_of(visit)
                await frames_until(visit, of_type("chat.message.edited"))
                await visit.close()
        finally:
            stop.set()
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)

        await asyncio.sleep(DISCONNECT_SETTLE)
        newcomer = await sockets.room(live_server, make_user_in(tenant_a), slug)
        assert visitor.username not in await presence_of(newcomer)
