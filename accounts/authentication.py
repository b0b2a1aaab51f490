"""REST authentication: simplejwt's bearer tokens, valid only on the tenant that issued them."""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.tokens import check_tenant_claim
from tenants.context import current_schema


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication plus the tenant claim check (401 on another tenant's host)."""

    def get_validated_token(self, raw_token: bytes) -> Any:
        token = super().get_validated_token(raw_token)
        try:
            check_tenant_claim(token, current_schema())
        except TokenError as exc:
            raise InvalidToken({"detail": str(exc), "code": "token_not_valid"}) from exc
        return token
