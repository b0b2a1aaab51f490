"""Writes on the platform's tables: provisioning tenants and their first users."""

from __future__ import annotations

import enum
from typing import Literal

from django.contrib.auth import get_user_model
from django.db import transaction

from tenants.context import run_in_schema
from tenants.host_cache import tenants_changed
from tenants.models import Domain, Tenant


class _Keep(enum.Enum):
    KEEP = "keep"


# `tenant_update`'s "not given" for fields where None means "back to the platform default".
KEEP = _Keep.KEEP


def tenant_ensure(*, schema_name: str, name: str, domain: str, verbosity: int = 1) -> Tenant:
    """Create the tenant (schema created and migrated by django-tenants) and its domain, or
    return the existing one. Idempotent: `make run` calls it at every start."""

    def ensure() -> Tenant:
        tenant = Tenant.objects.filter(schema_name=schema_name).first()
        if tenant is None:
            tenant = Tenant(schema_name=schema_name, name=name)
            tenant.save(verbosity=verbosity)  # CREATE SCHEMA + migrations of the tenant apps
        with transaction.atomic():
            Domain.objects.get_or_create(
                domain=domain, defaults={"tenant": tenant, "is_primary": True}
            )
        return tenant

    tenant = run_in_schema("public", ensure)
    tenants_changed()
    return tenant


def user_ensure(*, schema_name: str, username: str, password: str, is_admin: bool = False) -> None:
    """Create or reset a user in one tenant's schema (the public schema: platform admins)."""

    def ensure() -> None:
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first() or user_model(username=username)
        user.set_password(password)
        user.is_active = True
        user.is_staff = is_admin
        user.is_superuser = is_admin and schema_name == "public"
        user.save()

    run_in_schema(schema_name, ensure)


def tenant_provision(
    *,
    schema_name: str,
    name: str,
    domain: str,
    admin_username: str,
    admin_password: str,
    attachment_quota_bytes: int | None = None,
) -> Tenant:
    """Create a tenant in one transaction: schema, its migrations, domain, first admin.

    PostgreSQL DDL is transactional, so if any step fails (a taken domain, a migration, the
    admin user) the schema, the tenant row and the domain row are all rolled back together.
    """

    def provision() -> Tenant:
        with transaction.atomic():
            tenant = Tenant(
                schema_name=schema_name, name=name, attachment_quota_bytes=attachment_quota_bytes
            )
            tenant.save(verbosity=0)  # CREATE SCHEMA + migrations, inside our transaction
            Domain.objects.create(domain=domain, tenant=tenant, is_primary=True)
            provision_admin(
                schema_name=schema_name, username=admin_username, password=admin_password
            )
        return tenant

    tenant = run_in_schema("public", provision)
    tenants_changed()  # after the commit: the new host answers at once on every process
    return tenant


def provision_admin(*, schema_name: str, username: str, password: str) -> None:
    """The tenant's first admin (a step of `tenant_provision`)."""
    from accounts.services import user_create

    user_create(schema_name=schema_name, username=username, password=password, is_admin=True)


def tenant_update(
    *,
    tenant: Tenant,
    name: str | None = None,
    is_active: bool | None = None,
    rate_limit_per_second: float | None = None,
    rate_limit_burst: int | None = None,
    attachment_quota_bytes: int | Literal[_Keep.KEEP] | None = KEEP,
) -> Tenant:
    """Rename, reactivate or re-limit a tenant; `is_active=False` deactivates (see below).
    `attachment_quota_bytes=None` puts the tenant back on ATTACHMENT_TENANT_QUOTA_BYTES; a
    quota below what it stores already refuses new uploads and removes nothing."""

    def update() -> Tenant:
        changed = []
        if name is not None:
            tenant.name = name
            changed.append("name")
        if is_active is True:
            tenant.is_active = True
            changed.append("is_active")
        if rate_limit_per_second is not None:
            tenant.rate_limit_per_second = rate_limit_per_second
            changed.append("rate_limit_per_second")
        if rate_limit_burst is not None:
            tenant.rate_limit_burst = rate_limit_burst
            changed.append("rate_limit_burst")
        if attachment_quota_bytes is not KEEP:
            tenant.attachment_quota_bytes = attachment_quota_bytes
            changed.append("attachment_quota_bytes")
        # Only these columns: a full save would write back this copy's stale
        # `attachment_bytes_used` over uploads counted meanwhile.
        if changed:
            tenant.save(update_fields=changed)
        tenant.refresh_from_db(fields=["attachment_bytes_used"])
        return tenant

    updated = run_in_schema("public", update)
    if is_active is False:
        tenant_deactivate(tenant=updated)  # tells the host caches too
    else:
        tenants_changed()  # name, limits and activity are read from the host cache
    return updated


def tenant_deactivate(*, tenant: Tenant) -> None:
    """Keep the data; the tenant's hosts answer 404 at once and its open sockets, on every
    process, close with 4401."""
    from asgiref.sync import async_to_sync

    from chat import events
    from chat.protocol import CloseCode

    def deactivate() -> None:
        Tenant.objects.filter(pk=tenant.pk).update(is_active=False)

    run_in_schema("public", deactivate)
    tenants_changed()  # its hosts answer 404 at once, on every process
    tenant.is_active = False
    async_to_sync(events.close_group)(
        events.tenant_group_name(tenant.schema_name), CloseCode.UNAUTHORIZED
    )
