"""A webhook worker SIGKILLed in the middle of a batch: nothing is lost, and the only repeat is
the attempt it was making, with the same `webhook-id`. Its own module, so that no other worker
process takes the jobs first."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer, TenantInfo
from tests.integrations.conftest import start_worker
from tests.integrations.test_integration import _create_hook, _send

# Short heartbeats so a dead worker is noticed in seconds, not the production 30 s; one
# attempt in flight per webhook, so that the attempt being made when it dies is one known one.
FAST_STALL = {
    "WEBHOOK_MAX_IN_FLIGHT": "1",
    "WEBHOOK_WORKER_HEARTBEAT": "0.5",
    "WEBHOOK_STALLED_SECONDS": "2",
    "WEBHOOK_STALLED_CHECK_SECONDS": "1",
}


def test_sigkilled_worker_loses_nothing_and_repeats_only_its_attempt(
    hook_server: LiveServer,
    tenant_x: TenantInfo,
    receiver_factory: Any,
    tmp_path: Path,
) -> None:
    receiver = receiver_factory(delay_first=20)  # the first POST hangs: kill the worker then
    _create_hook(hook_server, tenant_x, receiver.url, ["message.created"])
    sent = [_send(hook_server, tenant_x, f"batch {n}", room="batch")["id"] for n in range(5)]
    metrics = httpx.get(f"{hook_server.url}/metrics", timeout=10).text
    figures = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("webhook_queue_")
    }
    assert figures["webhook_queue_due_jobs"] >= 1, "no worker yet: the tenant's drain waits"
    assert figures["webhook_queue_oldest_due_seconds"] > 0
    doomed = start_worker(tmp_path, **FAST_STALL)
    try:
        assert receiver.wait_for(1, timeout=20), doomed.log()
    finally:
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
    survivor = start_worker(tmp_path, **FAST_STALL)
    try:
        calls = receiver.wait_for(6, timeout=30)
        time.sleep(1)  # anything more would arrive now
        calls = receiver.wait_for(6, timeout=0)
    finally:
        survivor.process.terminate()
        survivor.process.wait(timeout=15)
    assert len(calls) == 6, survivor.log()
    by_message: dict[int, set[str]] = {}
    for call in calls:
        message_id = json.loads(call["body"])["data"]["message"]["id"]
        by_message.setdefault(message_id, set()).add(call["headers"]["webhook-id"])
    assert sorted(by_message) == sorted(sent), "every committed message reached the receiver"
    assert all(len(ids) == 1 for ids in by_message.values()), "a repeat keeps its webhook-id"
    first = json.loads(calls[0]["body"])["data"]["message"]["id"]
    assert sum(1 for c in calls if json.loads(c["body"])["data"]["message"]["id"] == first) == 2
