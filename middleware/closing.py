"""Ending a WebSocket handshake the two ways the contract needs."""

from __future__ import annotations

from channels.security.websocket import WebsocketDenier

from middleware.types import Receive, Scope, Send


async def refuse_handshake(scope: Scope, receive: Receive, send: Send) -> None:
    """Close before accept: the client sees HTTP 403 on the handshake (unknown host, origin)."""
    await WebsocketDenier()(scope, receive, send)


async def accept_then_close(receive: Receive, send: Send, code: int) -> None:
    """Accept, then close with `code`: a browser can only read a close code after accept."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # A plain int: daphne (autobahn) rejects int subclasses such as our CloseCode enum.
    await send({"type": "websocket.close", "code": int(code)})
