"""HTTP side of tenant resolution: django-tenants' middleware, with the contract's answers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django_tenants.middleware.main import TenantMainMiddleware

from infra.logging import tenant_var
from tenants.context import CONNECTION_ERRORS, DatabaseUnavailable
from tenants.host_cache import cached_tenant_for_host

_UNAVAILABLE: tuple[type[BaseException], ...] = (DatabaseUnavailable, *CONNECTION_ERRORS)


def unavailable_response() -> JsonResponse:
    """PostgreSQL away: 503 with Retry-After, the same body as the REST handler's."""
    exc = DatabaseUnavailable()
    response = JsonResponse({"detail": exc.detail, "code": "unavailable"}, status=503)
    response["Retry-After"] = str(int(exc.retry_after))
    return response


class ActiveTenantMiddleware(TenantMainMiddleware):
    """Selects the tenant from the Host; unknown or deactivated hosts get a JSON 404.

    The lookup is answered from the process's host snapshot, so neither a known nor an
    unknown host costs a query per request. A snapshot reload that finds PostgreSQL away
    answers 503 (not Django's 500)."""

    def process_request(self, request: HttpRequest) -> JsonResponse | None:  # type: ignore[override]
        try:
            return super().process_request(request)  # type: ignore[no-any-return]
        except _UNAVAILABLE:
            return unavailable_response()

    def get_tenant(self, domain_model, hostname):  # type: ignore[no-untyped-def]
        tenant = cached_tenant_for_host(hostname)  # no query per request (tenants/host_cache.py)
        if tenant is None:
            raise domain_model.DoesNotExist
        tenant_var.set(tenant.schema_name)  # for log lines of this request
        return tenant

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> JsonResponse:
        return JsonResponse({"detail": "Unknown host."}, status=404)
