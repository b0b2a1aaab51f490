"""PostgreSQL away, at the one place that runs tenant calls (tenants/context.py): a
connection-level failure, or a call that does not answer within DB_UNAVAILABLE_TIMEOUT,
is `DatabaseUnavailable`; a call given up on while still queued never runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.conf import settings
from django.db import OperationalError

from tenants import context
from tests.conftest import TenantInfo


def _share() -> int:
    return int(settings.DB_THREADS_PER_TENANT)


async def test_a_connection_failure_in_a_call_is_database_unavailable(
    tenant_a: TenantInfo,
) -> None:
    def refused() -> None:
        raise OperationalError("connection refused")

    with pytest.raises(context.DatabaseUnavailable) as caught:
        await context.in_schema(tenant_a.schema_name, refused)
    assert isinstance(caught.value.__cause__, OperationalError)
    assert caught.value.retry_after > 0


async def test_a_call_past_the_bound_is_unavailable_and_a_queued_one_given_up_never_runs(
    tenant_a: TenantInfo, settings: object
) -> None:
    settings.DB_UNAVAILABLE_TIMEOUT = 0.5  # type: ignore[attr-defined]
    release = threading.Event()
    ran: list[str] = []

    def stuck() -> None:  # a query that hangs (the database gone without a reset)
        release.wait(10)

    def queued() -> None:
        ran.append("queued")

    # The schema's share of threads is taken by stuck calls; one more waits in its queue.
    calls = [context.in_schema(tenant_a.schema_name, stuck) for _ in range(_share())]
    calls.append(context.in_schema(tenant_a.schema_name, queued))
    started = time.monotonic()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    took = time.monotonic() - started
    release.set()
    assert all(isinstance(o, context.DatabaseUnavailable) for o in outcomes), outcomes
    assert took < 5.0  # answered near the bound, not after the stuck calls (10 s)
    # Within a schema calls start in order: once this later one has run, the queued one
    # would have run before it, had it not been dropped.
    assert await context.in_schema(tenant_a.schema_name, lambda: "fence") == "fence"
    assert ran == []
