"""Resuming with `since=<seq>` (PROTOCOL.md section 3, "Ordering and delivery"): the replay of
every later message in order, then `resume.done`, then live frames, with no gap and no
duplicate, also while someone else keeps writing; the replay is capped at 1000 messages.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import LiveServer, UserInfo, make_user_in, unique
from tests.realtime_helpers import (
    CHAT_MESSAGE_FIELDS,
    Frame,
    Sockets,
    frames_during,
    frames_until,
    in_tenant,
    insert_messages,
    is_message,
    of_type,
    ping_pong,
    say,
    send,
    types,
)

REPLAY_LIMIT = 1000


def seqs(frames: list[Frame]) -> list[int]:
    return [f["seq"] for f in frames if f.get("type") == "chat.message"]


async def resume(
    sockets: Sockets, server: LiveServer, user: UserInfo, slug: str, since: int
) -> tuple[Any, list[Frame], Frame]:
    """Connect with `since`; the socket, the replayed `chat.message` frames and `resume.done`."""
    ws = await sockets.room(server, user, slug, since=since)
    frames = await frames_until(ws, of_type("resume.done"))
    return ws, [f for f in frames if f["type"] == "chat.message"], frames[-1]


def delete_message(user: UserInfo, slug: str, seq: int) -> None:
    from django.utils import timezone

    from chat.models import Message

    in_tenant(
        user.tenant,
        lambda: Message.objects.filter(room__slug=slug, seq=seq).update(deleted_at=timezone.now()),
    )


async def test_since_replays_later_messages_in_order_then_resume_done_then_live_ones(
    live_server, tenant_a
):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 10)
    async with Sockets() as sockets:
        ws, replayed, done = await resume(sockets, live_server, reader, slug, since=4)
        assert seqs(replayed) == [5, 6, 7, 8, 9, 10]
        assert [f["message"] for f in replayed] == [f"bulk {n}" for n in range(5, 11)]
        assert all(set(f) == CHAT_MESSAGE_FIELDS for f in replayed)
        assert {(f["room"], f["user"]) for f in replayed} == {(slug, writer.username)}
        assert done == {"type": "resume.done", "seq": 10}

        writer_ws = await sockets.room(live_server, writer, slug)
        sent = await say(writer_ws, "live one")
        frames = await frames_until(ws, is_message("live one"))
        assert seqs(frames) == [11] == [sent["seq"]]


async def test_since_zero_replays_everything(live_server, tenant_a):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 7)
    async with Sockets() as sockets:
        _, replayed, done = await resume(sockets, live_server, reader, slug, since=0)
    assert seqs(replayed) == [1, 2, 3, 4, 5, 6, 7]
    assert done == {"type": "resume.done", "seq": 7}


async def test_deleted_messages_are_left_out_of_the_replay(live_server, tenant_a):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 6)
    delete_message(writer, slug, 4)
    async with Sockets() as sockets:
        _, replayed, done = await resume(sockets, live_server, reader, slug, since=2)
    assert seqs(replayed) == [3, 5, 6]
    assert done["seq"] == 6


async def test_since_beyond_the_last_seq_replays_nothing_and_resume_done_says_since(
    live_server, tenant_a
):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 3)
    async with Sockets() as sockets:
        _, replayed, done = await resume(sockets, live_server, reader, slug, since=50)
    assert replayed == []
    assert done == {"type": "resume.done", "seq": 50}


async def test_live_messages_still_arrive_after_resuming_beyond_the_last_seq(live_server, tenant_a):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 3)
    async with Sockets() as sockets:
        # E.g. a client that remembered seq 50 of a room that was deleted and created again.
        ws, _, _ = await resume(sockets, live_server, reader, slug, since=50)
        writer_ws = await sockets.room(live_server, writer, slug)
        sent = await say(writer_ws, "after the resume")
        frames = await frames_until(ws, is_message("after the resume"), timeout=5)
    assert frames[-1]["id"] == sent["id"]


async def test_replay_is_capped_at_1000_messages(live_server, tenant_a):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    assert insert_messages(writer, slug, REPLAY_LIMIT + 5) == REPLAY_LIMIT + 5
    since = 2
    async with Sockets() as sockets:
        _, replayed, done = await resume(sockets, live_server, reader, slug, since=since)
    assert seqs(replayed) == list(range(since + 1, since + REPLAY_LIMIT + 1))
    assert done == {"type": "resume.done", "seq": since + REPLAY_LIMIT}


async def test_without_since_nothing_is_replayed_and_no_resume_done_is_sent(live_server, tenant_a):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    insert_messages(writer, slug, 3)
    async with Sockets() as sockets:
        ws = await sockets.room(live_server, reader, slug)
        # A replay or resume.done would be sent during the handshake, before the pong.
        frames = await ping_pong(ws)
        writer_ws = await sockets.room(live_server, writer, slug)
        await say(writer_ws, "live")
        frames += await frames_until(ws, is_message("live"))
    assert "resume.done" not in types(frames), frames
    assert seqs(frames) == [4]


async def test_resume_has_no_gap_and_no_duplicate_while_another_socket_keeps_writing(
    live_server, tenant_a
):
    writer, reader = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("resume_")
    since = insert_messages(writer, slug, 5)
    stop = asyncio.Event()
    acked: list[int] = []
    refused: list[Frame] = []

    async with Sockets() as sockets:
        writer_ws = await sockets.room(live_server, writer, slug)

        async def write() -> None:
            # About 9 a second: under the rate limit, so every message is stored.
            count = 0
            while not stop.is_set():
                await send(writer_ws, {"type": "message", "message": f"w{count}"})
                count += 1
                await asyncio.sleep(0.11)

        async def collect_acks() -> None:
            async for raw in writer_ws:
                frame = json.loads(raw)
                if frame.get("type") == "error":
                    refused.append(frame)
                elif frame.get("type") == "chat.message" and frame["user"] == writer.username:
                    acked.append(frame["seq"])

        writing = asyncio.gather(write(), collect_acks())
        try:
            for attempt in range(6):
                await asyncio.sleep(0.4)  # messages pile up while the reader is away
                ws, replayed, done = await resume(sockets, live_server, reader, slug, since)
                live = seqs(await frames_during(ws, 0.6))
                await ws.close()

                got = seqs(replayed) + live
                context = f"connection {attempt} since={since}: {seqs(replayed)} + {live}"
                assert seqs(replayed) == sorted(seqs(replayed)), context
                assert done["seq"] == (seqs(replayed)[-1] if replayed else since), context
                assert all(seq > done["seq"] for seq in live), context
                assert sorted(got) == list(range(since + 1, max(got) + 1)), context
                assert len(got) == len(set(got)), context
                # The writer was busy on both sides of the resume.
                assert replayed and live, context
                since = max(got)
        finally:
            stop.set()
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)

        final_ws, replayed, _ = await resume(sockets, live_server, reader, slug, since=0)
        await final_ws.close()
    assert refused == []
    everything = seqs(replayed)
    assert everything == list(range(1, len(everything) + 1))
    assert set(acked) <= set(everything)
    assert len(acked) >= 30
