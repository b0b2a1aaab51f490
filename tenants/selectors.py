"""Read queries on the platform's tables."""

from __future__ import annotations

from tenants.models import Tenant


def hostname_of(host: str) -> str:
    """`acme.localhost:8000` -> `acme.localhost` (the contract resolves tenants without port)."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


# What the host lookups load of a tenant (the middlewares and the consumers read these).
TENANT_FIELDS = (
    "id",
    "schema_name",
    "name",
    "is_active",
    "rate_limit_per_second",
    "rate_limit_burst",
)


def active_tenant_for_host(hostname: str) -> Tenant | None:
    """The active tenant whose domain is `hostname`, or None. Must run in the public schema."""
    return (
        Tenant.objects.filter(domains__domain=hostname, is_active=True).only(*TENANT_FIELDS).first()
    )


def tenant_schema_names() -> list[str]:
    """Every tenant's schema (active or not), in order; the public schema is not a tenant.
    Public schema."""
    from django_tenants.utils import get_public_schema_name

    return list(
        Tenant.objects.exclude(schema_name=get_public_schema_name())
        .order_by("schema_name")
        .values_list("schema_name", flat=True)
    )
