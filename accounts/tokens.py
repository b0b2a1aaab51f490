"""The `tenant` claim: every token names the schema it was issued in, and every path checks it.

simplejwt tokens carry no tenant by default, so a token of tenant A would pass on tenant B's
host (same SECRET_KEY, same user ids). REST authentication, token refresh and the WebSocket
middleware all go through `validate_access_token` / `check_tenant_claim`.
"""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, Token

TENANT_CLAIM = "tenant"


class WrongTenantError(TokenError):
    pass


def check_tenant_claim(token: Token, schema_name: str) -> None:
    if token.payload.get(TENANT_CLAIM) != schema_name:
        raise WrongTenantError("Token was not issued for this tenant.")


def validate_access_token(raw: str, schema_name: str) -> AccessToken:
    """Signature, algorithm, `exp`, token type (access) and tenant claim; raises TokenError."""
    token = AccessToken(raw)  # type: ignore[arg-type]  # simplejwt: verifies signature with the configured algorithm
    check_tenant_claim(token, schema_name)
    return token


def token_user_id(token: Token) -> Any:
    from rest_framework_simplejwt.settings import api_settings

    try:
        return token[api_settings.USER_ID_CLAIM]
    except KeyError as exc:
        # TokenError (not DRF's InvalidToken): every transport turns it into its own 401/4401.
        raise TokenError("Token contained no recognizable user identification") from exc
