"""Client-side helpers for tests: in-process communicators and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from channels.testing import WebsocketCommunicator

from config.asgi import application

TIMEOUT = 10.0


def communicator(
    host: str,
    path: str,
    *,
    origin: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> WebsocketCommunicator:
    """An in-process WebSocket client of the full ASGI stack (middleware included)."""
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers.extend(extra_headers or [])
    return WebsocketCommunicator(application, path, headers=headers)


async def connect_expect_close(comm: WebsocketCommunicator) -> int | None:
    """Connect; return the close code sent after accept (None if it stayed open)."""
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected, "handshake was refused, expected accept-then-close"
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message.get("code")


async def receive_type(
    comm: WebsocketCommunicator, frame_type: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Next frame of `frame_type`, skipping others (presence, pings...)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        frame = await comm.receive_json_from(timeout=max(left, 0.01))
        if frame.get("type") == frame_type:
            return frame


async def ws_connect(server_ws_url: str, host: str, path: str, **kwargs: Any) -> Any:
    """A real WebSocket client (the `websockets` library) on a live uvicorn server."""
    return await websockets.connect(
        f"{server_ws_url}{path}", additional_headers={"Host": host}, open_timeout=TIMEOUT, **kwargs
    )


async def ws_receive_type(ws: Any, frame_type: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == frame_type:
                return frame
