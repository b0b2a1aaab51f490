"""Who may call what: tenant admins on tenant hosts, platform admins on the platform host."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.context import current_schema


class IsTenantAdmin(BasePermission):
    message = "Only a tenant admin may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class IsPlatformAdmin(BasePermission):
    """A user of the public schema with staff rights; tenant tokens never get this far (401)."""

    message = "Only a platform admin may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.is_staff and current_schema() == "public"
        )
