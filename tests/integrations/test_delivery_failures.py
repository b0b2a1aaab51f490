"""No delivery stays `pending` with no attempt scheduled (PROTOCOL section 5): a URL the HTTP
client rejects ends `failed` on the schedule, and an attempt whose outcome could not be logged
because PostgreSQL (a private cluster) went away is made again once it is back. Real worker
processes, real receivers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, TenantInfo, blocking, server_env
from tests.integrations.conftest import Receiver, Worker, start_worker
from tests.integrations.test_delivery_engine import record_events, remove_hooks
from tests.pg_cluster import PostgresCluster, remove_cluster, seed_cluster, start_cluster


def deliveries_of(tenant: TenantInfo) -> list[dict[str, Any]]:
    from integrations.models import Delivery
    from tenants.context import run_in_schema

    return blocking(
        lambda: run_in_schema(
            tenant.schema_name,
            lambda: list(Delivery.objects.order_by("pk").values("state", "attempts")),
        )
    )


def test_a_url_the_http_client_rejects_ends_failed_on_the_schedule(
    make_tenant: Any, worker: Worker
) -> None:
    from integrations import webhooks
    from integrations.models import Webhook
    from tenants.context import run_in_schema

    tenant = make_tenant()
    # Saved before the save-time check knew of it: Django's URL validator lets a control
    # character in the path through; httpx refuses to build the request (InvalidURL).
    url = "http://127.0.0.1:9/hook\x01"
    blocking(
        lambda: run_in_schema(
            tenant.schema_name,
            lambda: Webhook.objects.create(
                url=url, events=["user.created"], secret=webhooks.new_secret()
            ),
        )
    )
    record_events(tenant, 1, "control")
    deadline = time.monotonic() + 60
    rows = deliveries_of(tenant)
    while time.monotonic() < deadline and rows[0]["state"] == "pending":
        time.sleep(0.3)
        rows = deliveries_of(tenant)
    remove_hooks(tenant)
    assert rows[0]["state"] == "failed", (rows, worker.log()[-3000:])
    attempts = rows[0]["attempts"]
    assert len(attempts) == 4, attempts  # WEBHOOK_RETRY_SCHEDULE=1,1,1: four attempts
    assert all(a["status_code"] is None and "non-printable" in a["error"] for a in attempts)


# --- PostgreSQL away while an attempt runs ------------------------------------------------

_HOOK = """
import django
django.setup()
import sys
from django.db import transaction
from integrations import webhooks
from integrations.models import Webhook
from tenants.context import run_in_schema

def go():
    Webhook.objects.create(url=sys.argv[2], events=["user.created"], secret=webhooks.new_secret())
    with transaction.atomic():
        webhooks.record("user.created", {"user": {"id": 1, "username": "outage"}})

run_in_schema(sys.argv[1], go)
"""

FAST = {
    "WEBHOOK_TIMEOUT": "3",
    "WEBHOOK_WORKER_HEARTBEAT": "0.5",
    "WEBHOOK_STALLED_SECONDS": "2",
    "WEBHOOK_STALLED_CHECK_SECONDS": "1",
}


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


def _states(cluster: PostgresCluster, schema: str) -> list[tuple[str, int]]:
    try:
        with psycopg.connect(cluster.url, connect_timeout=2) as conn:
            rows = conn.execute(
                f'SELECT state, jsonb_array_length(attempts) FROM "{schema}".integrations_delivery'
            ).fetchall()
            return [(str(state), int(count)) for state, count in rows]
    except psycopg.Error:
        return []


@pytest.mark.timeout(420)
def test_an_attempt_unlogged_while_postgres_is_away_is_made_again_once_it_is_back(
    own_postgres: PostgresCluster, receiver_factory: Any, tmp_path: Path
) -> None:
    tenant, _ = seed_cluster(own_postgres, "someone")
    receiver: Receiver = receiver_factory(delay_first=2)  # PostgreSQL stops under this one
    subprocess.run(
        [sys.executable, "-c", _HOOK, tenant.schema_name, receiver.url],
        cwd=ROOT,
        env=server_env(DATABASE_URL=own_postgres.url, WEBHOOK_ALLOW_PRIVATE="1"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    workers = [start_worker(tmp_path, DATABASE_URL=own_postgres.url, **FAST)]
    try:
        assert receiver.wait_for(1, timeout=60), workers[0].log()[-3000:]
        own_postgres.stop("immediate")  # the attempt's 200 comes while nothing can log it
        time.sleep(6)
        own_postgres.start()
        deadline = time.monotonic() + 120
        states = _states(own_postgres, tenant.schema_name)
        while time.monotonic() < deadline and states != [("delivered", 1)]:
            # Procrastinate's worker stops when its LISTEN connection breaks; its Deployment
            # (or compose) starts it again, as here.
            if workers[-1].process.poll() is not None and len(workers) < 5:
                workers.append(start_worker(tmp_path, DATABASE_URL=own_postgres.url, **FAST))
            time.sleep(0.5)
            states = _states(own_postgres, tenant.schema_name)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
                worker.process.wait(timeout=30)
    logs = "\n".join(w.log()[-3000:] for w in workers)
    assert states == [("delivered", 1)], (states, logs)
    calls = receiver.wait_for(2, timeout=0)
    assert len(calls) == 2, "the unlogged attempt was made again"
    assert len({c["headers"]["webhook-id"] for c in calls}) == 1, "with the same webhook-id"
    assert json.loads(calls[1]["body"])["data"]["user"]["username"] == "outage"
