"""Background tasks (presence heartbeat, the fan-out hub's pub/sub reader, authorization re-check)
log under no tenant and no request id, although a tenant's socket started them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from tests.conftest import make_user_in, unique
from tests.realtime_helpers import Sockets, say

BACKGROUND_LINES = (
    "presence heartbeat: ",
    "fan-out hub started",
    "authorization re-check: ",
)


def json_records(log: str) -> list[dict]:
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):  # a line cut by the process dying
                records.append(json.loads(line))
    return records


async def test_background_tasks_started_by_a_tenants_socket_log_without_its_tenant_or_request_id(
    server_factory, tenant_a
):
    server = server_factory(
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        PRESENCE_HEARTBEAT="0.5",
        WS_AUTH_RECHECK_INTERVAL="0.5",
    )
    async with Sockets() as sockets:
        ws = await sockets.room(server, make_user_in(tenant_a), unique("logs_"))
        await say(ws)
        deadline = time.monotonic() + 20
        while True:
            records = json_records(server.log())
            found = {
                prefix: [r for r in records if r["message"].startswith(prefix)]
                for prefix in BACKGROUND_LINES
            }
            if all(found.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    for prefix, lines in found.items():
        assert lines, f"no {prefix!r} line in the log"
        for record in lines:
            assert record["tenant"] is None, record
            assert record["request_id"] is None, record
