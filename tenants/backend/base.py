"""django-tenants' PostgreSQL backend, minus one redundant round trip.

django-tenants forgets the applied ``search_path`` on every ``set_tenant`` call, so with
``TENANT_LIMIT_SET_CALLS`` each switch costs a ``SET search_path`` even when the
connection already points at that schema. `tenants.context` switches to the tenant and back
to the previous one around every call, so we remember what the connection really has and
skip the SET when it already matches. The memory is dropped on close and rollback (as
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

    # Whenever django-tenants stops trusting the connection's search_path, so do we.
    def close(self) -> None:
        self.applied_search_paths = None
        super().close()

    def rollback(self) -> None:
        self.applied_search_paths = None
        super().rollback()

    def savepoint_rollback(self, sid: Any) -> None:
        self.applied_search_paths = None
        super().savepoint_rollback(sid)
