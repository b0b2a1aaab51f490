"""django-tenants' PostgreSQL backend, minus one redundant round trip.

django-tenants forgets the applied ``search_path`` on every ``set_tenant`` call, so with
``TENANT_LIMIT_SET_CALLS`` each switch costs a ``SET search_path`` even when the
connection already points at that schema. The WebSocket path switches to the same tenant
for every message, so we keep the record when the new search path equals the applied one.
The record is still dropped on close and rollback (by django-tenants), which is what keeps
a pooled connection from ever being trusted with a stale search path.
"""

from __future__ import annotations

from typing import Any

from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantsDatabaseWrapper


class DatabaseWrapper(TenantsDatabaseWrapper):
    search_path_set_schemas: list[str] | None
    schema_name: str
    tenant: Any

    def set_tenant(self, tenant: Any, include_public: bool = True) -> None:
        applied = self.search_path_set_schemas
        super().set_tenant(tenant, include_public)
        if applied is not None and applied == self._get_cursor_search_paths():
            self.search_path_set_schemas = applied
