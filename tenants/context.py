"""The one place where code runs queries for a tenant.

django-tenants keeps the current schema on the thread's database connection, and Django's
async ORM runs every query on one shared executor thread. Setting the schema and running
the query as two awaits would let another tenant's coroutine run in between on that same
connection, so a row could land in the wrong schema. Here the schema switch, the queries
and the restore happen inside ONE synchronous call on one thread; nothing else in the
project calls `connection.set_tenant` / `set_schema`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection as _connection
from django_tenants.utils import get_public_schema_name

from config.metrics import DB_SECONDS
from tenants.backend.base import DatabaseWrapper

# The default connection is django-tenants' wrapper (settings: ENGINE "tenants.backend").
connection: DatabaseWrapper = _connection  # type: ignore[assignment]

P = ParamSpec("P")
R = TypeVar("R")


def run_in_schema(schema_name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` with the connection on `schema_name`, then put back the previous tenant."""
    previous = connection.tenant
    connection.set_schema(schema_name)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_tenant(previous)
        if connection.errors_occurred:
            # A broken connection (database restart, network) goes back to the pool to be
            # discarded instead of failing every later call on this thread.
            connection.close_if_unusable_or_obsolete()


# A small pool of database threads, each with its own connection (checked out of the psycopg
# pool for the life of the thread), so that several round trips are in flight at once instead
# of queueing behind Django's single shared ORM thread. Safety does not depend on which thread
# runs a call: `run_in_schema` sets the schema and runs the queries in one synchronous call.
_DB_EXECUTOR = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="tenant-db")
_on_orm_thread = sync_to_async(run_in_schema, thread_sensitive=False, executor=_DB_EXECUTOR)


def current_schema() -> str:
    """The schema the current thread's connection is set to (by the tenant middleware)."""
    return str(connection.schema_name)


async def in_schema(
    schema_name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Await `fn(*args, **kwargs)` run on the ORM thread inside `schema_name`."""
    started = time.perf_counter()
    try:
        return await _on_orm_thread(schema_name, fn, *args, **kwargs)
    finally:
        DB_SECONDS.labels(getattr(fn, "__name__", "call")).observe(time.perf_counter() - started)


async def in_public(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Await `fn` run against the public (platform) schema."""
    return await in_schema(get_public_schema_name(), fn, *args, **kwargs)
