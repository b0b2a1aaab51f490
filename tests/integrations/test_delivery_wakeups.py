"""How a drain keeps up with its endpoint and its tenant's traffic (PROTOCOL section 5,
"Throughput"), on real processes: `manage.py webhook_worker`, PostgreSQL and local HTTP
receivers. A drain reuses its endpoint's connections, and under steady events one drain
serves the tenant, woken through LISTEN/NOTIFY (`integrations.wakeups`)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import TEST_DATABASE_URL, TenantInfo, blocking
from tests.integrations.conftest import Receiver, Worker, start_worker
from tests.integrations.test_delivery_engine import add_hook, record_events, remove_hooks, stop


def drain_jobs(tenant: TenantInfo) -> int:
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'integrations.drain'"
            " AND args ->> 'schema_name' = %s",
            [tenant.schema_name],
        ).fetchone()
    return int(row[0]) if row else 0


def listeners(application_name: str, *, terminate: bool = False) -> int:
    """The worker's LISTEN connections (ended first, with `terminate`)."""
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        action = "pg_terminate_backend(pid)" if terminate else "pid"
        rows = conn.execute(
            f"SELECT {action} FROM pg_stat_activity WHERE application_name = %s"
            " AND query LIKE 'LISTEN tenantchat_webhook_wakeups%%'",
            [application_name],
        ).fetchall()
    return len(rows)


def wait_until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def delivered_once(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path, **env: str
) -> tuple[TenantInfo, Receiver, Worker]:
    """A tenant with one webhook to a keep-alive receiver, and a worker that has delivered
    one event to it (so its drain now lingers)."""
    tenant = make_tenant()
    receiver: Receiver = receiver_factory(keep_alive=True)
    add_hook(tenant, receiver.url)
    worker = start_worker(tmp_path, **env)
    try:
        record_events(tenant, 1, "first")
        assert receiver.wait_for(1, timeout=30), worker.log()
    except BaseException:
        stop(worker)
        remove_hooks(tenant)
        raise
    return tenant, receiver, worker


def test_a_busy_webhook_reuses_its_connections(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    tenant = make_tenant()
    receiver: Receiver = receiver_factory(keep_alive=True, answer_body=b'{"ok": true}')
    add_hook(tenant, receiver.url)
    worker = start_worker(tmp_path, WEBHOOK_MAX_IN_FLIGHT="4")
    try:
        record_events(tenant, 40, "reuse")
        calls = receiver.wait_for(40, timeout=60)
    finally:
        stop(worker)
        remove_hooks(tenant)
    assert len(calls) >= 40, worker.log()
    peers = {call["peer"] for call in calls}
    # At most 4 at once; main opened a connection per attempt (its answer was left unread,
    # and httpcore closes a connection whose answer was not read to the end): 40.
    assert len(peers) <= 8, len(peers)


def test_an_answer_that_never_ends_is_not_read_to_its_end(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    from integrations.models import Delivery
    from tenants.context import run_in_schema

    tenant = make_tenant()
    receiver: Receiver = receiver_factory(keep_alive=True, endless=True)
    add_hook(tenant, receiver.url)
    worker = start_worker(tmp_path, WEBHOOK_TIMEOUT="3")
    try:
        record_events(tenant, 1, "endless")
        assert receiver.wait_for(1, timeout=30), worker.log()

        def first_attempt() -> list[Any]:
            delivery = Delivery.objects.get()
            return [delivery.state, delivery.attempts[:1]]

        def logged() -> bool:
            return bool(blocking(lambda: run_in_schema(tenant.schema_name, first_attempt))[1])

        assert wait_until(logged, timeout=30), worker.log()
        state, attempts = blocking(lambda: run_in_schema(tenant.schema_name, first_attempt))
    finally:
        stop(worker)
        remove_hooks(tenant)
    # Read to its end, the answer would have held the attempt until WEBHOOK_TIMEOUT.
    assert (state, attempts[0]["status_code"]) == ("delivered", 200), attempts


def test_steady_events_are_served_by_one_drain(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    tenant, receiver, worker = delivered_once(make_tenant, receiver_factory, tmp_path)
    try:
        before = drain_jobs(tenant)
        for n in range(10):
            record_events(tenant, 1, f"steady{n}")
            time.sleep(0.1)
        calls = receiver.wait_for(11, timeout=30)
        started = drain_jobs(tenant) - before
    finally:
        stop(worker)
        remove_hooks(tenant)
    assert len(calls) >= 11, worker.log()
    # Main started a drain job per event here (10): the drain let go as soon as nothing was
    # due. Now the drain that delivered the first one is notified of the next ones; a job
    # may still start when the lingering drain let go for a job waiting (a periodic one).
    assert started <= 3, started


def test_a_drain_goes_on_when_its_listening_connection_is_ended(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    name = f"tc-wakeups-{uuid.uuid4().hex[:8]}"
    tenant, receiver, worker = delivered_once(
        make_tenant, receiver_factory, tmp_path, DB_APPLICATION_NAME=name
    )
    try:
        assert wait_until(lambda: listeners(name) == 1, timeout=30), "one listener a process"
        assert listeners(name, terminate=True) == 1
        for n in range(5):
            record_events(tenant, 1, f"after{n}")
            time.sleep(0.2)
        calls = receiver.wait_for(6, timeout=30)
        reconnected = wait_until(lambda: listeners(name) == 1, timeout=30)
        log = worker.log()
    finally:
        stop(worker)
        remove_hooks(tenant)
    assert len(calls) >= 6, log
    assert reconnected, "the listener connects again"
    assert "webhook wake-up listener lost its connection" in log


class _Rollback(Exception):
    pass


def test_a_wake_up_in_the_worker_joins_the_transaction_that_defers_it() -> None:
    """The worker runs with the async psycopg connector that `procrastinate worker` swaps
    into the app; a retry's wake-up, deferred by a claim on a database thread, must still go
    through Django's connection, in the claim's transaction (gone with its rollback). It went
    through the async connector instead (`async_to_sync` from the database thread), outside
    the transaction, while the claim held the tenant's advisory lock and its rows."""
    from django.db import connection, transaction
    from procrastinate.contrib.django import app

    from integrations import tasks

    schema = f"t_wake_{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC) + timedelta(seconds=30)
    with (
        app.replace_connector(app.connector.get_worker_connector()),
        pytest.raises(_Rollback),
        transaction.atomic(),
    ):
        tasks.wake(schema, at=at)
        raise _Rollback
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE args ->> 'schema_name' = %s", [schema]
        )
        assert cursor.fetchone() == (0,)
