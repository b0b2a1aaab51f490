"""Writes on the platform's tables: provisioning tenants and their first users."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from tenants.context import run_in_schema
from tenants.models import Domain, Tenant


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

    return run_in_schema("public", ensure)


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
