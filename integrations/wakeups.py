"""Wake-ups of a working drain through PostgreSQL's LISTEN/NOTIFY.

A drain (`integrations.tasks.drain`) that runs out of due deliveries keeps its tenant's lease
for a moment (`LINGER_SECONDS`) instead of ending at once: under steady traffic one drain
serves the tenant, where otherwise every event started a Procrastinate job of its own, tens
of milliseconds after its commit, with a lease hand-over in between. An event recorded while
a drain holds the lease starts no job: its transaction notifies `CHANNEL` with the tenant's
schema (PostgreSQL delivers a notification only once, and only if, the transaction commits),
and the drain claims at once.

One listening connection per worker process, opened by the first drain that waits and kept
for the life of the process (re-opened after a failure). A notification can still be lost
(the connection was down): a waiting drain also claims every `CLAIM_POLL_SECONDS`, so a lost
one delays a delivery by that much, never more.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from procrastinate.contrib.django.utils import connector_params

logger = logging.getLogger(__name__)

CHANNEL = "tenantchat_webhook_wakeups"
RECONNECT_SECONDS = 1.0


class Listener:
    """Sets the events of the schemas named by notifications on `CHANNEL`."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def subscribe(self, schema_name: str) -> asyncio.Event:
        """An event set at every notification for `schema_name` (until `unsubscribe`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())
        event = asyncio.Event()
        self._events.setdefault(schema_name, set()).add(event)
        return event

    def unsubscribe(self, schema_name: str, event: asyncio.Event) -> None:
        events = self._events.get(schema_name)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[schema_name]

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    **connector_params(), autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    # Whatever was notified while no connection listened is lost: wake all.
                    self._wake_all()
                    async for notification in conn.notifies():
                        for event in self._events.get(notification.payload, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("webhook wake-up listener lost its connection", exc_info=True)
            self.connected.clear()
            self._wake_all()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()


_LISTENERS: dict[asyncio.AbstractEventLoop, Listener] = {}


def listener() -> Listener:
    """The running event loop's listener (the worker has one loop; tests may run several)."""
    loop = asyncio.get_running_loop()
    found = _LISTENERS.get(loop)
    if found is None:
        for old in [old for old in _LISTENERS if old.is_closed()]:
            del _LISTENERS[old]
        found = _LISTENERS[loop] = Listener()
    return found
