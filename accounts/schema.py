"""OpenAPI description of our authentication (drf-spectacular extension)."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class TenantJWTScheme(SimpleJWTScheme):
    """Bearer JWT issued by `/api/auth/token/` of the same host (the token's tenant claim)."""

    target_class = "accounts.authentication.TenantJWTAuthentication"
    name = "tenantJWT"
