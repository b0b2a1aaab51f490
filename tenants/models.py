"""The platform's own tables, in the public schema: tenants and the hosts that select them."""

from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Tenant(TenantMixin):
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Per-tenant override of the per-connection message rate limit (null: platform default).
    rate_limit_per_second = models.FloatField(null=True, blank=True)
    rate_limit_burst = models.PositiveIntegerField(null=True, blank=True)
    # Attachment storage (PROTOCOL section 6): the tenant's quota (null: the platform's
    # ATTACHMENT_TENANT_QUOTA_BYTES) and the bytes its attachment rows hold. The counter
    # changes only in the transaction that inserts or deletes those rows (chat/attachments.py),
    # by a conditional UPDATE of this row, so it is their sum at every commit, on every pod.
    attachment_quota_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    attachment_bytes_used = models.PositiveBigIntegerField(default=0)

    auto_create_schema = True
    auto_drop_schema = False

    def __str__(self) -> str:
        return self.schema_name


class Domain(DomainMixin):
    def __str__(self) -> str:
        return self.domain
