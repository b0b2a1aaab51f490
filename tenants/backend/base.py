"""django-tenants' PostgreSQL backend, minus one redundant round trip.

django-tenants forgets the applied ``search_path`` on every ``set_tenant`` call, so with
``TENANT_LIMIT_SET_CALLS`` each switch costs a ``SET search_path`` even when the
connection already points at that schema. `tenants.context` switches to the tenant and back
to the previous one around every call, so we remember what the connection really has and
skip the SET when it already matches. The memory is dropped after close and rollback (as
django-tenants drops its own), so a pooled connection is never trusted with a stale path.
"""

from __future__ import annotations

from typing import Any

from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantsDatabaseWrapper
from psycopg_pool import ConnectionPool


def _sweeping_check(pool: ConnectionPool) -> Any:
    """The pool's check of a connection before it is handed out; when one fails, every idle
    connection of the pool is checked at once (psycopg_pool's public `check()`).

    One dead connection means PostgreSQL most likely ended them all (a restart, a failover,
    pg_terminate_backend). psycopg_pool's getconn sleeps with backoff (1 s, then 2 s, ...)
    after each failed check before it pops the next connection, so a pool full of dead ones
    made its waiters give up at DB_POOL_TIMEOUT (3 s) after two or three of them: the
    "couldn't get a connection after 3.00 sec" of issue 17 item 11. After the sweep the next
    pop is a live connection or a fresh one, after one backoff at most."""

    def check(conn: Any) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            pool.check()
            raise

    return check


class DatabaseWrapper(TenantsDatabaseWrapper):
    search_path_set_schemas: list[str] | None
    schema_name: str
    tenant: Any
    # What this connection's search_path really is, as far as we know (None: unknown).
    applied_search_paths: list[str] | None = None

    @property
    def pool(self) -> Any:
        pool = super().pool
        # psycopg_pool keeps the check it was built with in `_check` (Django builds the pool
        # with ConnectionPool.check_connection); tests/tenants/test_stale_connections.py
        # fails if that changes.
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            pool._check = _sweeping_check(pool)
        return pool

    def set_tenant(self, tenant: Any, include_public: bool = True) -> None:
        super().set_tenant(tenant, include_public)
        applied = self.applied_search_paths
        if applied is not None and applied == self._get_cursor_search_paths():
            self.search_path_set_schemas = applied

    def _handle_search_path(self, cursor: Any = None) -> None:
        super()._handle_search_path(cursor)
        self.applied_search_paths = self.search_path_set_schemas

    # Whenever django-tenants stops trusting the connection's search_path, so do we. Forgotten
    # AFTER the parent's call, and even if it fails: `savepoint_rollback` runs its
    # `ROLLBACK TO SAVEPOINT` on a cursor, and getting that cursor goes through
    # `_handle_search_path` above, which would copy the pre-rollback memo straight back; the
    # rollback then reverts the path under it and a later `set_tenant` trusts the stale memo.
    # `rollback` and `close` take no cursor today, but get the same order so they never can.
    def close(self) -> None:
        try:
            super().close()
        finally:
            self.applied_search_paths = None

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.applied_search_paths = None

    def savepoint_rollback(self, sid: Any) -> None:
        try:
            super().savepoint_rollback(sid)
        finally:
            self.applied_search_paths = None
