"""HTTP side of tenant resolution: django-tenants' middleware, with the contract's answers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django_tenants.middleware.main import TenantMainMiddleware

from infra.logging import tenant_var
from tenants.host_cache import cached_tenant_for_host


class ActiveTenantMiddleware(TenantMainMiddleware):
    """Selects the tenant from the Host; unknown or deactivated hosts get a JSON 404.

    The lookup is answered from the process's host snapshot, so neither a known nor an
    unknown host costs a query per request."""

    def get_tenant(self, domain_model, hostname):  # type: ignore[no-untyped-def]
        tenant = cached_tenant_for_host(hostname)  # no query per request (tenants/host_cache.py)
        if tenant is None:
            raise domain_model.DoesNotExist
        tenant_var.set(tenant.schema_name)  # for log lines of this request
        return tenant

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> JsonResponse:
        return JsonResponse({"detail": "Unknown host."}, status=404)
