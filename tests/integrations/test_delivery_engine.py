"""Webhook delivery as an engine (PROTOCOL section 5, "Throughput" and the fairness rule), on
real processes: `manage.py webhook_worker`, PostgreSQL and local HTTP receivers. Events are
recorded with `webhooks.record` in their own transactions, as the write services do."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import TenantInfo, blocking
from tests.integrations.conftest import Receiver, Worker, start_worker


def add_hook(tenant: TenantInfo, url: str) -> int:
    from integrations import webhooks
    from integrations.models import Webhook
    from tenants.context import run_in_schema

    def create() -> int:
        hook = Webhook.objects.create(
            url=url, events=["user.created"], secret=webhooks.new_secret()
        )
        return int(hook.pk)

    return blocking(lambda: run_in_schema(tenant.schema_name, create))


def record_events(tenant: TenantInfo, count: int, tag: str) -> None:
    """`count` user.created events, each in a transaction of its own."""
    from django.db import transaction

    from integrations import webhooks
    from tenants.context import run_in_schema

    def record() -> None:
        for n in range(count):
            with transaction.atomic():
                webhooks.record("user.created", {"user": {"id": n, "username": f"{tag}-{n}"}})

    blocking(lambda: run_in_schema(tenant.schema_name, record))


def remove_hooks(tenant: TenantInfo) -> None:
    from integrations.models import Webhook
    from tenants.context import run_in_schema

    blocking(lambda: run_in_schema(tenant.schema_name, lambda: Webhook.objects.all().delete()))


def one_at_a_time(
    tenant: TenantInfo, receiver: Receiver, worker: Worker, tag: str, *, pause: float
) -> list[float]:
    """Six events recorded one at a time, `pause` apart: each one's seconds from its commit
    to the receiver having it."""
    latencies = []
    for n in range(6):
        before = len(receiver.calls)
        sent = time.monotonic()
        record_events(tenant, 1, f"{tag}{n}")
        arrived = receiver.wait_for(before + 1, timeout=10)
        assert len(arrived) > before, worker.log()
        latencies.append(arrived[before]["at"] - sent)
        time.sleep(pause)
    return latencies


def stop(worker: Worker) -> None:
    worker.process.terminate()
    worker.process.wait(timeout=30)


def test_a_burst_to_one_webhook_goes_out_several_at_once_within_its_bound(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    tenant = make_tenant()
    receiver: Receiver = receiver_factory(delay=0.2)  # an endpoint that takes 0.2 s a request
    add_hook(tenant, receiver.url)
    worker = start_worker(tmp_path, WEBHOOK_MAX_IN_FLIGHT="4")
    try:
        started = time.monotonic()
        record_events(tenant, 40, "burst")
        calls = receiver.wait_for(40, timeout=90)
        elapsed = time.monotonic() - started
    finally:
        stop(worker)
        remove_hooks(tenant)
    assert len(calls) >= 40, worker.log()
    names = {json.loads(c["body"])["data"]["user"]["username"] for c in calls}
    assert names == {f"burst-{n}" for n in range(40)}, "every event of the burst arrived"
    # One at a time (main: every job of a webhook under one Procrastinate lock) is 1 here.
    assert 2 <= receiver.max_in_flight <= 4, receiver.max_in_flight
    # Generous: one at a time would take 40 * 0.2 = 8 s of answers alone, plus the polls.
    assert elapsed < 60, elapsed


def test_a_tenant_of_dead_endpoints_keeps_to_its_slots_and_another_tenant_goes_on(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    noisy, quiet = make_tenant(), make_tenant()
    hole: Receiver = receiver_factory(blackhole=True)
    fast: Receiver = receiver_factory()
    for n in range(5):
        add_hook(noisy, f"{hole.url}/{n}")
    add_hook(quiet, fast.url)
    # Three attempts of the noisy tenant at once, whatever its five webhooks want; the worker
    # has four job slots (conftest), which five webhooks one-per-slot (main) would all hold.
    worker = start_worker(
        tmp_path, WEBHOOK_TENANT_SLOTS="3", WEBHOOK_MAX_IN_FLIGHT="2", WEBHOOK_TIMEOUT="2"
    )
    try:
        record_events(noisy, 4, "noisy")  # 20 deliveries into the hole
        assert hole.wait_for(3, timeout=30), worker.log()
        latencies = one_at_a_time(quiet, fast, worker, "quiet", pause=0.5)
        in_the_hole = len(hole.calls)
    finally:
        stop(worker)
        remove_hooks(noisy)
        remove_hooks(quiet)
    assert hole.max_in_flight <= 3, hole.max_in_flight
    assert in_the_hole >= 6, "the dead endpoints kept being tried meanwhile"
    # The quiet tenant waits for no dead endpoint (its attempt, not another's timeout of 2 s).
    assert max(latencies) < 1.5, latencies


def test_a_dead_webhook_does_not_delay_another_webhook_of_its_tenant(
    make_tenant: Any, receiver_factory: Any, tmp_path: Path
) -> None:
    """Section 5: a dead endpoint delays another webhook's deliveries by at most 1 s. The
    dead one holds its WEBHOOK_MAX_IN_FLIGHT attempts; the tenant's other slots serve the
    other webhook, claimed at least every CLAIM_POLL_SECONDS."""
    tenant = make_tenant()
    hole: Receiver = receiver_factory(blackhole=True)
    fast: Receiver = receiver_factory(keep_alive=True)
    add_hook(tenant, hole.url)
    add_hook(tenant, fast.url)
    worker = start_worker(tmp_path, WEBHOOK_MAX_IN_FLIGHT="4", WEBHOOK_TIMEOUT="5")
    try:
        record_events(tenant, 6, "fill")  # 6 into the hole: 4 held at once, 2 waiting
        assert hole.wait_for(4, timeout=30), worker.log()
        assert fast.wait_for(6, timeout=30), worker.log()
        latencies = one_at_a_time(tenant, fast, worker, "live", pause=0.3)
        held = hole.max_in_flight
    finally:
        stop(worker)
        remove_hooks(tenant)
    assert held <= 4, held
    assert max(latencies) < 1.5, latencies
