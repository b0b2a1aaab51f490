"""Platform API: request validation and response shapes for tenants."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.http.request import validate_host
from rest_framework import serializers

from tenants.models import Domain, Tenant

# Used with fullmatch: `^...$` would also take a trailing newline.
SCHEMA_NAME = re.compile(r"[a-z][a-z0-9_]{1,49}")
RESERVED_SCHEMAS = {"public", "information_schema", "default", "user", "current_user"}
HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


class AdminSerializer(serializers.Serializer):
    username = serializers.RegexField(r"\A[\w.@+-]{1,150}\Z")
    password = serializers.CharField(min_length=8, max_length=128, write_only=True)

    def validate_password(self, value: str) -> str:
        validate_password(value)
        return value


class TenantSerializer(serializers.ModelSerializer):
    domain = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = [
            "schema_name",
            "name",
            "domain",
            "is_active",
            "created_at",
            "rate_limit_per_second",
            "rate_limit_burst",
            "attachment_quota_bytes",
            "attachment_bytes_used",
        ]
        read_only_fields = fields

    def get_domain(self, tenant: Tenant) -> str | None:
        domain = tenant.domains.filter(is_primary=True).first() or tenant.domains.first()
        return domain.domain if domain else None


# The largest value the column holds (PostgreSQL bigint): more would be a 500, not a 400.
QUOTA_MAX = 2**63 - 1


def quota_field() -> serializers.IntegerField:
    """`attachment_quota_bytes`: bytes of attachments the tenant may keep, a non-negative
    integer; null (or absent on create) is the platform's ATTACHMENT_TENANT_QUOTA_BYTES."""
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=QUOTA_MAX,
        help_text="Bytes of attachments the tenant may keep; null: ATTACHMENT_TENANT_QUOTA_BYTES",
    )


class TenantCreateSerializer(serializers.Serializer):
    # Not trimmed: a schema name outside the pattern is a 400, as the contract says.
    schema_name = serializers.CharField(max_length=50, trim_whitespace=False)
    name = serializers.CharField(max_length=100)
    domain = serializers.CharField(max_length=253)
    admin = AdminSerializer()
    attachment_quota_bytes = quota_field()

    def validate_schema_name(self, value: str) -> str:
        if not SCHEMA_NAME.fullmatch(value):
            raise serializers.ValidationError(
                "Use 2 to 50 lower-case letters, digits and underscores, starting with a letter."
            )
        if value in RESERVED_SCHEMAS or value.startswith("pg_"):
            raise serializers.ValidationError("This schema name is reserved.")
        if Tenant.objects.filter(schema_name=value).exists():
            raise serializers.ValidationError("This schema name is taken.")
        return value

    def validate_domain(self, value: str) -> str:
        value = value.strip().lower()
        if not HOSTNAME.fullmatch(value):
            raise serializers.ValidationError("Not a valid host name (no scheme, port or path).")
        if not validate_host(value, settings.ALLOWED_HOSTS):
            raise serializers.ValidationError("This deployment does not serve it (ALLOWED_HOSTS).")
        if Domain.objects.filter(domain=value).exists():
            raise serializers.ValidationError("This domain is taken.")
        return value


class TenantUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    is_active = serializers.BooleanField(required=False)
    rate_limit_per_second = serializers.FloatField(required=False, min_value=0.1, max_value=1000)
    rate_limit_burst = serializers.IntegerField(required=False, min_value=1, max_value=10000)
    attachment_quota_bytes = quota_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Nothing to change.")
        return attrs
