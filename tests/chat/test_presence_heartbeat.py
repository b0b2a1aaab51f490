"""The process's presence heartbeat (chat/presence.py), against the real Redis."""

from __future__ import annotations

import asyncio

from chat.presence import process_heartbeat_ensure


def test_concurrent_first_handshakes_start_one_heartbeat() -> None:
    """Twenty handshakes reaching a fresh process at once: one heartbeat loop, not one each
    (every loop sweeps every room the process holds, every PRESENCE_HEARTBEAT seconds)."""

    async def run() -> int:
        await asyncio.gather(*(process_heartbeat_ensure() for _ in range(20)))
        beats = [t for t in asyncio.all_tasks() if t.get_name() == "presence-heartbeat"]
        for beat in beats:
            beat.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        return len(beats)

    assert asyncio.run(run()) == 1
