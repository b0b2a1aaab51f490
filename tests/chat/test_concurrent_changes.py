"""PROTOCOL section 6, "Concurrent changes", on real processes: two uvicorn pods, two sockets
that send their change of one message at the same moment, and a third member's socket that
counts what the room was told.

Each race runs ROUNDS times. A round ends with a ping on both racing sockets (a consumer
handles its frames in order, so the pong comes after its change was stored and published)
and then a fence message from the pod that the observer is NOT on: a frame from another pod
reaches the observer through Redis, in the order of the PUBLISHes, so every frame of the
round is in front of the fence (a frame of the observer's own pod is delivered at once).

A room delete (REST, pod A) races the delete of (or a reaction to) a message with
attachments (socket, pod B) the same way, the frame sent a little later each round; the
room's kick ends each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import websockets

from tests.chat.test_attachments import stored_files
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    make_user_in,
    start_pods,
    stop_pods,
    tokens_for,
    unique,
)
from tests.realtime_helpers import (
    Frame,
    Sockets,
    fence,
    frames_until,
    in_tenant,
    is_message,
    of_type,
    rest_history,
    room_path,
    send,
)
from tests.support import TIMEOUT, ws_connect

ROUNDS = 20
# Both racing sockets write several frames a round: the per-socket budget is not under test.
FAST = {"CHAT_RATE_PER_SECOND": "1000", "CHAT_RATE_BURST": "1000", "ROOM_CREATE_RATE": "1000/min"}


@dataclass(frozen=True)
class Hooked:
    tenant: TenantInfo
    webhook_id: int


@pytest.fixture(scope="module")
def hooked(tenant_a: TenantInfo, django_db_blocker: Any) -> Iterator[Hooked]:
    """The tenant with a webhook for the events counted here, for this module only (its
    deliveries are counted as rows; no receiver runs)."""

    def hook() -> int:
        from integrations import webhooks
        from integrations.models import Webhook

        return Webhook.objects.create(
            url="http://127.0.0.1:9/hook",
            events=["message.deleted", "message.edited", "reaction.added", "room.created"],
            secret=webhooks.new_secret(),
        ).pk

    def unhook() -> None:
        from integrations.models import Webhook

        Webhook.objects.filter(pk=webhook_id).delete()

    with django_db_blocker.unblock():
        webhook_id = in_tenant(tenant_a, hook)
    yield Hooked(tenant_a, webhook_id)
    with django_db_blocker.unblock():
        in_tenant(tenant_a, unhook)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pods' shared DATA_DIR (attachments are files under it)."""
    return tmp_path_factory.mktemp("races-data")


@pytest.fixture(scope="module")
def pods(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    started = start_pods(tmp_path_factory.mktemp("races"), 2, DATA_DIR=str(data_dir), **FAST)
    yield started
    stop_pods(started)


class Room:
    """The author on pod A, an admin on pod B (either may change the author's messages)
    and an observer on pod A."""

    def __init__(self, sockets: Sockets, pods: list[LiveServer], tenant: TenantInfo):
        self.sockets, self.pods, self.tenant = sockets, pods, tenant
        self.slug = unique("race_")
        self.author = make_user_in(tenant)
        self.admin = make_user_in(tenant, is_admin=True)
        self.member = make_user_in(tenant)

    async def open(self) -> None:
        pod_a, pod_b = self.pods
        self.a = await self.sockets.room(pod_a, self.author, self.slug)
        self.b = await self.sockets.room(pod_b, self.admin, self.slug)
        self.observer = await self.sockets.room(pod_a, self.member, self.slug)
        for ws in (self.a, self.b, self.observer):
            await frames_until(ws, of_type("presence"))

    async def post(self, text: str, parent_id: int | None = None) -> Frame:
        """A message by the author, once every socket has it."""
        frame: Frame = {"type": "message", "message": text}
        if parent_id is not None:
            frame["parent_id"] = parent_id
        await send(self.a, frame)
        stored = (await frames_until(self.a, is_message(text)))[-1]
        for ws in (self.b, self.observer):
            await frames_until(ws, is_message(text))
        return stored

    async def race(
        self, frame_a: Frame, frame_b: Frame
    ) -> tuple[list[Frame], list[Frame], list[Frame]]:
        """Send both frames at the same moment; returns what A, B and the observer got for it."""

        async def change(ws: Any, frame: Frame) -> None:
            await ws.send(json.dumps(frame))
            await send(ws, {"type": "ping"})

        await asyncio.gather(change(self.a, frame_a), change(self.b, frame_b))
        got_a, got_b = await asyncio.gather(
            frames_until(self.a, of_type("pong")), frames_until(self.b, of_type("pong"))
        )
        _, seen = await fence(self.b, self.observer)
        return got_a, got_b, seen

    async def race_a_delete(
        self, change: Frame, text: str, *, parent_id: int | None = None, aim: str = "id"
    ) -> Raced:
        """The author posts `text`; then A sends `change` aimed at that message (its `aim`
        field set to the message's id) while B deletes it. B's delete is never refused (a
        delete after the change still deletes); A's change lands or is `not_found`."""
        target = (await self.post(text, parent_id))["id"]
        got_a, got_b, seen = await self.race(
            {**change, aim: target}, {"type": "delete", "id": target}
        )
        assert _errors(got_b) == [], got_b
        lost = _errors(got_a) == ["not_found"]
        assert lost or _errors(got_a) == [], got_a
        return Raced(target=target, lost=lost, got_a=got_a, seen=seen)


class Raced(NamedTuple):
    """One round of a change racing a delete: the message, whether the change was refused
    `not_found`, what A got and what the observer saw."""

    target: int
    lost: bool
    got_a: list[Frame]
    seen: list[Frame]


@asynccontextmanager
async def race_room(pods: list[LiveServer], tenant: TenantInfo) -> AsyncIterator[Room]:
    """A Room whose three sockets are open (past `presence`); they close when the block ends."""
    async with Sockets() as sockets:
        room = Room(sockets, pods, tenant)
        await room.open()
        yield room


def _errors(frames: list[Frame]) -> list[str]:
    return [frame["code"] for frame in frames if frame.get("type") == "error"]


def _of(frames: list[Frame], frame_type: str, message_id: int) -> list[Frame]:
    return [f for f in frames if f.get("type") == frame_type and f.get("id") == message_id]


def _rows(tenant: TenantInfo, ids: list[int]) -> dict[int, dict[str, Any]]:
    from chat.models import Message

    return in_tenant(
        tenant,
        lambda: {
            row["id"]: row
            for row in Message.objects.filter(pk__in=ids).values(
                "id", "body", "edited_at", "deleted_at", "reply_count", "reactions"
            )
        },
    )


def _deliveries(hooked: Hooked, event: str) -> Counter[int]:
    """How many deliveries of `event` to the module's webhook name each message id."""
    from integrations.models import Delivery

    bodies = in_tenant(
        hooked.tenant,
        lambda: list(
            Delivery.objects.filter(webhook_id=hooked.webhook_id, event=event).values_list(
                "body", flat=True
            )
        ),
    )
    counted: Counter[int] = Counter()
    for body in bodies:
        data = json.loads(body)["data"]
        counted[data["message"]["id"] if "message" in data else data["message_id"]] += 1
    return counted


async def test_two_deletes_of_one_reply_from_two_pods_delete_it_once(
    pods: list[LiveServer], hooked: Hooked
) -> None:
    tenant = hooked.tenant
    async with race_room(pods, tenant) as room:
        root = await room.post(unique("root-"))
        kept = [(await room.post(unique("kept-"), root["id"]))["id"] for _ in range(2)]
        replies: list[int] = []
        for _ in range(ROUNDS):
            reply = (await room.post(unique("reply-"), root["id"]))["id"]
            replies.append(reply)
            delete = {"type": "delete", "id": reply}
            got_a, got_b, seen = await room.race(delete, delete)
            outcomes = sorted(_errors(got_a) + _errors(got_b))
            assert outcomes == ["not_found"], (reply, got_a, got_b)
            assert len(_of(seen, "chat.message.deleted", reply)) == 1, seen
    rows = _rows(tenant, [root["id"], *kept, *replies])
    assert rows[root["id"]]["reply_count"] == len(kept)
    assert all(rows[reply]["deleted_at"] is not None for reply in replies)
    deleted_events = _deliveries(hooked, "message.deleted")
    assert [deleted_events[reply] for reply in replies] == [1] * ROUNDS
    history = [m for m in rest_history(pods[1], room.member, room.slug) if m["id"] == root["id"]]
    assert history[0]["reply_count"] == len(kept)


async def test_an_edit_racing_a_delete_never_edits_the_deleted_message(
    pods: list[LiveServer], hooked: Hooked
) -> None:
    tenant = hooked.tenant
    outcomes: Counter[str] = Counter()
    async with race_room(pods, tenant) as room:
        root = await room.post(unique("root-"))
        raced: dict[int, tuple[str, str, bool]] = {}
        for n in range(ROUNDS):
            original, edited = unique("before-"), unique("after-")
            target, edit_lost, _, seen = await room.race_a_delete(
                {"type": "edit", "message": edited},
                original,
                parent_id=root["id"] if n % 2 else None,
            )
            outcomes["edit lost" if edit_lost else "edit first"] += 1
            raced[target] = (original, edited, edit_lost)
            assert len(_of(seen, "chat.message.deleted", target)) == 1, seen
            assert len(_of(seen, "chat.message.edited", target)) == (0 if edit_lost else 1), seen
    rows = _rows(tenant, [root["id"], *raced])
    edited_events = _deliveries(hooked, "message.edited")
    for target, (original, edited, edit_lost) in raced.items():
        row = rows[target]
        assert row["deleted_at"] is not None
        if edit_lost:
            assert (row["body"], row["edited_at"]) == (original, None), row
            assert edited_events[target] == 0
        else:
            # The edit committed before the delete read the row: it is an edit of a live
            # message, earlier than the deletion.
            assert row["body"] == edited and row["edited_at"] < row["deleted_at"], row
            assert edited_events[target] == 1
    assert _deliveries(hooked, "message.deleted")[root["id"]] == 0
    assert [_deliveries(hooked, "message.deleted")[t] for t in raced] == [1] * ROUNDS
    assert rows[root["id"]]["reply_count"] == 0
    print("edit/delete outcomes:", dict(outcomes))


async def test_a_reaction_racing_a_delete_lands_before_it_or_gets_not_found(
    pods: list[LiveServer], hooked: Hooked
) -> None:
    tenant = hooked.tenant
    from chat.models import Reaction

    async with race_room(pods, tenant) as room:
        raced: dict[int, bool] = {}
        for _ in range(ROUNDS):
            target, react_lost, _, seen = await room.race_a_delete(
                {"type": "react", "emoji": "+1"}, unique("react-")
            )
            raced[target] = react_lost
            assert len(_of(seen, "chat.reaction", target)) == (0 if react_lost else 1), seen
    rows = _rows(tenant, list(raced))
    reacted = in_tenant(
        tenant,
        lambda: dict(
            Reaction.objects.filter(message_id__in=list(raced)).values_list(
                "message_id", "created_at"
            )
        ),
    )
    added_events = _deliveries(hooked, "reaction.added")
    for target, react_lost in raced.items():
        row = rows[target]
        if react_lost:
            assert target not in reacted and row["reactions"] == {} and not added_events[target]
        else:
            assert reacted[target] < row["deleted_at"] and row["reactions"] == {"+1": 1}
            assert added_events[target] == 1


async def test_many_first_joins_of_a_missing_room_make_one_room(
    pods: list[LiveServer], hooked: Hooked
) -> None:
    """ "Joining a room that does not exist creates it": eight first joins at once, on both
    pods, all get in, and there is one room, reported once."""
    from chat.models import Room
    from integrations.models import Delivery

    tenant = hooked.tenant
    users = [make_user_in(tenant) for _ in range(8)]
    tokens = [tokens_for(user)["access"] for user in users]
    slugs = [unique("first_") for _ in range(ROUNDS // 2)]
    for slug in slugs:
        start = asyncio.Event()

        async def join(n: int, slug: str = slug, start: asyncio.Event = start) -> Frame:
            await start.wait()
            ws = await ws_connect(pods[n % 2].ws_url, tenant.domain, room_path(slug, tokens[n]))
            try:
                return (await frames_until(ws, of_type("presence")))[-1]
            except websockets.ConnectionClosed:
                return {"closed": ws.close_code}
            finally:
                await ws.close()

        tasks = [asyncio.create_task(join(n)) for n in range(len(users))]
        await asyncio.sleep(0)
        start.set()
        frames = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        assert [frame.get("type") for frame in frames] == ["presence"] * len(users), frames
    made = in_tenant(
        tenant, lambda: Counter(Room.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    )
    bodies = in_tenant(
        tenant,
        lambda: list(
            Delivery.objects.filter(webhook_id=hooked.webhook_id, event="room.created").values_list(
                "body", flat=True
            )
        ),
    )
    reported = Counter(json.loads(body)["data"]["room"]["slug"] for body in bodies)
    assert [(made[slug], reported[slug]) for slug in slugs] == [(1, 1)] * len(slugs)


async def test_a_reply_racing_the_delete_of_its_root_is_stored_before_it_or_refused(
    pods: list[LiveServer], hooked: Hooked
) -> None:
    """The seq trigger counts a reply on its root under the root's row lock, re-checking that
    the root is live: a reply either lands before the deletion (and is counted) or is
    `not_found`; it is never stored under a root deleted before it."""
    from chat.models import Message

    tenant = hooked.tenant
    async with race_room(pods, tenant) as room:
        raced: dict[int, str] = {}
        for _ in range(ROUNDS):
            text = unique("late-reply-")
            root, reply_lost, got_a, seen = await room.race_a_delete(
                {"type": "message", "message": text}, unique("root-"), aim="parent_id"
            )
            stored = any(is_message(text)(frame) for frame in got_a)
            assert stored != reply_lost, got_a  # stored, or refused `not_found`
            assert any(is_message(text)(frame) for frame in seen) == stored, seen
            assert len(_of(seen, "chat.message.deleted", root)) == 1, seen
            raced[root] = text if stored else ""
    rows = _rows(tenant, list(raced))
    replies = in_tenant(
        tenant,
        lambda: {
            parent: created
            for parent, created in Message.objects.filter(parent_id__in=list(raced)).values_list(
                "parent_id", "created_at"
            )
        },
    )
    for root, text in raced.items():
        assert rows[root]["reply_count"] == (1 if text else 0), rows[root]
        assert (root in replies) == bool(text)
        if text:
            assert replies[root] < rows[root]["deleted_at"]
    print("reply/delete outcomes:", Counter("stored" if t else "refused" for t in raced.values()))


def _client(server: LiveServer, user: UserInfo) -> httpx.AsyncClient:
    """An HTTP client of `server` for `user` (async: the sockets are read meanwhile)."""
    headers = {"Host": user.tenant.domain, "Authorization": f"Bearer {tokens_for(user)['access']}"}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=TIMEOUT)


async def _frames_until_closed(ws: Any) -> tuple[list[Frame], int | None]:
    """Every frame until the server closes the socket, and its close code (None: still open
    after TIMEOUT)."""
    frames: list[Frame] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                frames.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed:
        pass
    except TimeoutError:
        return frames, None
    return frames, ws.close_code


# The frame a change racing a room delete is answered with when it comes first.
ANSWER_OF = {"delete": "chat.message.deleted", "react": "chat.reaction"}
EXTRA_OF: dict[str, Frame] = {"delete": {}, "react": {"emoji": "+1"}}


@pytest.mark.parametrize("change", ["delete", "react"])
async def test_a_room_delete_racing_a_change_of_a_message_with_attachments_removes_everything(
    pods: list[LiveServer], hooked: Hooked, data_dir: Path, change: str
) -> None:
    """An admin deletes the room over REST on pod A while the author deletes (or reacts to)
    a message with attachments in it on pod B: the room delete is a 204, the change is
    stored or `not_found` (or unanswered: the room's kick may close the socket first), the
    socket closes 4403, and the room, its messages, reactions, attachment rows and files are
    gone. Neither is answered 5xx/`unavailable` (a deadlock of the two transactions, or a
    reaction left behind its deleted message)."""
    from chat.models import Attachment, Message, Reaction
    from chat.models import Room as RoomRow

    tenant = hooked.tenant
    pod_a, pod_b = pods
    admin, author = make_user_in(tenant, is_admin=True), make_user_in(tenant)
    outcomes: Counter[str] = Counter()
    slugs: list[str] = []
    message_ids: list[int] = []
    attachment_ids: list[int] = []
    keys: set[str] = set()
    async with (
        Sockets() as sockets,
        _client(pod_a, admin) as admin_a,
        _client(pod_b, author) as author_b,
    ):
        for n in range(ROUNDS):
            slug = unique("gone_")
            slugs.append(slug)
            assert (await admin_a.post("/api/rooms/", json={"slug": slug})).status_code == 201
            ids = []
            for k in range(2):
                response = await author_b.post(
                    f"/api/rooms/{slug}/attachments/",
                    files={"file": (f"f{k}.txt", f"file {k} of {slug}\n".encode(), "text/plain")},
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            response = await author_b.post(
                f"/api/rooms/{slug}/messages/", json={"message": "files", "attachments": ids}
            )
            assert response.status_code == 201, response.text
            message_id = response.json()["id"]
            message_ids.append(message_id)
            attachment_ids.extend(ids)
            keys |= set(
                in_tenant(
                    tenant,
                    lambda ids=ids: list(
                        Attachment.objects.filter(pk__in=ids).values_list("storage_key", flat=True)
                    ),
                )
            )
            ws = await sockets.room(pod_b, author, slug)
            await frames_until(ws, of_type("presence"))

            async def change_message(ws: Any = ws, message_id: int = message_id, n: int = n) -> Any:
                # The REST delete reaches its transaction some milliseconds after a frame
                # reaches the consumer's: the frame goes 0 to 18 ms later, so that in some
                # rounds the two transactions overlap at every point.
                await asyncio.sleep(n % 10 * 0.002)
                with contextlib.suppress(websockets.ConnectionClosed):  # the kick came first
                    await send(ws, {"type": change, "id": message_id, **EXTRA_OF[change]})
                return await _frames_until_closed(ws)

            (frames, closed), room_deleted = await asyncio.gather(
                change_message(), admin_a.delete(f"/api/rooms/{slug}/")
            )
            assert room_deleted.status_code == 204, (room_deleted.status_code, room_deleted.text)
            errors = _errors(frames)
            assert errors in ([], ["not_found"]), frames
            assert closed == 4403, (closed, frames)
            answered = _of(frames, ANSWER_OF[change], message_id)
            assert len(answered) <= 1 and not (answered and errors), frames
            outcomes[
                f"{change} first" if answered else "room first" if errors else "unanswered"
            ] += 1
    left = in_tenant(
        tenant,
        lambda: (
            RoomRow.objects.filter(slug__in=slugs).count(),
            Message.objects.filter(pk__in=message_ids).count(),
            Attachment.objects.filter(pk__in=attachment_ids).count(),
            Reaction.objects.filter(message_id__in=message_ids).count(),
        ),
    )
    assert left == (0, 0, 0, 0)
    # A message delete that won removes its files after its commit, which the room delete
    # waited for; an unanswered one may still be at it.
    deadline = time.monotonic() + 5
    while True:
        left_files = keys & stored_files(data_dir)
        if not left_files or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert not left_files
    print(f"room delete/{change} outcomes:", dict(outcomes))


async def test_uploads_racing_a_room_delete_are_stored_before_it_or_not_found(
    pods: list[LiveServer], hooked: Hooked, data_dir: Path
) -> None:
    """Three uploads on pod B race the delete of their room (which has an upload already) on
    pod A: the room delete is a 204, each upload a 201 or a 404, and nothing of the room is
    left (rows, files), the tenant's counter still the sum of its rows' sizes. Neither is
    answered 503 (a deadlock: the upload's foreign key took the room's lock only at its
    commit, after the tenant row that the room delete waited for)."""
    from django.db.models import Sum

    from chat.models import Attachment
    from chat.models import Room as RoomRow
    from tenants.models import Tenant

    tenant = hooked.tenant
    pod_a, pod_b = pods
    admin, author = make_user_in(tenant, is_admin=True), make_user_in(tenant)
    outcomes: Counter[tuple[int, ...]] = Counter()
    room_ids: list[int] = []

    async def upload(client: httpx.AsyncClient, slug: str, delay: float = 0) -> int:
        await asyncio.sleep(delay)
        response = await client.post(
            f"/api/rooms/{slug}/attachments/", files={"file": ("a.txt", b"hi\n", "text/plain")}
        )
        return response.status_code

    async def delete_room(client: httpx.AsyncClient, slug: str, delay: float) -> httpx.Response:
        await asyncio.sleep(delay)
        return await client.delete(f"/api/rooms/{slug}/")

    async with _client(pod_a, admin) as admin_a, _client(pod_b, author) as author_b:
        for n in range(ROUNDS):
            slug = unique("up_")
            assert (await admin_a.post("/api/rooms/", json={"slug": slug})).status_code == 201
            room_ids.append(in_tenant(tenant, lambda slug=slug: RoomRow.objects.get(slug=slug).pk))
            # The room delete releases bytes (the tenant row's lock) only if it has some.
            assert await upload(author_b, slug) == 201
            # An upload reaches its transaction later than a delete (the multipart body): the
            # delete goes 0 to 18 ms after the uploads, which go a millisecond apart.
            room_deleted, *uploads = await asyncio.gather(
                delete_room(admin_a, slug, n % 10 * 0.002),
                *(upload(author_b, slug, k * 0.001) for k in range(3)),
            )
            assert room_deleted.status_code == 204, (room_deleted.status_code, room_deleted.text)
            assert set(uploads) <= {201, 404}, uploads
            outcomes[tuple(sorted(uploads))] += 1

    def left() -> tuple[int, int, int]:
        used = Tenant.objects.get(schema_name=tenant.schema_name).attachment_bytes_used
        total = Attachment.objects.aggregate(total=Sum("size"))["total"] or 0
        return Attachment.objects.filter(room_id__in=room_ids).count(), used, total

    rows, used, total = in_tenant(tenant, left)
    assert rows == 0 and used == total
    prefixes = tuple(f"{tenant.schema_name}/{room_id}/" for room_id in room_ids)
    assert not [key for key in stored_files(data_dir) if key.startswith(prefixes)]
    print("upload outcomes:", dict(outcomes))
