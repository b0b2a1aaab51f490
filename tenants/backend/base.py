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


class DatabaseWrapper(TenantsDatabaseWrapper):
    search_path_set_schemas: list[str] | None
    schema_name: str
    tenant: Any
    # What this connection's search_path really is, as far as we know (None: unknown).
    applied_search_paths: list[str] | None = None

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
