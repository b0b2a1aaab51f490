"""One budget for every write (PROTOCOL.md section 3, rate limit): `read`, `edit` and
`delete` frames take from the connection's bucket like `message`; REST writes take from a
per-user bucket shared by all processes; rooms created by joining or by REST take from a
per-user room budget shared by all processes.

The servers here run with a bucket that barely refills (CHAT_RATE_PER_SECOND=0.001), so
"the first BURST pass, the rest are limited" holds however slow the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_helpers import http
from tests.conftest import (
    LiveServer,
    UserInfo,
    make_user_in,
    start_pods,
    stop_pods,
    tokens_for,
    unique,
)
from tests.realtime_helpers import (
    Sockets,
    close_code,
    in_tenant,
    insert_messages,
    read_marker,
    send,
)
from tests.support import ws_receive_type

BURST = 5
SLOW_REFILL = {"CHAT_RATE_PER_SECOND": "0.001", "CHAT_RATE_BURST": str(BURST)}


@pytest.fixture(scope="module")
def slow_bucket_servers(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    """Two processes whose buckets hold BURST tokens and barely refill."""
    started = start_pods(tmp_path_factory.mktemp("budgets"), 2, **SLOW_REFILL)
    yield started
    stop_pods(started)


def message_ids(user: UserInfo, slug: str) -> list[int]:
    """The room's messages that are not deleted (a delete leaves a tombstone)."""
    from chat.models import Message

    return in_tenant(
        user.tenant,
        lambda: list(
            Message.objects.filter(room__slug=slug, deleted_at__isnull=True)
            .order_by("seq")
            .values_list("id", flat=True)
        ),
    )


def message_body(user: UserInfo, message_id: int) -> str:
    from chat.models import Message

    return in_tenant(user.tenant, lambda: Message.objects.get(pk=message_id).body)


async def answers_until_pong(ws: Any) -> list[dict[str, Any]]:
    """Every frame the socket gets up to the `pong` of a ping sent now (one consumer answers
    in order, so the answers of all earlier frames come before it)."""
    import json

    await send(ws, {"type": "ping"})
    frames = []
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "pong":
            return frames
        frames.append(frame)


def rate_limited(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("type") == "error" and f.get("code") == "rate_limited"]


async def test_edits_past_the_bucket_are_rate_limited_and_change_nothing(
    tenant_a, slow_bucket_servers
):
    server = slow_bucket_servers[0]
    user = make_user_in(tenant_a)
    slug = unique("edits-")
    insert_messages(user, slug, 1)
    [message_id] = message_ids(user, slug)
    async with Sockets() as sockets:
        ws = await sockets.room(server, user, slug)
        await ws_receive_type(ws, "presence")
        for n in range(BURST + 4):
            await send(ws, {"type": "edit", "id": message_id, "message": f"edit {n}"})
        frames = await answers_until_pong(ws)
    limited = rate_limited(frames)
    assert len(limited) == 4, frames
    assert all(f["retry_after"] > 0 for f in limited)
    assert message_body(user, message_id) == f"edit {BURST - 1}"  # the last one that passed


async def test_deletes_past_the_bucket_are_rate_limited_and_delete_nothing(
    tenant_a, slow_bucket_servers
):
    server = slow_bucket_servers[0]
    user = make_user_in(tenant_a)
    slug = unique("deletes-")
    insert_messages(user, slug, BURST + 4)
    ids = message_ids(user, slug)
    async with Sockets() as sockets:
        ws = await sockets.room(server, user, slug)
        await ws_receive_type(ws, "presence")
        for message_id in ids:
            await send(ws, {"type": "delete", "id": message_id})
        frames = await answers_until_pong(ws)
    limited = rate_limited(frames)
    assert len(limited) == 4, frames
    assert all(f["retry_after"] > 0 for f in limited)
    assert message_ids(user, slug) == ids[BURST:]  # the limited deletes left their messages


async def test_reads_past_the_bucket_are_rate_limited_and_move_no_marker(
    tenant_a, slow_bucket_servers
):
    server = slow_bucket_servers[0]
    user = make_user_in(tenant_a)
    slug = unique("reads-")
    insert_messages(user, slug, BURST + 4)
    async with Sockets() as sockets:
        ws = await sockets.room(server, user, slug)
        await ws_receive_type(ws, "presence")
        for seq in range(1, BURST + 5):
            await send(ws, {"type": "read", "seq": seq})
        frames = await answers_until_pong(ws)
    limited = rate_limited(frames)
    assert len(limited) == 4, frames
    assert all(f["retry_after"] > 0 for f in limited)
    assert read_marker(user, slug) == BURST


def test_rest_writes_alternating_between_two_processes_share_one_bucket(tenant_a, server_factory):
    env = {"CHAT_RATE_PER_SECOND": "0.001"}  # the default burst of 20, barely refilled
    servers = [server_factory(**env), server_factory(**env)]
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    slug = unique("rest-")
    insert_messages(user, slug, 1)
    statuses: list[tuple[int, int, str | None]] = []
    for n in range(24):
        server = servers[n % 2]
        with http(server, tenant_a.domain, token) as client:
            response = client.post(f"/api/rooms/{slug}/messages/", json={"message": f"m{n}"})
        statuses.append((n % 2, response.status_code, response.headers.get("Retry-After")))
    assert [s for _, s, _ in statuses[:20]] == [201] * 20, statuses
    refused = statuses[20:]
    assert [s for _, s, _ in refused] == [429] * 4, statuses
    assert {process for process, _, _ in refused} == {0, 1}  # refused on either process
    assert all(retry is not None and int(retry) > 0 for _, _, retry in refused)
    assert len(message_ids(user, slug)) == 1 + 20  # the refused writes stored nothing
    with http(servers[0], tenant_a.domain, token) as client:  # reads are not writes
        assert client.get(f"/api/rooms/{slug}/messages/").status_code == 200


def room_exists(user: UserInfo, slug: str) -> bool:
    from chat.models import Room

    return in_tenant(user.tenant, lambda: Room.objects.filter(slug=slug).exists())


async def test_joins_that_create_rooms_past_the_budget_close_4429_and_create_nothing(
    tenant_a, server_factory
):
    env = {"ROOM_CREATE_RATE": "3/h"}
    servers = [server_factory(**env), server_factory(**env)]
    user = make_user_in(tenant_a)
    created = [unique("new-") for _ in range(3)]
    async with Sockets() as sockets:
        for n, slug in enumerate(created):  # alternating processes: one budget
            ws = await sockets.room(servers[n % 2], user, slug)
            assert (await ws_receive_type(ws, "presence"))["type"] == "presence"
        missing = unique("new-")
        refused = await sockets.room(servers[1], user, missing)
        assert await close_code(refused) == 4429
        again = await sockets.room(servers[0], user, created[0])  # joining costs nothing
        assert (await ws_receive_type(again, "presence"))["type"] == "presence"
    assert not room_exists(user, missing)
    assert all(room_exists(user, slug) for slug in created)


def test_creating_rooms_over_rest_past_the_budget_answers_429(tenant_a, server_factory):
    servers = [server_factory(ROOM_CREATE_RATE="3/h"), server_factory(ROOM_CREATE_RATE="3/h")]
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    slugs = [unique("rest-room-") for _ in range(4)]
    answers = []
    for n, slug in enumerate(slugs):
        with http(servers[n % 2], tenant_a.domain, token) as client:
            answers.append(client.post("/api/rooms/", json={"slug": slug}))
    assert [r.status_code for r in answers] == [201, 201, 201, 429], [r.text for r in answers]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert not room_exists(user, slugs[-1])
