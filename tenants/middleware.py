"""HTTP side of tenant resolution: django-tenants' middleware, with the contract's answers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django_tenants.middleware.main import TenantMainMiddleware

from config.logging import tenant_var
from tenants.selectors import active_tenant_for_host


class ActiveTenantMiddleware(TenantMainMiddleware):
    """Selects the tenant from the Host; unknown or deactivated hosts get a JSON 404."""

    def get_tenant(self, domain_model, hostname):  # type: ignore[no-untyped-def]
        tenant = active_tenant_for_host(hostname)
        if tenant is None:
            raise domain_model.DoesNotExist
        tenant_var.set(tenant.schema_name)  # for log lines of this request
        return tenant

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> JsonResponse:
        return JsonResponse({"detail": "Unknown host."}, status=404)
