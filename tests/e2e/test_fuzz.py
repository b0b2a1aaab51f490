"""A property-based fuzzer (hypothesis) of the WebSocket frames and REST bodies a hostile or
careless client can send, against a real uvicorn server of its own.

What holds for every generated input: no HTTP 5xx; no close 1006/1011 (a socket closed by the
server uses a documented code: 4401 after a bad `auth` frame, 1009 for an oversized frame, both
followed by a reconnect); every error frame's code is a documented one (PROTOCOL.md section
3); and at the end no traceback, "Exception" or ERROR line in the server's log.

The server runs with rate limits raised far out of reach (frames, logins), so that rate
limiting answers none of the inputs and every one reaches the code behind it.

Run length: `make test` runs FUZZ_EXAMPLES examples per test (default 40, well under a
minute on 2 cores); a longer run by hand:
    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/e2e/test_fuzz.py
(`long`: 1000 examples per test; FUZZ_EXAMPLES=<n> sets any other number).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chat.protocol import ClientFrame, ErrorCode
from tests.api_helpers import PLATFORM_HOST, bearer, make_platform_user
from tests.conftest import LiveServer, make_user_in, start_server, tokens_for, unique

settings.register_profile("long", max_examples=1000)
_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000" if _LONG else "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not _LONG,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Error codes the server sends as frames (`unauthorized` is a close code, never a frame).
DOCUMENTED_ERRORS = {str(code) for code in ErrorCode} - {"unauthorized"} | {"unavailable"}
# Closes that a generated frame may cause, each answered by reconnecting.
DOCUMENTED_CLOSES = {4401, 1009}
LOG_FAILURES = ("Traceback", "Exception", '"level": "ERROR"', "ERROR ")
HIGH = "1000000"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, django_db_setup) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        CHAT_RATE_PER_SECOND=HIGH,
        CHAT_RATE_BURST=HIGH,
        LOGIN_THROTTLE_RATE=f"{HIGH}/min",
        LOGIN_THROTTLE_IP_RATE=f"{HIGH}/min",
        REST_RATE_PER_SECOND=HIGH,  # the per-user REST write bucket, where it exists
        REST_RATE_BURST=HIGH,
        WS_MAX_SOCKETS_PER_USER=HIGH,
    )
    yield server
    server.stop()
    log = server.log()
    bad = [line for line in log.splitlines() if any(word in line for word in LOG_FAILURES)]
    assert not bad, "\n".join(bad[:20])


@pytest.fixture(scope="module")
def cast(tenant_a, django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        member = make_user_in(tenant_a)
        admin = make_user_in(tenant_a, is_admin=True)
        victim = make_user_in(tenant_a)
        operator = make_platform_user(is_admin=True)
        tokens = {"member": tokens_for(member), "admin": tokens_for(admin)["access"]}
        tokens["operator"] = tokens_for(operator)["access"]
    return {
        "tenant": tenant_a,
        "member": member,
        "admin": admin,
        "victim": victim,
        "operator": operator,
        "member_token": tokens["member"],
        "admin_token": tokens["admin"],
        "operator_token": tokens["operator"],
        "room": unique("fuzz-"),
    }


# --- strategies ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
    | st.sampled_from(["", " ", "\x00", "\n", "general\n", "a" * 5000, "@admin hi", "\u3000"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
frame_types = st.sampled_from([str(t) for t in ClientFrame]) | json_values
frame_keys = st.sampled_from(["type", "message", "client_id", "id", "seq", "token"])
object_frames = st.dictionaries(frame_keys, json_values, max_size=5).flatmap(
    lambda d: frame_types.map(lambda t: {**d, "type": t})
) | st.dictionaries(frame_keys, json_values, max_size=5)


@st.composite
def deep(draw: Any) -> str:
    n = draw(st.integers(min_value=1, max_value=20000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = draw(st.sampled_from(["", "1", "[]"])) if opener == "[" else "1"
    body = opener * n + inner + closer * n
    return (
        json.dumps({"type": draw(frame_types), "message": "x"})[:-1] + ', "x": ' + body + "}"
        if draw(st.booleans())
        else body
    )


text_frames = (
    object_frames.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=200)
    | deep()
    | st.sampled_from(["{", "[1,", '{"type": "message", "message": "\\ud800"}', "NaN", "1e999"])
)
frames = text_frames | st.binary(max_size=64)


# --- WebSocket ----------------------------------------------------------------------------


class Socket:
    """A sync socket that reconnects after a documented close."""

    def __init__(self, server: LiveServer, host: str, path: str) -> None:
        self.server, self.host, self.path = server, host, path
        self.ws: ClientConnection | None = None

    def open(self) -> ClientConnection:
        if self.ws is None:
            self.ws = connect(
                f"{self.server.ws_url}{self.path}",
                additional_headers={"Host": self.host},
                open_timeout=10,
                max_size=None,
            )
        return self.ws

    def exchange(self, frame: str | bytes) -> list[dict[str, Any]]:
        """Send `frame`, then a ping; the frames read up to the pong (the server handles a
        socket's frames in order, so the pong comes after every answer to `frame`)."""
        ws = self.open()
        try:
            ws.send(frame)
            ws.send(json.dumps({"type": "ping"}))
            got = []
            while True:
                reply = json.loads(ws.recv(timeout=10))
                if reply.get("type") == "pong":
                    return got
                got.append(reply)
        except ConnectionClosed:
            code = ws.close_code
            self.ws = None
            assert code in DOCUMENTED_CLOSES, f"closed {code} after {frame!r:.200}"
            return []

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def check_frames(replies: list[dict[str, Any]], frame: Any) -> None:
    for reply in replies:
        assert isinstance(reply, dict) and "type" in reply, reply
        if reply["type"] == "error":
            assert reply.get("code") in DOCUMENTED_ERRORS, (reply, f"{frame!r:.200}")


@pytest.fixture(scope="module")
def room_socket(fuzz_server, cast) -> Iterator[Socket]:
    token = cast["member_token"]["access"]
    sock = Socket(fuzz_server, cast["tenant"].domain, f"/ws/chat/{cast['room']}/?token={token}")
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def notification_socket(fuzz_server, cast) -> Iterator[Socket]:
    token = cast["member_token"]["access"]
    sock = Socket(fuzz_server, cast["tenant"].domain, f"/ws/notifications/?token={token}")
    yield sock
    sock.close()


@FUZZ
@given(frame=frames)
def test_any_frame_on_a_room_socket_is_answered_never_fatal(room_socket, frame):
    check_frames(room_socket.exchange(frame), frame)


@FUZZ
@given(frame=frames)
def test_any_frame_on_a_notification_socket_is_answered_never_fatal(notification_socket, frame):
    check_frames(notification_socket.exchange(frame), frame)


# --- REST -------------------------------------------------------------------------------------

bodies = (
    json_values
    | object_frames
    | st.fixed_dictionaries(
        {},
        optional={
            k: json_values
            for k in (
                "username",
                "password",
                "refresh",
                "slug",
                "name",
                "is_private",
                "message",
                "client_id",
                "user_id",
                "is_admin",
                "is_active",
                "schema_name",
                "domain",
                "admin",
            )
        },
    )
)
raw_bodies = bodies.map(json.dumps) | deep() | st.text(max_size=100)
query_values = st.text(max_size=30) | st.integers(-(2**70), 2**70).map(str)
queries = st.dictionaries(
    st.sampled_from(["before", "after", "limit", "page", "since", "x"]), query_values, max_size=3
)


def rest_targets(cast: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """(method, host, path, token) of every tenant endpoint and the platform tenants one."""
    host, room = cast["tenant"].domain, cast["room"]
    member, admin, op = cast["member_token"]["access"], cast["admin_token"], cast["operator_token"]
    victim = cast["victim"].id
    return [
        ("POST", host, "/api/auth/token/", None),
        ("POST", host, "/api/auth/token/refresh/", None),
        ("POST", host, "/api/auth/logout/", member),
        ("GET", host, "/api/rooms/", member),
        ("POST", host, "/api/rooms/", member),
        ("PATCH", host, f"/api/rooms/{room}/", admin),
        ("GET", host, f"/api/rooms/{room}/messages/", member),
        ("POST", host, f"/api/rooms/{room}/messages/", member),
        ("GET", host, f"/api/rooms/{room}/members/", admin),
        ("POST", host, f"/api/rooms/{room}/members/", admin),
        ("GET", host, "/api/users/", admin),
        ("POST", host, "/api/users/", admin),
        ("PATCH", host, f"/api/users/{victim}/", admin),
        ("GET", PLATFORM_HOST, "/api/tenants/", op),
        ("POST", PLATFORM_HOST, "/api/tenants/", op),
        ("POST", PLATFORM_HOST, "/api/auth/token/", None),
    ]


@pytest.fixture(scope="module")
def prepared(fuzz_server, cast) -> dict[str, Any]:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:
        response = client.post(
            "/api/rooms/",
            json={"slug": cast["room"]},
            headers={"Host": cast["tenant"].domain, **bearer(cast["member_token"]["access"])},
        )
        assert response.status_code in (201, 400), response.text
    return {"targets": rest_targets(cast)}


@FUZZ
@given(data=st.data())
def test_any_rest_body_or_query_is_answered_without_a_5xx(fuzz_server, prepared, data):
    method, host, path, token = data.draw(st.sampled_from(prepared["targets"]))
    headers = {"Host": host, "Content-Type": "application/json", **(bearer(token) if token else {})}
    with httpx.Client(base_url=fuzz_server.url, timeout=30, headers=headers) as client:
        if method == "GET":
            response = client.get(path, params=data.draw(queries))
        else:
            response = client.request(method, path, content=data.draw(raw_bodies).encode())
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
