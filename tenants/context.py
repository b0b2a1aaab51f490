"""The one place where code runs queries for a tenant.

django-tenants keeps the current schema on the thread's database connection, and Django's
async ORM runs every query on one shared executor thread. Setting the schema and running
the query as two awaits would let another tenant's coroutine run in between on that same
connection, so a row could land in the wrong schema. Here the schema switch, the queries
and the restore happen inside ONE synchronous call on one thread; nothing else in the
project calls `connection.set_tenant` / `set_schema`.

The WebSocket side's calls run on a few database threads shared by every tenant. With one
FIFO queue in front of them, a tenant that keeps many calls in flight (sockets looping
writes, floods of handshakes) puts every other tenant's call, and the readiness probe, at
the back of its backlog: their latency grows with the noisy tenant's load, not their own.
`FairScheduler` gives each schema its own queue, serves the queues round-robin and lets
no schema run on more than `DB_THREADS_PER_TENANT` threads at once, so another tenant's
call waits for at most one call per busy thread, never for a backlog.

PostgreSQL away (stopped, restarting, unreachable): every call that fails at the connection
level (refused, dropped, psycopg's pool timing out) or does not finish within
`DB_UNAVAILABLE_TIMEOUT` raises ONE exception, `DatabaseUnavailable`, which the transports
answer as `unavailable` (WebSocket error frame, HTTP 503 with Retry-After, close 1013 on a
handshake). The threads keep serving: a broken connection goes back to the pool, which
reconnects on its own once PostgreSQL is back, so the same process serves again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db import connection as _connection
from django_tenants.utils import get_public_schema_name

from infra.metrics import DB_SECONDS
from tenants.backend.base import DatabaseWrapper

# The default connection is django-tenants' wrapper (settings: ENGINE "tenants.backend").
connection: DatabaseWrapper = _connection  # type: ignore[assignment]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Connection-level failures. psycopg_pool's PoolTimeout is a psycopg.OperationalError, and
# Django wraps psycopg's errors in its own; both spellings are listed because the pool's
# timeout can surface unwrapped (outside a cursor). OperationalError also covers server-side
# cancellations (statement timeout, deadlock): transient, so "try again" is the right answer.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer a tenant call: a connection-level failure, or no answer
    within `DB_UNAVAILABLE_TIMEOUT`. Transports map it to `unavailable` with `retry_after`
    (`DB_UNAVAILABLE_RETRY_AFTER` seconds); nothing of the call is known to be stored."""

    def __init__(self, detail: str = "The database is unavailable; try again shortly.") -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after: float = settings.DB_UNAVAILABLE_RETRY_AFTER


def run_in_schema(schema_name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` with the connection on `schema_name`, then put back the previous tenant."""
    previous = connection.tenant
    connection.set_schema(schema_name)
    try:
        return fn(*args, **kwargs)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable() from exc
    finally:
        connection.set_tenant(previous)
        if connection.errors_occurred:
            # A broken connection (database restart, network) goes back to the pool to be
            # discarded instead of failing every later call on this thread.
            connection.close_if_unusable_or_obsolete()


def revive_if_stale(idle_seconds: float) -> None:
    """Before a call on a long-lived thread: drop the connection if it died while idle.

    A database thread keeps its connection for its life; PostgreSQL may end it while the
    thread waits for work (restart, idle timeout, `pg_terminate_backend`), and the call's
    first statement would fail. A connection idle for longer than `DB_IDLE_CHECK_SECONDS`
    is checked with a `SELECT 1` first; a dead one goes back to the pool (which discards it)
    and the call's first query takes a fresh, checked one. No statement of the call has run
    yet, so nothing is ever retried; a busy thread pays nothing.
    """
    if connection.connection is None or idle_seconds < settings.DB_IDLE_CHECK_SECONDS:
        return
    if not connection.is_usable():
        connection.close()


class _Job:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any):
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs


class FairScheduler:
    """`threads` worker threads serving one FIFO queue per key (a schema), round-robin.

    A key never runs on more than `per_key` threads at once; its other jobs wait in its own
    queue while the remaining threads serve the other keys. Within a key, jobs start in
    submission order. The threads start at the first job and live as long as the process;
    each opens its database connection at its first query and keeps it.
    """

    def __init__(
        self,
        threads: int,
        per_key: int,
        *,
        name: str = "tenant-db",
        before_job: Callable[[float], None] | None = None,
    ) -> None:
        self.threads = max(1, threads)
        self.per_key = max(1, min(per_key, self.threads))
        self.name = name
        self.before_job = before_job
        self._lock = threading.Condition(threading.Lock())
        self._queues: dict[str, deque[_Job]] = {}
        self._ring: deque[str] = deque()  # keys with queued jobs, in serving order
        self._running: dict[str, int] = {}
        self._workers: list[threading.Thread] = []

    def submit(self, key: str, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                self._ring.append(key)
            queue.append(_Job(future, fn, args, kwargs))
            if not self._workers:
                for _ in range(self.threads):
                    self._start_worker()
            self._lock.notify()
        return future

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._work, name=f"{self.name}_{len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _next(self) -> tuple[str, _Job]:
        """Under the lock: the first key of the ring under its share, rotated to the back."""
        while True:
            for _ in range(len(self._ring)):
                key = self._ring[0]
                self._ring.rotate(-1)
                if self._running.get(key, 0) < self.per_key:
                    queue = self._queues[key]
                    job = queue.popleft()
                    if not queue:
                        del self._queues[key]
                        self._ring.remove(key)
                    self._running[key] = self._running.get(key, 0) + 1
                    return key, job
            self._lock.wait()

    def _work(self) -> None:
        last_done = time.monotonic()
        while True:
            with self._lock:
                key, job = self._next()
            try:
                if job.future.set_running_or_notify_cancel():
                    if self.before_job is not None:
                        try:
                            self.before_job(time.monotonic() - last_done)
                        except Exception:  # the job still runs (and reports its own error)
                            logger.warning(
                                "database thread: check before a call failed", exc_info=True
                            )
                    try:
                        job.future.set_result(job.fn(*job.args, **job.kwargs))
                    except BaseException as exc:
                        job.future.set_exception(exc)
            finally:
                last_done = time.monotonic()
                del job
                with self._lock:
                    left = self._running[key] - 1
                    if left:
                        self._running[key] = left
                    else:
                        del self._running[key]
                    # The key may be back under its share while it has queued jobs.
                    self._lock.notify()


_SCHEDULER = FairScheduler(
    settings.DB_THREADS, settings.DB_THREADS_PER_TENANT, before_job=revive_if_stale
)


def current_schema() -> str:
    """The schema the current thread's connection is set to (by the tenant middleware)."""
    return str(connection.schema_name)


async def in_schema(
    schema_name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Await `fn(*args, **kwargs)` run on a database thread inside `schema_name`, in the
    schema's own queue (see the module docstring: fair between tenants)."""
    started = time.perf_counter()
    # The call runs in a copy of the caller's context (what sync_to_async would do), whose
    # changes are copied back when it is done. The scheduler's Future is awaited directly,
    # not through sync_to_async, so the wait can be given up on: cancelling a sync_to_async
    # call that has started waits for its thread, exactly the wait that must not happen here.
    context = contextvars.copy_context()
    call: Future[R] = _SCHEDULER.submit(
        schema_name, context.run, run_in_schema, schema_name, fn, *args, **kwargs
    )
    waiter = asyncio.wrap_future(call)
    try:
        done, _ = await asyncio.wait((waiter,), timeout=settings.DB_UNAVAILABLE_TIMEOUT)
        if waiter in done:
            _restore_context(context)
            return waiter.result()
        # Abandoned: a call still queued is dropped (its Future is cancelled before a thread
        # takes it); one already running finishes on its thread unseen. It can have stored
        # its write; a resend with the same client_id is then answered with that message.
        call.cancel()
        waiter.add_done_callback(_consume)
        raise DatabaseUnavailable()
    except asyncio.CancelledError:
        call.cancel()
        waiter.add_done_callback(_consume)
        raise
    finally:
        DB_SECONDS.labels(getattr(fn, "__name__", "call")).observe(time.perf_counter() - started)


def _restore_context(context: contextvars.Context) -> None:
    """Copy the variables `context` changed into the current context (as asgiref does)."""
    for var, value in context.items():
        try:
            if var.get() is value:
                continue
        except LookupError:
            pass
        var.set(value)


def _consume(call: asyncio.Future[Any]) -> None:
    """An abandoned call's outcome, read so asyncio does not log it as never retrieved."""
    if not call.cancelled() and call.exception() is not None:
        logger.info("database call abandoned after DB_UNAVAILABLE_TIMEOUT failed too")


async def in_public(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Await `fn` run against the public (platform) schema."""
    return await in_schema(get_public_schema_name(), fn, *args, **kwargs)
