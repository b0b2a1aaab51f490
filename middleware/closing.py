"""Ending a WebSocket handshake the two ways the contract needs."""

from __future__ import annotations

from channels.security.websocket import WebsocketDenier

from chat.protocol import CloseCode
from middleware.types import ASGIApp, Message, Receive, Scope, Send
from tenants.context import DatabaseUnavailable


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


class DatabaseUnavailableClose:
    """A WebSocket that meets `DatabaseUnavailable` (PostgreSQL away during the handshake's
    user lookup or room join, or in a handler outside the frame path) is closed with 1013
    "try again later", accepting it first if it was not yet: never an HTTP 500 on the
    handshake, nor a 1006. Clients reconnect after 1013 with their usual backoff.

    Outermost in the WebSocket stack, so every layer below may let the exception through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connected = accepted = closed = False

        async def tracking_receive() -> Message:
            nonlocal connected
            message = await receive()
            connected = connected or message["type"] == "websocket.connect"
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal accepted, closed
            accepted = accepted or message["type"] == "websocket.accept"
            closed = closed or message["type"] == "websocket.close"
            await send(message)

        tracking_send.__wrapped__ = send  # type: ignore[attr-defined]  # chat/fanout.py unwraps
        try:
            await self.app(scope, tracking_receive, tracking_send)
        except DatabaseUnavailable:
            if closed:
                return
            if not accepted:
                if not connected and (await receive())["type"] != "websocket.connect":
                    return  # the client went away first
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": int(CloseCode.TRY_AGAIN_LATER)})
