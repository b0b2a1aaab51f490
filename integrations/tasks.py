"""Procrastinate tasks of webhook deliveries (run by `manage.py webhook_worker`).

Delivery is an engine, not a queue of single POSTs. Procrastinate runs a job only when its
`lock` is free and fetches a blocked job again only at its polling interval, so one job per
delivery under one lock per webhook made a burst crawl at one delivery per poll (issue 17).
Here the job is a *drain* of one tenant (`drain`): it claims that tenant's due deliveries
from the `Delivery` rows (`_claim`) and posts them concurrently, claiming more as attempts
finish, until none has been due for a moment (LINGER_SECONDS). The bounds are counted in
PostgreSQL, so they hold across worker processes: at most WEBHOOK_MAX_IN_FLIGHT attempts in
flight per webhook and WEBHOOK_TENANT_SLOTS per tenant (claims of one tenant are serialized
by an advisory transaction lock; an attempt in flight is a row with `leased_until` set). A
tenant therefore holds about one of a worker's `--concurrency` job slots and a bounded
number of requests, whatever its endpoints do; an attempt, DNS look-up included, is cut at
WEBHOOK_TIMEOUT.

Wake-ups are Procrastinate jobs too: once the change has committed, `record` defers an
immediate drain (a `queueing_lock` keeps one waiting per tenant), unless a drain holds the
tenant's lease: that one is notified (`integrations.wakeups`) and claims at once, so under
steady traffic one drain serves the tenant instead of a job per event. A lingering drain
lets go of its worker slot as soon as another job waits for one. A failed attempt defers one
at its retry time (WEBHOOK_RETRY_SCHEDULE), and `wake_due_deliveries` (every
WEBHOOK_STALLED_CHECK_SECONDS) wakes any tenant that has a due, unclaimed delivery: the net
under every failure path (PostgreSQL away while an attempt ran, a killed worker whose lease
ran out, a lost wake-up), so no delivery stays pending with nothing scheduled.

Attempts run concurrently, so deliveries may arrive out of order, and an attempt whose
outcome could not be logged (worker killed, database away) is made again with the same
`webhook-id`: receivers order by `data.message.seq` and dedupe by `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name
from procrastinate import App, JobContext
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.exceptions import AlreadyEnqueued

from infra.metrics import WEBHOOK_DELIVERIES
from integrations import wakeups, webhooks
from tenants.context import current_schema, in_schema
from tenants.selectors import tenant_schema_names

logger = logging.getLogger(__name__)

DRAIN_TASK = "integrations.drain"
MAX_ERROR_CHARS = 200
# An endpoint's answer is read up to this much (and then kept alive), never more.
RESPONSE_READ_BYTES = 64 * 1024
# An attempt is cut at WEBHOOK_TIMEOUT; its lease outlives that by the time its outcome
# needs to be logged. Once a lease has run out, the delivery may be claimed again.
LEASE_MARGIN_SECONDS = 5.0
# A drain stops claiming after this long and hands over to a fresh job, so that a worker's
# graceful shutdown never waits on a drain that a busy tenant keeps fed.
DRAIN_SECONDS = 30.0
# The drain's lease of its tenant outlives its renewals (one per claim) by this much: a drain
# of a killed worker is replaced after it.
DRAIN_LEASE_SECONDS = 5.0
# A drain with attempts in flight claims again at least this often (and so does a lingering
# one without a listening connection).
CLAIM_POLL_SECONDS = 0.2
# A drain with nothing due nor in flight keeps its lease (and its worker slot) this long,
# woken by notifications (`integrations.wakeups`), before it lets go; it lets go at once when
# another job waits for a slot, which it checks every LINGER_CHECK_SECONDS. Both are less
# than DRAIN_LEASE_SECONDS.
LINGER_SECONDS = 1.0
LINGER_CHECK_SECONDS = 0.5


def wake(schema_name: str, *, at: datetime | None = None) -> None:
    """Make sure a drain of `schema_name`'s deliveries runs now (or at `at`): a job deferred
    through the caller's Django connection, so in the caller's transaction."""
    if at is None:
        lock, schedule_at = f"webhooks:{schema_name}", None
    else:  # one scheduled wake-up per tenant and second, however many retries fall in it
        second = math.ceil(at.timestamp())
        lock, schedule_at = f"webhooks:{schema_name}:{second}", datetime.fromtimestamp(second, UTC)
    try:
        # A savepoint: the queueing lock's unique violation must not abort the caller's
        # transaction (the change being recorded).
        with transaction.atomic():
            _deferrer().configure_task(
                DRAIN_TASK, queueing_lock=lock, schedule_at=schedule_at
            ).defer(schema_name=schema_name)
    except AlreadyEnqueued:
        # A drain is waiting, not started. It may still start before this transaction
        # commits and miss what it recorded: ask again after the commit, when a waiting
        # drain is certain to see it.
        if at is None and connection.in_atomic_block:
            transaction.on_commit(lambda: wake(schema_name))


_DEFERRER: App | None = None


def _deferrer() -> App:
    """An app that defers through Django's own connection, in the worker too, so a wake-up
    always joins the caller's transaction.

    It knows no task: `configure_task` then defers by name through this app's own job
    manager. The worker's app uses an async psycopg pool, and a task it knows stays bound to
    it (`app.with_connector` shares the tasks, which is why Procrastinate deprecates it):
    that is what this did before, so a retry's wake-up, deferred inside a drain's claim
    transaction on a database thread, went through `async_to_sync` to the worker's loop and
    that pool, outside the transaction, while the claim held the tenant's advisory lock and
    its rows. py-spy showed database threads waiting there for tens of seconds; the other
    claims of the tenant gave up after DB_UNAVAILABLE_TIMEOUT (`DatabaseUnavailable`, the
    drains' failures of the last stop's steady runs) and leases ran out unrenewed."""
    global _DEFERRER
    if _DEFERRER is None:
        _DEFERRER = App(connector=DjangoConnector())
    return _DEFERRER


def wake_after_commit(schema_name: str) -> None:
    """`record`'s wake-up: once the change has committed, a drain, unless one holds the
    tenant's lease: that one claims the new delivery at its next claim (at most
    CLAIM_POLL_SECONDS away). Without this, every event of a busy tenant started a drain
    job that found the lease taken, and their claims queued before the working drain's."""
    transaction.on_commit(lambda: _wake_unless_draining(schema_name))


def _wake_unless_draining(schema_name: str) -> None:
    table = f"{connection.ops.quote_name(schema_name)}.integrations_drainlease"
    with transaction.atomic(), connection.cursor() as cursor:
        # FOR SHARE waits for a claim in progress (it updates the row): a drain letting go
        # is seen as gone, and a drain that keeps it is notified (at this commit, so after
        # its claim) and claims at once.
        cursor.execute(f"SELECT until > clock_timestamp() FROM {table} WHERE id = 1 FOR SHARE")
        row = cursor.fetchone()
        if row and row[0]:
            _notify(cursor, schema_name)
            return
    wake(schema_name)


def _notify(cursor: Any, schema_name: str) -> None:
    """Wake the drain that holds `schema_name`'s lease, when this transaction commits."""
    cursor.execute("SELECT pg_notify(%s, %s)", [wakeups.CHANNEL, schema_name])


@dataclass(frozen=True, slots=True)
class _Attempt:
    delivery_id: int
    url: str
    secret: str
    message_id: str
    body: str


_BUSY_SQL = """
SELECT webhook_id, count(*) FROM integrations_delivery
WHERE leased_until IS NOT NULL AND leased_until > statement_timestamp() AND state = 'pending'
GROUP BY webhook_id
"""

# Per active webhook, its oldest due and unclaimed deliveries up to the free part of its bound
# (an index range scan each), then the oldest of those up to the tenant's free slots.
_CLAIM_SQL = """
UPDATE integrations_delivery d
SET leased_until = statement_timestamp() + %(lease)s * interval '1 second'
FROM (
    SELECT pick.id, w.url, w.secret
    FROM integrations_webhook w
    CROSS JOIN LATERAL (
        SELECT c.id, c.due_at FROM integrations_delivery c
        WHERE c.webhook_id = w.id AND c.state = 'pending' AND c.due_at <= statement_timestamp()
          AND (c.leased_until IS NULL OR c.leased_until <= statement_timestamp())
        ORDER BY c.due_at, c.id
        LIMIT greatest(%(per_webhook)s - coalesce((%(busy)s::jsonb ->> w.id::text)::int, 0), 0)
    ) pick
    WHERE w.is_active
    ORDER BY pick.due_at, pick.id
    LIMIT %(free)s
) chosen
WHERE d.id = chosen.id
RETURNING d.id, chosen.url, chosen.secret, d.message_id, d.body
"""


# Lease times are read off the clock (`clock_timestamp()`), not the transaction's start
# (`now()`): a claim's transaction starts by waiting for the tenant's advisory lock, and a
# sender's check waits for the lease row, so by then `now()` can be seconds old. A drain that
# let go would look alive to such a sender (no wake-up, and the event waits for another),
# and a lease taken would be shorter than meant.
_LEASE_SQL = """
INSERT INTO integrations_drainlease (id, holder, until)
VALUES (1, %(holder)s, clock_timestamp() + %(seconds)s * interval '1 second')
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE integrations_drainlease.until < clock_timestamp()
   OR integrations_drainlease.holder = excluded.holder
RETURNING holder
"""


@dataclass(frozen=True, slots=True)
class _Claim:
    attempts: list[_Attempt]
    active: bool  # this drain holds the tenant's lease; False: another does, or it let go
    results: list[str]  # of the outcomes logged


def _claim(
    schema_name: str,
    holder: str,
    outcomes: list[_Outcome],
    running: int,
    *,
    stop: bool,
    keep: bool = False,
) -> _Claim:
    """Log the attempts finished here, renew this drain's lease of the tenant and lease the
    next deliveries to attempt, within both bounds, in one transaction. With none in flight
    here and none due, the lease is let go in the same transaction (so a delivery committed
    before this runs is seen, and one committed after finds the lease free for its own
    wake-up's drain); `stop` lets it go anyway."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Claims of one tenant, from every worker process, one at a time: the bounds below
        # are counted, then filled, with nobody claiming in between.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"webhook-claims:{current_schema()}"]
        )
        results = _settle(schema_name, outcomes)
        cursor.execute(_LEASE_SQL, {"holder": holder, "seconds": DRAIN_LEASE_SECONDS})
        if cursor.fetchone() is None:
            # Another drain works the tenant: it claims at once what woke this one.
            _notify(cursor, schema_name)
            return _Claim([], active=False, results=results)
        if stop:
            _let_go(cursor, holder)
            return _Claim([], active=False, results=results)
        cursor.execute(_BUSY_SQL)
        busy = {str(webhook_id): count for webhook_id, count in cursor.fetchall()}
        free = settings.WEBHOOK_TENANT_SLOTS - sum(busy.values())
        attempts: list[_Attempt] = []
        if free > 0:
            cursor.execute(
                _CLAIM_SQL,
                {
                    "lease": settings.WEBHOOK_TIMEOUT + LEASE_MARGIN_SECONDS,
                    "per_webhook": settings.WEBHOOK_MAX_IN_FLIGHT,
                    "busy": json.dumps(busy),
                    "free": free,
                },
            )
            attempts = [_Attempt(*row) for row in cursor.fetchall()]
        if not attempts and not running:
            if keep and not _jobs_waiting(cursor):
                return _Claim([], active=True, results=results)  # lingering
            if not _has_due():
                _let_go(cursor, holder)
                return _Claim([], active=False, results=results)
        return _Claim(attempts, active=True, results=results)


def _jobs_waiting(cursor: Any) -> bool:
    """Whether some job is due and not yet taken by a worker (Procrastinate's table, in the
    public schema): then a lingering drain lets go of its worker slot rather than keep it
    from another tenant (or another task)."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM public.procrastinate_jobs WHERE status = 'todo'"
        " AND (scheduled_at IS NULL OR scheduled_at <= now()))"
    )
    row = cursor.fetchone()
    return bool(row and row[0])


def _let_go(cursor: Any, holder: str) -> None:
    cursor.execute(
        "UPDATE integrations_drainlease SET until = clock_timestamp() - interval '1 second'"
        " WHERE holder = %s",
        [holder],
    )


def _has_due() -> bool:
    """Whether the current tenant has a due pending delivery of an active webhook that no
    attempt holds (the sweep's question)."""
    from integrations.models import Delivery

    now = timezone.now()
    return (
        Delivery.objects.filter(
            state=Delivery.State.PENDING, due_at__lte=now, webhook__is_active=True
        )
        .exclude(leased_until__gt=now)
        .exists()
    )


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivery_id: int
    status_code: int | None
    error: str


# The attempts' rows, locked, with how many of their attempts failed so far.
_SETTLE_READ_SQL = """
SELECT id, state, (
    SELECT count(*) FROM jsonb_array_elements(attempts) a
    WHERE NOT coalesce((a ->> 'status_code')::int BETWEEN 200 AND 299, false)
)
FROM integrations_delivery WHERE id = ANY(%s) ORDER BY id FOR UPDATE
"""

# All outcomes in one statement: each row gets its attempts appended, its lease released,
# its new state and (for a retry) its new due time.
_SETTLE_WRITE_SQL = """
UPDATE integrations_delivery d
SET attempts = d.attempts || o.entries, state = o.state,
    due_at = coalesce(o.due_at, d.due_at), leased_until = NULL
FROM jsonb_to_recordset(%s::jsonb) AS o(id bigint, entries jsonb, state text, due_at timestamptz)
WHERE d.id = o.id
"""


@dataclass(slots=True)
class _Row:
    state: str
    failures: int
    entries: list[dict[str, Any]]
    due_at: datetime | None = None


def _settle(schema_name: str, outcomes: list[_Outcome]) -> list[str]:
    """Log finished attempts (one transaction, two statements for all) and release their
    leases: delivered on a 2xx, else due again after its delay (a wake-up queued in the same
    transaction), or failed when the schedule is spent. Returns each attempt's outcome."""
    if not outcomes:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SETTLE_READ_SQL, [sorted({o.delivery_id for o in outcomes})])
        rows = {pk: _Row(state, failures, []) for pk, state, failures in cursor.fetchall()}
        results = [
            _settle_one(schema_name, rows[o.delivery_id], o) if o.delivery_id in rows else "gone"
            for o in outcomes
        ]
        if rows:
            cursor.execute(
                _SETTLE_WRITE_SQL,
                [
                    json.dumps(
                        [
                            {
                                "id": pk,
                                "entries": row.entries,
                                "state": row.state,
                                "due_at": row.due_at.isoformat() if row.due_at else None,
                            }
                            for pk, row in rows.items()
                        ]
                    )
                ],
            )
    return results


def _settle_one(schema_name: str, row: _Row, outcome: _Outcome) -> str:
    from integrations.models import Delivery

    now = timezone.now()
    row.entries.append(
        {"at": now.isoformat(), "status_code": outcome.status_code, "error": outcome.error or None}
    )
    if row.state != Delivery.State.PENDING:
        # Concluded meanwhile by a second attempt (this one outlived its lease): the log
        # keeps both, the state stays.
        return "late"
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if _ok(outcome.status_code):
        row.state = Delivery.State.DELIVERED
        return "delivered"
    row.failures += 1
    if row.failures <= len(schedule):
        row.due_at = now + timedelta(seconds=schedule[row.failures - 1])
        wake(schema_name, at=row.due_at)
        return "retry"
    row.state = Delivery.State.FAILED
    return "failed"


def _ok(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


# getaddrinfo blocks a thread for as long as the resolver takes; the wait is cut at the
# attempt's timeout, and these threads are the webhooks' own, so a hanging resolver can
# never starve the loop's default executor.
_DNS_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook-dns")


async def _pinned_url(url: str) -> tuple[str, str]:
    """(URL with the host replaced by a checked address, the Host header): the address is
    resolved and checked now, at delivery time, and the request goes to that very address,
    so a name that re-resolves to a private address after the save-time check (DNS
    rebinding) reaches nothing private."""
    scheme, host, port = webhooks.url_target(url)
    infos = await asyncio.get_running_loop().run_in_executor(
        _DNS_THREADS, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM
    )
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(webhooks.address_refused(a) for a in addresses):
        raise PermissionError("the URL resolves to a non-public address")
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    parts = urlsplit(url)
    default_port = 443 if scheme == "https" else 80
    host_header = host if port == default_port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")), host_header


async def _post(client: httpx.AsyncClient, attempt: _Attempt) -> tuple[int | None, str]:
    """One POST: (status code, error). Never raises: whatever goes wrong is a failed attempt
    (a URL the client refuses, a refused address, no answer within WEBHOOK_TIMEOUT, which
    covers the DNS look-up too)."""
    timestamp = int(time.time())
    try:
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT):
            target, host_header = await _pinned_url(attempt.url)
            headers = {
                "host": host_header,
                "content-type": "application/json",
                "user-agent": "tenantchat-webhooks",
                "webhook-id": attempt.message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": webhooks.signature(
                    attempt.secret, attempt.message_id, timestamp, attempt.body
                ),
            }
            request = client.build_request(
                "POST",
                target,
                content=attempt.body.encode(),
                headers=headers,
                extensions={"sni_hostname": webhooks.url_target(attempt.url)[1]},
            )
            response = await client.send(request, stream=True)
            try:
                # A short answer is read to its end, so that its connection goes back to
                # the pool for the webhook's next attempt (httpcore closes a connection
                # whose answer was left unread); a longer one is dropped with its
                # connection, unread.
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > RESPONSE_READ_BYTES:
                        break
            finally:
                await response.aclose()
        return response.status_code, "" if _ok(response.status_code) else "non-2xx answer"
    except TimeoutError:
        return None, f"no answer within {settings.WEBHOOK_TIMEOUT:g} s"
    except Exception as exc:  # httpx.InvalidURL is no HTTPError: any failure is an attempt's
        return None, (str(exc) or type(exc).__name__)[:MAX_ERROR_CHARS]


_CLIENT: httpx.AsyncClient | None = None


def _client() -> httpx.AsyncClient:
    global _CLIENT
    if _CLIENT is None:
        # No redirects (a 3xx is a failed attempt: following it would skip the address check).
        # Keep-alive connections: a busy webhook's attempts reuse them.
        _CLIENT = httpx.AsyncClient(
            follow_redirects=False,
            timeout=settings.WEBHOOK_TIMEOUT,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
    return _CLIENT


async def _attempt(attempt: _Attempt) -> _Outcome:
    status_code, error = await _post(_client(), attempt)
    return _Outcome(attempt.delivery_id, status_code, error)


def _count(outcomes: list[_Outcome], results: list[str]) -> None:
    for outcome, result in zip(outcomes, results, strict=True):
        WEBHOOK_DELIVERIES.labels(result).inc()
        logger.info(
            "webhook delivery %s attempt: %s (%s)",
            outcome.delivery_id,
            result,
            outcome.status_code or outcome.error,
        )


@app.task(name=DRAIN_TASK)
async def drain(schema_name: str) -> None:
    """Work the tenant's deliveries: attempt the due ones, several at once within the bounds,
    and log finished attempts and claim again as they finish (at least every
    CLAIM_POLL_SECONDS, and at once when a new event is notified), until none has been due
    for LINGER_SECONDS. One drain per tenant works at a time (the lease); another one
    started meanwhile passes its wake-up on to it and ends at once."""
    holder = uuid.uuid4().hex
    running: set[asyncio.Task[_Outcome]] = set()
    done: list[_Outcome] = []
    started = time.monotonic()
    idle_since: float | None = None  # since when nothing was due nor in flight here
    listener = wakeups.listener()
    notified = listener.subscribe(schema_name)
    try:
        while True:
            now = time.monotonic()
            stop = now - started >= DRAIN_SECONDS
            keep = idle_since is None or now - idle_since < LINGER_SECONDS
            settled, done = done, []
            notified.clear()  # a notification from now on is of what this claim may miss
            try:
                claim = await in_schema(
                    schema_name,
                    _claim,
                    schema_name,
                    holder,
                    settled,
                    len(running),
                    stop=stop,
                    keep=keep,
                )
            except BaseException:
                done = settled + done  # not logged: tried once more below
                raise
            _count(settled, claim.results)
            for attempt in claim.attempts:
                running.add(asyncio.create_task(_attempt(attempt)))
            if not claim.active:
                if stop:  # hand over to a fresh job: a shutdown never waits on an endless one
                    await in_schema(schema_name, _wake_if_due, schema_name)
                return
            if running:
                idle_since = None
                # A notification is of a new event: worth a claim unless the attempts here
                # already fill a webhook's bound (then half of them finishing is).
                full = len(running) >= settings.WEBHOOK_MAX_IN_FLIGHT
                done.extend(await _some_finished(running, None if full else notified))
                continue
            if idle_since is None:
                idle_since = time.monotonic()
            # Lingering: nothing in flight here, nothing to claim. A notification ends the
            # wait; without a listening connection, claims poll. Past the linger, a drain
            # still active has due deliveries it may not claim yet (the tenant's slots are
            # held elsewhere): it polls for them.
            left = LINGER_SECONDS - (time.monotonic() - idle_since)
            poll = LINGER_CHECK_SECONDS if listener.connected.is_set() else CLAIM_POLL_SECONDS
            wait = min(left, poll) if left > 0 else CLAIM_POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(notified.wait(), wait)
    finally:
        listener.unsubscribe(schema_name, notified)
        # Leaving early (a claim failed, the lease went to another drain, a hand-over): the
        # attempts in flight finish and are logged. If that fails too (database away), their
        # leases run out and the periodic wake-up has them attempted again.
        if running:
            done.extend(await asyncio.gather(*running))
        if done:
            try:
                _count(done, await in_schema(schema_name, _settle, schema_name, done))
            except Exception:
                logger.exception("webhook attempts not logged: %s", [o.delivery_id for o in done])
                WEBHOOK_DELIVERIES.labels("unlogged").inc(len(done))


async def _some_finished(
    running: set[asyncio.Task[_Outcome]], notified: asyncio.Event | None
) -> list[_Outcome]:
    """Wait until half of `running` is done, CLAIM_POLL_SECONDS have passed or a new event is
    `notified` (few transactions under a burst; a new event waits for no slow attempt); take
    the finished tasks out of `running` and return their outcomes."""
    deadline = time.monotonic() + CLAIM_POLL_SECONDS
    enough = len(running) // 2
    finished: list[_Outcome] = []
    woken = asyncio.ensure_future(notified.wait()) if notified is not None else None
    try:
        while len(running) > enough and not (woken and woken.done()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiting: set[asyncio.Future[Any]] = {*running, *([woken] if woken else [])}
            ready, _ = await asyncio.wait(
                waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in running & ready:
                running.discard(task)
                finished.append(task.result())
    finally:
        if woken:
            woken.cancel()
    return finished


@app.task(name="integrations.deliver")
async def deliver(schema_name: str, delivery_id: int) -> None:
    """A job of the former one-job-per-delivery scheme, still queued across an upgrade: the
    tenant's drain takes the delivery."""
    await in_schema(schema_name, wake, schema_name)


def _wake_if_due(schema_name: str) -> bool:
    if _has_due():
        wake(schema_name)
        return True
    return False


# croniter's sixth field is seconds: every WEBHOOK_STALLED_CHECK_SECONDS.
@app.periodic(cron=f"* * * * * */{settings.WEBHOOK_STALLED_CHECK_SECONDS}")
@app.task(name="integrations.wake_due_deliveries", queueing_lock="wake_due_deliveries")
async def wake_due_deliveries(timestamp: int) -> int:
    """Every tenant with a due delivery that no attempt holds gets a drain: the net under
    every failure path (see the module docstring). Returns how many tenants were woken."""
    woken = 0
    for schema_name in await in_schema(get_public_schema_name(), tenant_schema_names):
        woken += await in_schema(schema_name, _wake_if_due, schema_name)
    return woken


# croniter's sixth field is seconds: every WEBHOOK_STALLED_CHECK_SECONDS.
@app.periodic(cron=f"* * * * * */{settings.WEBHOOK_STALLED_CHECK_SECONDS}")
@app.task(
    name="integrations.retry_stalled_jobs", queueing_lock="retry_stalled_jobs", pass_context=True
)
async def retry_stalled_jobs(context: JobContext, timestamp: int) -> None:
    """Jobs of a worker that died (SIGKILL, OOM) without finishing them are run again: the
    delivery may then reach its endpoint twice, with the same `webhook-id` (at least once)."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=settings.WEBHOOK_STALLED_SECONDS
    )
    for job in stalled:
        await manager.retry_job(job)
        logger.info("webhook job %s of a dead worker queued again", job.id)


@app.periodic(cron="17 * * * *")
@app.task(name="integrations.remove_old_jobs", queueing_lock="remove_old_jobs", pass_context=True)
async def remove_old_jobs(context: JobContext, timestamp: int) -> None:
    """Finished Procrastinate jobs older than a day go (every hour): the delivery log is the
    `Delivery` rows, a job is only the vehicle of one attempt."""
    await context.app.job_manager.delete_old_jobs(
        nb_hours=24, include_failed=True, include_cancelled=True, include_aborted=True
    )


def _remove_finished_deliveries(older_than: timedelta) -> int:
    """Delivered and failed deliveries of the current schema older than `older_than`; pending
    ones stay whatever their age (their retries are still to come)."""
    from integrations.models import Delivery

    deleted, _ = (
        Delivery.objects.filter(created_at__lt=timezone.now() - older_than)
        .exclude(state=Delivery.State.PENDING)
        .delete()
    )
    return deleted


@app.periodic(cron="23 * * * *")
@app.task(name="integrations.remove_old_deliveries", queueing_lock="remove_old_deliveries")
async def remove_old_deliveries(timestamp: int) -> int:
    """Every hour, in every tenant: the delivery log keeps finished deliveries
    WEBHOOK_DELIVERY_RETENTION_DAYS days (the contract's "every delivery" is the log of that
    window). Returns how many went."""
    older_than = timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS)
    removed = 0
    for schema_name in await in_schema(get_public_schema_name(), tenant_schema_names):
        removed += await in_schema(schema_name, _remove_finished_deliveries, older_than)
    if removed:
        logger.info("removed %d finished webhook deliveries", removed)
    return removed
