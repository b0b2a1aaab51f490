"""The rooms and messages REST API over a real uvicorn process (PROTOCOL.md section 2).

Requests go to 127.0.0.1 with the tenant's domain in the `Host` header, as a load balancer
would forward them; WebSocket checks use the real `websockets` client on the same server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, TenantInfo, UserInfo, blocking, tokens_for, unique
from tests.realtime_helpers import CHAT_MESSAGE_FIELDS
from tests.support import TIMEOUT, ws_connect, ws_receive_type

ROOM_FIELDS = {"slug", "name", "is_private", "created_at", "unread_count", "kind"}


# --- helpers ---------------------------------------------------------------------------------


def _headers(tenant: TenantInfo, token: str | None) -> dict[str, str]:
    headers = {"Host": tenant.domain}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@contextmanager
def api(
    server: LiveServer,
    user: UserInfo | None = None,
    *,
    tenant: TenantInfo | None = None,
    token: str | None = None,
) -> Iterator[httpx.Client]:
    """An HTTP client on `server` for `user`'s tenant host, with `user`'s access token.

    `tenant` and `token` override the host and the token (anonymous when neither is known).
    """
    host = tenant or (user.tenant if user else None)
    assert host is not None
    if token is None and user is not None:
        token = tokens_for(user)["access"]
    with httpx.Client(
        base_url=server.url, headers=_headers(host, token), timeout=TIMEOUT
    ) as client:
        yield client


def create_room(client: httpx.Client) -> str:
    slug = unique("room_")
    response = client.post("/api/rooms/", json={"slug": slug})
    assert response.status_code == 201, response.text
    return slug


def create_private_room(owner: UserInfo) -> str:
    """A private room whose only member is `owner` (through the service, whoever `owner` is)."""
    from chat.services import Actor, room_create

    slug = unique("room_")
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
    return slug


def post_messages(client: httpx.Client, slug: str, count: int) -> list[dict[str, Any]]:
    frames = []
    for n in range(1, count + 1):
        response = client.post(f"/api/rooms/{slug}/messages/", json={"message": f"m{n}"})
        assert response.status_code == 201, response.text
        frames.append(response.json())
    return frames


def all_rooms(client: httpx.Client) -> list[dict[str, Any]]:
    """Every page of GET /api/rooms/."""
    rooms: list[dict[str, Any]] = []
    page = 1
    while True:
        response = client.get("/api/rooms/", params={"page": page})
        assert response.status_code == 200, response.text
        body = response.json()
        rooms.extend(body["results"])
        if not body.get("next"):
            return rooms
        page += 1


def seqs(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [frame["seq"] for frame in response.json()]


def insert_messages(user: UserInfo, slug: str, count: int) -> None:
    """Many rows at once, straight into the tenant's schema (the seq trigger still runs)."""
    from django.db import transaction

    from chat.models import Message, Room
    from tenants.context import run_in_schema

    def insert() -> None:
        room = Room.objects.get(slug=slug)
        with transaction.atomic():
            for n in range(count):
                Message.objects.create(room=room, user_id=user.id, body=f"bulk {n}")

    blocking(lambda: run_in_schema(user.tenant.schema_name, insert))


# --- rooms -----------------------------------------------------------------------------------


def test_room_list_shows_public_rooms_and_only_own_private_rooms(live_server, tenant_a, make_user):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    with api(live_server, alice) as as_alice, api(live_server, bob) as as_bob:
        public = create_room(as_bob)
        alice_private = create_private_room(alice)
        bob_private = create_private_room(bob)
        rooms = all_rooms(as_alice)

    by_slug = {room["slug"]: room for room in rooms}
    assert public in by_slug
    assert alice_private in by_slug
    assert bob_private not in by_slug
    assert by_slug[public]["is_private"] is False
    assert by_slug[alice_private]["is_private"] is True
    for room in rooms:
        assert set(room) == ROOM_FIELDS


def test_room_list_counts_unread_messages(live_server, tenant_a, make_user):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    with api(live_server, alice) as as_alice, api(live_server, bob) as as_bob:
        slug = create_room(as_alice)
        post_messages(as_alice, slug, 3)
        rooms = {room["slug"]: room for room in all_rooms(as_bob)}
    assert rooms[slug]["unread_count"] == 3


def test_creating_a_room_answers_201_with_the_room(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    slug = unique("room_")
    with api(live_server, alice) as client:
        response = client.post("/api/rooms/", json={"slug": slug, "name": "Lobby"})
        listed = {room["slug"]: room for room in all_rooms(client)}

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ROOM_FIELDS
    assert body["slug"] == slug
    assert body["name"] == "Lobby"
    assert body["is_private"] is False
    assert body["unread_count"] == 0
    assert body["created_at"]
    assert listed[slug]["name"] == "Lobby"


def test_admin_creating_a_private_room_becomes_its_member(live_server, tenant_a, make_user):
    admin, other = make_user(tenant_a, is_admin=True), make_user(tenant_a)
    slug = unique("room_")
    with api(live_server, admin) as as_admin, api(live_server, other) as as_other:
        response = as_admin.post("/api/rooms/", json={"slug": slug, "is_private": True})
        admin_sees = {room["slug"] for room in all_rooms(as_admin)}
        other_sees = {room["slug"] for room in all_rooms(as_other)}
    assert response.status_code == 201, response.text
    assert response.json()["is_private"] is True
    assert slug in admin_sees
    assert slug not in other_sees


def test_creating_a_room_with_a_taken_slug_is_400_naming_slug(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        response = client.post("/api/rooms/", json={"slug": slug})
    assert response.status_code == 400
    assert "slug" in response.json()


@pytest.mark.parametrize("slug", ["a.b", "has space", "s" * 65, ""])
def test_creating_a_room_with_a_bad_slug_is_400_naming_slug(live_server, tenant_a, make_user, slug):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        response = client.post("/api/rooms/", json={"slug": slug})
    assert response.status_code == 400
    assert "slug" in response.json()


def test_anonymous_room_list_is_401(live_server, tenant_a):
    with api(live_server, tenant=tenant_a) as client:
        response = client.get("/api/rooms/")
    assert response.status_code == 401
    assert "detail" in response.json()


def test_token_of_another_tenant_is_401(live_server, tenant_a, tenant_b, make_user):
    outsider = make_user(tenant_b)
    token = tokens_for(outsider)["access"]
    with api(live_server, tenant=tenant_a, token=token) as client:
        rooms = client.get("/api/rooms/")
        me = client.get("/api/me/")
    assert rooms.status_code == 401
    assert me.status_code == 401


# --- message history -------------------------------------------------------------------------


@pytest.fixture
def seven_messages(live_server, tenant_a, make_user) -> Iterator[tuple[httpx.Client, str]]:
    """A room with messages m1..m7 (seq 1..7), and a client of its author."""
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        post_messages(client, slug, 7)
        yield client, slug


def test_history_without_params_is_newest_first(seven_messages):
    client, slug = seven_messages
    assert seqs(client.get(f"/api/rooms/{slug}/messages/")) == [7, 6, 5, 4, 3, 2, 1]


def test_history_before_a_seq_is_older_messages_newest_first(seven_messages):
    client, slug = seven_messages
    response = client.get(f"/api/rooms/{slug}/messages/", params={"before": 5})
    assert seqs(response) == [4, 3, 2, 1]


def test_history_after_a_seq_is_newer_messages_oldest_first(seven_messages):
    client, slug = seven_messages
    response = client.get(f"/api/rooms/{slug}/messages/", params={"after": 3})
    assert seqs(response) == [4, 5, 6, 7]


def test_history_limit_returns_that_many_newest(seven_messages):
    client, slug = seven_messages
    response = client.get(f"/api/rooms/{slug}/messages/", params={"limit": 2})
    assert seqs(response) == [7, 6]


def test_history_items_are_chat_message_frames(seven_messages):
    client, slug = seven_messages
    response = client.get(f"/api/rooms/{slug}/messages/", params={"after": 0})
    frames = response.json()
    assert [frame["message"] for frame in frames] == [f"m{n}" for n in range(1, 8)]
    for frame in frames:
        assert set(frame) == CHAT_MESSAGE_FIELDS
        assert frame["type"] == "chat.message"
        assert frame["room"] == slug
        assert frame["edited_at"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"before": "abc"}, "before"),
        ({"after": "abc"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_history_with_malformed_params_is_400_naming_the_param(seven_messages, params, field):
    client, slug = seven_messages
    response = client.get(f"/api/rooms/{slug}/messages/", params=params)
    assert response.status_code == 400
    assert field in response.json()


def test_history_limit_over_the_maximum_is_capped_at_200(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        insert_messages(alice, slug, 205)
        capped = client.get(f"/api/rooms/{slug}/messages/", params={"limit": 1000})
        default = client.get(f"/api/rooms/{slug}/messages/")
    assert seqs(capped) == list(range(205, 5, -1))
    assert len(seqs(default)) == 50


def test_history_of_an_unknown_room_is_404(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        response = client.get(f"/api/rooms/{unique('room_')}/messages/")
    assert response.status_code == 404


def test_private_room_messages_are_404_for_a_non_member(live_server, tenant_a, make_user):
    owner, stranger = make_user(tenant_a), make_user(tenant_a)
    with api(live_server, owner) as as_owner, api(live_server, stranger) as as_stranger:
        slug = create_private_room(owner)
        post_messages(as_owner, slug, 1)
        read = as_stranger.get(f"/api/rooms/{slug}/messages/")
        write = as_stranger.post(f"/api/rooms/{slug}/messages/", json={"message": "let me in"})
        owner_view = as_owner.get(f"/api/rooms/{slug}/messages/")
    assert read.status_code == 404
    assert write.status_code == 404
    assert [frame["message"] for frame in owner_view.json()] == ["m1"]


# --- posting messages ------------------------------------------------------------------------


async def test_posted_message_is_201_and_reaches_room_sockets_once(
    live_server, tenant_a, make_user
):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    slug = unique("room_")
    client_id = unique("cid-")
    headers = _headers(tenant_a, tokens_for(alice)["access"])
    ws = await ws_connect(
        live_server.ws_url, tenant_a.domain, f"/ws/chat/{slug}/?token={tokens_for(bob)['access']}"
    )
    try:
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=headers, timeout=TIMEOUT
        ) as client:
            url = f"/api/rooms/{slug}/messages/"
            created = await client.post(url, json={"message": "over rest", "client_id": client_id})
            live = await ws_receive_type(ws, "chat.message")

            resent = await client.post(url, json={"message": "over rest", "client_id": client_id})
            marker = await client.post(url, json={"message": "marker"})
            next_live = await ws_receive_type(ws, "chat.message")
    finally:
        await ws.close()

    assert created.status_code == 201, created.text
    frame = created.json()
    assert set(frame) == CHAT_MESSAGE_FIELDS
    assert frame["type"] == "chat.message"
    assert frame["user"] == alice.username
    assert frame["room"] == slug
    assert frame["message"] == "over rest"
    assert frame["client_id"] == client_id
    assert live == frame

    assert resent.status_code == 200, resent.text
    assert resent.json() == frame
    assert marker.status_code == 201, marker.text
    assert next_live == marker.json()  # the resend was not broadcast
    assert marker.json()["seq"] == frame["seq"] + 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"message": ""}, id="empty"),
        pytest.param({"message": "   "}, id="blank"),
        pytest.param({"message": "x" * 4001}, id="4001-chars"),
        pytest.param({"message": "a\u0000b"}, id="nul-character"),
        pytest.param({}, id="missing"),
    ],
)
def test_posting_a_bad_message_is_400_naming_message_and_stores_nothing(
    live_server, tenant_a, make_user, body
):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        response = client.post(f"/api/rooms/{slug}/messages/", json=body)
        stored = client.get(f"/api/rooms/{slug}/messages/")
    assert response.status_code == 400
    assert "message" in response.json()
    assert stored.json() == []


def test_posting_a_message_of_4000_characters_is_201(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        response = client.post(f"/api/rooms/{slug}/messages/", json={"message": "y" * 4000})
    assert response.status_code == 201, response.text
    assert len(response.json()["message"]) == 4000


def test_posting_non_json_is_400(live_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(live_server, alice) as client:
        slug = create_room(client)
        response = client.post(
            f"/api/rooms/{slug}/messages/",
            content=b"not json",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert "detail" in json.loads(response.text)
