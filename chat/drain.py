"""Graceful drain: on SIGTERM, close every socket of this process with 1001 first.

uvicorn's own shutdown closes WebSockets with 1012; the contract promises 1001 ("going away,
reconnect with `since`"). At lifespan startup we wrap the SIGTERM/SIGINT handler that the
server installed: the wrapper closes our sockets with 1001 (new handshakes are closed with
1001 too), waits until they are gone or DRAIN_TIMEOUT passes, then hands over to the server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class Drainable(Protocol):
    async def drain(self) -> None: ...


_open: weakref.WeakSet[Any] = weakref.WeakSet()
_state = {"draining": False}


def register(consumer: Drainable) -> None:
    _open.add(consumer)


def unregister(consumer: Drainable) -> None:
    _open.discard(consumer)


def open_sockets() -> list[Any]:
    """The sockets open on this process (past their handshake): drained on SIGTERM and
    re-checked by chat/authz.py."""
    return list(_open)


def is_draining() -> bool:
    return _state["draining"]


async def drain_all(timeout: float) -> None:
    """Close every registered socket with 1001 and wait for them to go (at most `timeout`).

    The closes are not awaited past the deadline: the close of a socket whose client stopped
    reading waits behind the frames the kernel could not take, and would wait forever.
    """
    _state["draining"] = True
    consumers = open_sockets()
    logger.info("draining %d sockets with 1001", len(consumers))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    closes = [asyncio.ensure_future(c.drain()) for c in consumers]
    if closes:
        await asyncio.wait(closes, timeout=timeout)
    while len(_open) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if _open:
        logger.warning("%d sockets did not close within DRAIN_TIMEOUT", len(_open))


# After the drain, the server's own shutdown waits for every connection to finish writing.
# A client that stopped reading never lets it (asyncio flushes a closed transport's buffer
# before it lets go), so the pod would outlive DRAIN_TIMEOUT + 5 s (the contract); after this
# grace the server is told to stop waiting, as a second Ctrl-C would.
FORCE_EXIT_AFTER = 2.0


def _force_exit(original: Callable[..., Any]) -> None:
    """uvicorn's handler is its Server's bound `handle_exit`; setting `force_exit` ends its
    wait for connections. Other servers (daphne) are left to their own shutdown."""
    server = getattr(original, "__self__", None)
    if server is not None and hasattr(server, "force_exit") and not server.force_exit:
        logger.warning("connections still open %.0f s after the drain: exiting", FORCE_EXIT_AFTER)
        server.force_exit = True


def install_signal_drain() -> None:
    """Wrap the server's SIGTERM and SIGINT handlers (called at lifespan startup)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        original = signal.getsignal(signum)
        if not callable(original):
            continue
        signal.signal(signum, _wrapper(loop, original))


def _wrapper(loop: asyncio.AbstractEventLoop, original: Callable[..., Any]) -> Callable[..., Any]:
    started: list[bool] = []

    def handle(signum: int, frame: Any) -> None:
        if started:  # a second signal: hand over at once
            original(signum, frame)
            return
        started.append(True)

        async def drain_then_exit() -> None:
            try:
                await drain_all(settings.DRAIN_TIMEOUT)
            finally:
                original(signum, frame)
                loop.call_later(FORCE_EXIT_AFTER, _force_exit, original)

        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit()))

    return handle
