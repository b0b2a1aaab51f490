"""Helpers for the section 3 tests on real uvicorn processes: sockets that close themselves,
frame readers, fences, fast message inserts and the REST views a client checks afterwards.

A *fence* proves that something did NOT happen without sleeping: a frame that the server
is known to send after the one we fear is awaited, and the frames read until then must not
contain the feared one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import websockets

from tests.api_helpers import assert_paginated, http
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    start_server,
    tokens_for,
    unique,
)
from tests.support import TIMEOUT, ws_connect

Frame = dict[str, Any]

# The periodic re-check of a safety-net server (section 3: "within 60 s even if the channel
# layer lost the kick"); a lost kick is repaired by its next pass, at most 1.25 intervals
# away, plus the query, which SAFETY_NET_TIMEOUT allows for on a busy machine.
SAFETY_NET_INTERVAL = 1.0
SAFETY_NET_TIMEOUT = 20.0

# Every field of a `chat.message` frame (PROTOCOL.md sections 3 and 6; `reply_count` on
# top-level messages, which are the ones the tests compare).
CHAT_MESSAGE_FIELDS = {
    "type",
    "id",
    "seq",
    "room",
    "user",
    "message",
    "client_id",
    "created_at",
    "edited_at",
    "parent_id",
    "reply_count",
    "reactions",
    "attachments",
}


def room_path(slug: str, token: str, since: int | str | None = None) -> str:
    path = f"/ws/chat/{slug}/?token={token}"
    return path if since is None else f"{path}&since={since}"


def notifications_path(token: str) -> str:
    return f"/ws/notifications/?token={token}"


class Sockets:
    """Real sockets opened inside an `async with` block, all closed when it ends."""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    async def __aenter__(self) -> Sockets:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(ws.close() for ws in self.opened), return_exceptions=True)

    async def open(self, server: LiveServer, host: str, path: str) -> Any:
        ws = await ws_connect(server.ws_url, host, path)
        self.opened.append(ws)
        return ws

    async def room(
        self,
        server: LiveServer,
        user: UserInfo,
        slug: str,
        *,
        token: str | None = None,
        since: int | None = None,
    ) -> Any:
        """A room socket, nothing read from it yet (its first frame is `presence`)."""
        token = token or tokens_for(user)["access"]
        return await self.open(server, user.tenant.domain, room_path(slug, token, since))

    async def notifications(
        self, server: LiveServer, user: UserInfo, *, token: str | None = None
    ) -> Any:
        token = token or tokens_for(user)["access"]
        return await self.open(server, user.tenant.domain, notifications_path(token))


async def send(ws: Any, frame: Frame) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: Any, timeout: float = TIMEOUT) -> Frame:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def frames_until(
    ws: Any, stop: Callable[[Frame], bool], timeout: float = TIMEOUT
) -> list[Frame]:
    """Every frame up to and including the first one for which `stop` is true."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if stop(frame):
                return frames


async def frames_during(ws: Any, seconds: float) -> list[Frame]:
    """Every frame that arrives within `seconds` (the socket staying open all along)."""
    frames: list[Frame] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frames.append(json.loads(await ws.recv()))
    except TimeoutError:
        pass
    return frames


def of_type(frame_type: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("type") == frame_type


def is_message(text: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("type") == "chat.message" and frame.get("message") == text


async def say(ws: Any, text: str | None = None) -> Frame:
    """Send a message and wait for its own `chat.message` echo; returns that frame."""
    text = text or unique("msg-")
    await send(ws, {"type": "message", "message": text})
    return (await frames_until(ws, is_message(text)))[-1]


async def fence(sender: Any, *observers: Any) -> list[list[Frame]]:
    """`sender` writes a unique message; each observer's frames up to (and including) it.

    Frames that the sender's consumer published before this message reach every observer
    before it (one consumer publishes in order), so they are all in the returned lists.
    """
    text = unique("fence-")
    await send(sender, {"type": "message", "message": text})
    return [await frames_until(ws, is_message(text)) for ws in (sender, *observers)]


async def ping_pong(ws: Any, timeout: float = TIMEOUT) -> list[Frame]:
    """The socket answers a `ping`; returns the frames read up to the `pong`."""
    await send(ws, {"type": "ping"})
    return await frames_until(ws, of_type("pong"), timeout)


async def error_of(ws: Any) -> Frame:
    """The next error frame; it names a code and says why."""
    frame = (await frames_until(ws, of_type("error")))[-1]
    assert isinstance(frame.get("detail"), str) and frame["detail"], frame
    return frame


async def assert_refused(ws: Any, frame: Frame, code: str) -> None:
    """`frame` is answered with error `code`, and the socket keeps working afterwards."""
    await send(ws, frame)
    error = await error_of(ws)
    assert error["code"] == code, error
    await ping_pong(ws)


async def close_code(ws: Any, timeout: float = TIMEOUT) -> int | None:
    """The close code the server sends within `timeout` (frames before it are dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


def start_safety_net(tmp_dir: Path) -> LiveServer:
    """A server whose re-check runs every SAFETY_NET_INTERVAL: a row changed behind the
    services' back (no kick published) closes its sockets only through that re-check."""
    return start_server(tmp_dir, WS_AUTH_RECHECK_INTERVAL=str(SAFETY_NET_INTERVAL))


def types(frames: list[Frame]) -> list[str]:
    return [frame.get("type", "") for frame in frames]


# --- tokens ---------------------------------------------------------------------------------


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read the way a client reads it (without the server's key)."""
    return jwt.decode(token, options={"verify_signature": False})


def access_with_lifetime(user: UserInfo, seconds: int) -> str:
    """An access token issued the way the token endpoint issues it, living `seconds`."""
    from django.contrib.auth import get_user_model

    from accounts.serializers import TenantTokenObtainPairSerializer
    from tenants.context import run_in_schema

    def issue() -> str:
        refresh = TenantTokenObtainPairSerializer.get_token(
            get_user_model().objects.get(pk=user.id)
        )
        access = refresh.access_token
        access.set_exp(lifetime=timedelta(seconds=seconds))
        return str(access)

    return blocking(lambda: run_in_schema(user.tenant.schema_name, issue))


# --- rows and REST -----------------------------------------------------------------------------


def in_tenant(tenant: TenantInfo, fn: Callable[[], Any]) -> Any:
    from tenants.context import run_in_schema

    return blocking(lambda: run_in_schema(tenant.schema_name, fn))


def insert_messages(author: UserInfo, slug: str, count: int) -> int:
    """`count` messages by `author` in room `slug` (created public if missing), in ONE
    INSERT ... SELECT generate_series; the trigger gives every row its seq. Returns the
    room's last seq."""
    from django.db import connection

    from chat.models import Room

    def insert() -> int:
        room, _ = Room.objects.get_or_create(slug=slug, defaults={"name": slug})
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO chat_message (room_id, user_id, body) "
                "SELECT %s, %s, 'bulk ' || n FROM generate_series(1, %s) AS n",
                [room.pk, author.id, count],
            )
        return Room.objects.get(pk=room.pk).last_seq

    return in_tenant(author.tenant, insert)


def read_marker(user: UserInfo, slug: str) -> int | None:
    from chat.models import ReadMarker

    def read() -> int | None:
        return (
            ReadMarker.objects.filter(room__slug=slug, user_id=user.id)
            .values_list("seq", flat=True)
            .first()
        )

    return in_tenant(user.tenant, read)


def rest_history(server: LiveServer, user: UserInfo, slug: str) -> list[Frame]:
    """The room's history over REST, oldest first (up to 200 messages)."""
    with http(server, user.tenant.domain, tokens_for(user)["access"]) as client:
        response = client.get(f"/api/rooms/{slug}/messages/", params={"after": 0, "limit": 200})
    assert response.status_code == 200, response.text
    return response.json()


def listed_room(server: LiveServer, user: UserInfo, slug: str) -> Frame | None:
    """The room object of `slug` in the user's GET /api/rooms/ (all pages), or None."""
    with http(server, user.tenant.domain, tokens_for(user)["access"]) as client:
        url: str | None = "/api/rooms/"
        while url:
            response = client.get(url)
            for room in assert_paginated(response):
                if room["slug"] == slug:
                    return room
            following = response.json()["next"]
            url = urlsplit(following)._replace(scheme="", netloc="").geturl() if following else None
    return None
