"""REST authentication: simplejwt's bearer tokens, valid only on the tenant that issued them."""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.tokens import check_tenant_claim
from tenants.context import current_schema


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication plus the tenant claim check (401 on another tenant's host);
    a token the tenant's backend signed with its own key (`kid`) goes to
    `integrations.identity.tenant_token_user` instead."""

    def authenticate(self, request: Any) -> Any:
        from integrations.identity import is_tenant_signed, tenant_token_user

        header = self.get_header(request)
        raw = self.get_raw_token(header) if header is not None else None
        if raw is not None and is_tenant_signed(raw.decode("latin-1")):
            try:
                found = tenant_token_user(raw.decode("latin-1"))
            except TokenError as exc:
                raise InvalidToken({"detail": str(exc), "code": "token_not_valid"}) from exc
            return found.user, None
        return super().authenticate(request)

    def get_validated_token(self, raw_token: bytes) -> Any:
        token = super().get_validated_token(raw_token)
        try:
            check_tenant_claim(token, current_schema())
        except TokenError as exc:
            raise InvalidToken({"detail": str(exc), "code": "token_not_valid"}) from exc
        return token
