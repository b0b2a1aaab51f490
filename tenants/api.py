"""Platform API on the public host: `/api/tenants/` for platform admins."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import IsPlatformAdmin
from tenants import services
from tenants.models import Tenant
from tenants.serializers import TenantCreateSerializer, TenantSerializer, TenantUpdateSerializer


@extend_schema_view(
    list=extend_schema(summary="List tenants"),
    retrieve=extend_schema(summary="Show a tenant"),
)
class TenantViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsPlatformAdmin]
    serializer_class = TenantSerializer
    lookup_field = "schema_name"
    lookup_value_regex = "[a-z][a-z0-9_]{1,49}"  # anything else is a 404 before any query
    queryset = (
        Tenant.objects.exclude(schema_name="public")
        .prefetch_related("domains")
        .order_by("created_at")
    )

    @extend_schema(
        summary="Create a tenant: schema, migrations, domain and first admin, all or nothing",
        request=TenantCreateSerializer,
        responses={201: TenantSerializer},
    )
    def create(self, request: Request) -> Response:
        payload = TenantCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            tenant = services.tenant_provision(
                schema_name=data["schema_name"],
                name=data["name"],
                domain=data["domain"],
                admin_username=data["admin"]["username"],
                admin_password=data["admin"]["password"],
                attachment_quota_bytes=data.get("attachment_quota_bytes"),
            )
        except IntegrityError as exc:  # lost a race with a concurrent create
            raise ValidationError(
                {"schema_name": ["This schema name or domain is taken."]}
            ) from exc
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Rename, re-limit, set the storage quota of, or (re)activate a tenant",
        request=TenantUpdateSerializer,
        responses=TenantSerializer,
    )
    def partial_update(self, request: Request, schema_name: str) -> Response:
        tenant = self.get_object()
        payload = TenantUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tenant = services.tenant_update(tenant=tenant, **payload.validated_data)
        return Response(TenantSerializer(tenant).data)

    @extend_schema(
        summary="Deactivate a tenant (data kept; hosts answer 404, sockets close 4401)",
        responses={204: None},
    )
    def destroy(self, request: Request, schema_name: str) -> Response:
        services.tenant_deactivate(tenant=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    def get_serializer_class(self) -> Any:
        return TenantSerializer
