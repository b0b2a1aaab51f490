"""At most WS_MAX_SOCKETS_PER_USER sockets per user and tenant, counted across processes
(PROTOCOL.md section 3, close code 4429), and a killed process's sockets stop counting."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.api_helpers import assert_socket_open
from tests.conftest import make_user_in, tokens_for, unique
from tests.realtime_helpers import Sockets, close_code

LIMIT = 20  # the default of WS_MAX_SOCKETS_PER_USER
# chat/presence.py: a process's liveness key lives PRESENCE_TTL after its last beat; short here
# (the default is 30 s) so the test waits seconds, not half a minute.
LIVENESS_TTL = 6.0


async def test_the_21st_socket_of_a_user_closes_4429_on_either_process_and_a_freed_slot_opens(
    tenant_a, server_factory
):
    first, second = server_factory(), server_factory()
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    async with Sockets() as sockets:
        opened = []
        for n in range(LIMIT):  # room and notification sockets, half on each process
            server = (first, second)[n % 2]
            if n % 4 < 2:
                ws = await sockets.room(server, user, unique("cap-"), token=token)
            else:
                ws = await sockets.notifications(server, user, token=token)
            await assert_socket_open(ws)
            opened.append(ws)
        over_first = await sockets.room(first, user, unique("cap-"), token=token)
        over_second = await sockets.notifications(second, user, token=token)
        assert await close_code(over_first) == 4429
        assert await close_code(over_second) == 4429
        for ws in opened:  # the refused ones took nothing from the others
            await assert_socket_open(ws)

        await opened[0].close()  # opened on the first process; the slot frees for any
        deadline = time.monotonic() + 10
        while True:
            again = await sockets.notifications(second, user, token=token)
            try:
                await assert_socket_open(again)
                break
            except Exception:
                # the close of opened[0] may not have been counted out yet
                assert time.monotonic() < deadline, "a freed slot did not open again"
                await asyncio.sleep(0.2)


async def test_sockets_of_a_killed_process_stop_counting_within_the_liveness_ttl(
    tenant_a, server_factory
):
    short = {"PRESENCE_TTL": str(int(LIVENESS_TTL)), "PRESENCE_HEARTBEAT": "2"}
    doomed, survivor = server_factory(**short), server_factory(**short)
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    async with Sockets() as sockets:
        for _ in range(LIMIT):
            await assert_socket_open(await sockets.notifications(doomed, user, token=token))
        doomed.stop(signal.SIGKILL)  # no close, no count-out: only its liveness key expiring
        killed_at = time.monotonic()
        first_try = await sockets.notifications(survivor, user, token=token)
        assert await close_code(first_try) == 4429  # its sockets still count for now
        while True:
            ws = await sockets.notifications(survivor, user, token=token)
            try:
                await assert_socket_open(ws)
                break
            except Exception:
                waited = time.monotonic() - killed_at
                assert waited < LIVENESS_TTL + 15, "a dead process's sockets kept counting"
                await asyncio.sleep(2)
