"""Database work is fair between tenants (issue 8, item 4): a tenant with a backlog of
calls holds at most its share of the database threads, and another tenant's call runs
beside that backlog instead of after it. Real queries on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from django.conf import settings
from django.db import connection

from tenants.context import in_schema
from tests.conftest import TenantInfo

SLEEP_SECONDS = 0.2


def _share() -> int:
    # Read as the code does; the fallback lets this test fail on its assertions (not on a
    # missing setting) against the FIFO executor it replaces.
    return int(getattr(settings, "DB_THREADS_PER_TENANT", max(1, settings.DB_THREADS // 2)))


class Tally:
    """What tenant A's jobs did, counted on the database threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.finished = 0

    def job(self) -> str:
        with self.lock:
            self.started += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [SLEEP_SECONDS])
                cursor.execute("SELECT current_schema()")
                return str(cursor.fetchone()[0])
        finally:
            with self.lock:
                self.running -= 1
                self.finished += 1


async def test_a_tenants_call_finishes_while_another_tenant_still_has_a_backlog(
    tenant_a: TenantInfo, tenant_b: TenantInfo
) -> None:
    tally = Tally()
    backlog = settings.DB_THREADS * 5
    jobs_a = [
        asyncio.ensure_future(in_schema(tenant_a.schema_name, tally.job)) for _ in range(backlog)
    ]
    await asyncio.sleep(0.05)  # every job of A is queued before B's

    seen_by_b: dict[str, int] = {}

    def job_b() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [SLEEP_SECONDS])
            cursor.execute("SELECT current_schema()")
            schema = str(cursor.fetchone()[0])
        with tally.lock:
            seen_by_b.update(started=tally.started, finished=tally.finished)
        return schema

    assert (
        await asyncio.wait_for(in_schema(tenant_b.schema_name, job_b), 30) == tenant_b.schema_name
    )
    # On one FIFO queue B's job could only start after the last of A's had started.
    assert seen_by_b["started"] < backlog, f"B ran after A's whole backlog: {seen_by_b}"
    assert seen_by_b["finished"] < backlog // 2, f"B waited for most of A's backlog: {seen_by_b}"

    schemas = await asyncio.wait_for(asyncio.gather(*jobs_a), 60)
    assert schemas == [tenant_a.schema_name] * backlog
    assert tally.finished == backlog
    assert 1 <= tally.peak <= _share() < settings.DB_THREADS


async def test_a_tenant_alone_still_uses_its_whole_share_of_threads(tenant_a: TenantInfo) -> None:
    tally = Tally()
    share = _share()
    jobs = [in_schema(tenant_a.schema_name, tally.job) for _ in range(share * 3)]
    await asyncio.wait_for(asyncio.gather(*jobs), 60)
    assert tally.peak == share


request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="none")


async def test_a_call_sees_the_callers_context_variables_and_hands_changes_back(
    tenant_a: TenantInfo,
) -> None:
    request_tag.set("caller-value")

    def read_and_change() -> str:
        seen = request_tag.get()
        request_tag.set("changed-on-db-thread")
        return seen

    assert await in_schema(tenant_a.schema_name, read_and_change) == "caller-value"
    assert request_tag.get() == "changed-on-db-thread"
