"""Bad input is answered, never fatal (issue 8, item 6): JSON nested thousands deep, names
with a trailing newline, and a room deleted while a message is being sent."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import websockets

from middleware.request_id import RequestIdMiddleware
from tests.api_helpers import assert_field_error, assert_socket_open, http, open_room_socket
from tests.conftest import TEST_DATABASE_URL, blocking, make_user_in, tokens_for, unique
from tests.support import TIMEOUT, ws_connect, ws_receive_type

DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"message": ' + "[" * 5000 + "]" * 5000 + "}"


def post_raw(server, host: str, path: str, body: str, token: str | None = None):
    with http(server, host, token) as client:
        return client.post(path, content=body, headers={"Content-Type": "application/json"})


# --- JSON nested 5000 deep ----------------------------------------------------------------


def test_deeply_nested_json_on_the_token_endpoint_is_400_not_500(live_server, tenant_a):
    for body in (DEEP, '{"username": ' + DEEP + ', "password": "x"}'):
        response = post_raw(live_server, tenant_a.domain, "/api/auth/token/", body)
        assert response.status_code == 400, response.text[:300]
        assert "detail" in response.json()
    assert "RecursionError" not in live_server.log()


def test_deeply_nested_json_on_an_authenticated_endpoint_is_400(live_server, tenant_a):
    token = tokens_for(make_user_in(tenant_a))["access"]
    slug = unique("deep-")
    with http(live_server, tenant_a.domain, token) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
    for path in ("/api/rooms/", f"/api/rooms/{slug}/messages/", "/api/auth/logout/"):
        response = post_raw(live_server, tenant_a.domain, path, DEEP_OBJECT, token)
        assert response.status_code == 400, (path, response.text[:300])


async def test_deeply_nested_json_on_a_room_socket_is_an_invalid_json_frame(live_server, tenant_a):
    user = make_user_in(tenant_a)
    ws = await open_room_socket(live_server, user, unique("deep-"))
    try:
        for frame in (DEEP, DEEP_OBJECT):
            await ws.send(frame)
            error = await ws_receive_type(ws, "error")
            assert error["code"] == "invalid_json", error
        await assert_socket_open(ws)
    finally:
        await ws.close()


async def test_deeply_nested_json_on_a_notification_socket_is_an_invalid_json_frame(
    live_server, tenant_a
):
    token = tokens_for(make_user_in(tenant_a))["access"]
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, f"/ws/notifications/?token={token}")
    try:
        await ws.send(DEEP)
        error = await ws_receive_type(ws, "error")
        assert error["code"] == "invalid_json", error
        await assert_socket_open(ws)
    finally:
        await ws.close()


# --- full matches: a trailing newline is not part of a name -------------------------------


def room_slugs(schema_name: str) -> list[str]:
    from chat.models import Room
    from tenants.context import run_in_schema

    def slugs() -> list[str]:
        return list(Room.objects.values_list("slug", flat=True))

    return blocking(lambda: run_in_schema(schema_name, slugs))


def test_a_room_slug_with_a_trailing_newline_is_400_over_rest(live_server, tenant_a):
    token = tokens_for(make_user_in(tenant_a))["access"]
    slug = unique("nl-")
    with http(live_server, tenant_a.domain, token) as client:
        response = client.post("/api/rooms/", json={"slug": f"{slug}\n"})
    assert_field_error(response, "slug")
    assert not [s for s in room_slugs(tenant_a.schema_name) if s.startswith(slug)]


async def test_a_room_path_with_a_trailing_newline_closes_4400(live_server, tenant_a):
    token = tokens_for(make_user_in(tenant_a))["access"]
    slug = unique("nl-")
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, f"/ws/chat/{slug}%0A/?token={token}")
    try:
        with_code = None
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed:
            with_code = ws.close_code
        assert with_code == 4400
    finally:
        await ws.close()
    assert not [s for s in room_slugs(tenant_a.schema_name) if s.startswith(slug)]


async def test_a_request_id_with_a_trailing_newline_is_replaced():
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(scope["request_id"])

    scope = {"type": "http", "headers": [(b"x-request-id", b"abc-123\n")]}
    await RequestIdMiddleware(app)(scope, None, None)
    scope = {"type": "http", "headers": [(b"x-request-id", b"abc-123")]}
    await RequestIdMiddleware(app)(scope, None, None)
    assert seen[0] != "abc-123\n" and "\n" not in seen[0]
    assert seen[1] == "abc-123"


# --- a room deleted during a send ---------------------------------------------------------


def _room_id(schema_name: str, slug: str) -> int:
    from chat.models import Room
    from tenants.context import run_in_schema

    return blocking(lambda: run_in_schema(schema_name, lambda: Room.objects.get(slug=slug).pk))


def _delete_room_row(schema_name: str, room_id: int) -> None:
    """The room's row goes, without the kick `room_delete` sends: the socket still thinks it
    is in the room, as one does whose kick is still on its way."""
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{schema_name}".chat_readmarker WHERE room_id = %s', [room_id])
        conn.execute(f'DELETE FROM "{schema_name}".chat_membership WHERE room_id = %s', [room_id])
        conn.execute(f'DELETE FROM "{schema_name}".chat_room WHERE id = %s', [room_id])


async def test_a_message_to_a_room_deleted_meanwhile_is_not_found_on_the_socket(
    live_server, tenant_a
):
    user = make_user_in(tenant_a)
    slug = unique("gone-")
    ws = await open_room_socket(live_server, user, slug)
    try:
        _delete_room_row(tenant_a.schema_name, _room_id(tenant_a.schema_name, slug))
        for frame in ({"message": "anyone?"}, {"message": "again", "client_id": unique("c")}):
            await ws.send(json.dumps(frame))
            error = await ws_receive_type(ws, "error")
            assert error["code"] == "not_found", error
        await assert_socket_open(ws)
    finally:
        await ws.close()


def test_a_room_deleted_during_a_rest_send_is_404(live_server, tenant_a):
    """The room row is deleted in a transaction that holds it locked while the request's
    INSERT waits for it: the request passed its room check and then finds no room."""
    token = tokens_for(make_user_in(tenant_a))["access"]
    slug = unique("gone-")
    with http(live_server, tenant_a.domain, token) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
    room_id = _room_id(tenant_a.schema_name, slug)
    with psycopg.connect(TEST_DATABASE_URL) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute(f'DELETE FROM "{tenant_a.schema_name}".chat_room WHERE id = %s', [room_id])
        sent = threading.Event()

        def send():
            sent.set()
            with http(live_server, tenant_a.domain, token) as client:
                return client.post(f"/api/rooms/{slug}/messages/", json={"message": "hi"})

        future = pool.submit(send)
        sent.wait(TIMEOUT)
        # Wait until the request's INSERT is blocked on our row lock, then let it go on.
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as watcher:
            for _ in range(int(TIMEOUT / 0.05)):
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
                if row and row[0]:
                    break
                threading.Event().wait(0.05)
            else:
                raise AssertionError("the send never waited for the room row")
        conn.commit()
        response = future.result(TIMEOUT)
    assert response.status_code == 404, response.text[:300]
    assert "detail" in response.json()
    assert "Traceback" not in live_server.log()


def test_chat_errors_map_to_their_http_status():
    from rest_framework import exceptions

    from chat.api_errors import api_exception
    from chat.protocol import ErrorCode
    from chat.services import ChatError

    cases = {
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.EMPTY_MESSAGE: 400,
        ErrorCode.INVALID_FRAME: 400,
        ErrorCode.MESSAGE_TOO_LONG: 400,
    }
    for code, status in cases.items():
        exc = api_exception(ChatError(code, "x", retry_after=0.2), field="message")
        assert exc.status_code == status, code
    throttled = api_exception(ChatError(ErrorCode.RATE_LIMITED, "x", retry_after=0.2))
    assert isinstance(throttled, exceptions.Throttled) and throttled.wait == 1


# --- found by the fuzzer (tests/e2e/test_fuzz.py) -------------------------------------------

LONE_SURROGATE = '{"type": "message", "message": "\\ud800 hi"}'


async def test_a_lone_surrogate_in_a_frame_is_invalid_json_not_fatal(live_server, tenant_a):
    ws = await open_room_socket(live_server, make_user_in(tenant_a), unique("sur-"))
    try:
        await ws.send(LONE_SURROGATE)
        error = await ws_receive_type(ws, "error")
        assert error["code"] == "invalid_json", error
        # A surrogate pair is one character, and fine.
        await ws.send('{"message": "\\ud83d\\ude00"}')
        assert (await ws_receive_type(ws, "chat.message"))["message"] == "\U0001f600"
    finally:
        await ws.close()


async def test_frames_queued_behind_a_closing_frame_are_dropped_without_an_error(
    live_server, tenant_a
):
    token = tokens_for(make_user_in(tenant_a))["access"]
    ws = await ws_connect(live_server.ws_url, tenant_a.domain, f"/ws/notifications/?token={token}")
    await assert_socket_open(ws)
    # A bad `auth` closes the socket 4401; the pings behind it are answered after the close.
    await ws.send(json.dumps({"type": "auth", "token": "garbage"}))
    for _ in range(5):
        await ws.send(json.dumps({"type": "ping"}))
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed:
        pass
    assert ws.close_code == 4401
    # A fence: another socket's round trip, so the server has handled the queued pings.
    fence = await open_room_socket(live_server, make_user_in(tenant_a), unique("fence-"))
    await fence.close()
    assert "after sending 'websocket.close'" not in live_server.log()
