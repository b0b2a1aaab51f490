"""The `tenant` claim: every token names the schema it was issued in, and every path checks it.

simplejwt tokens carry no tenant by default, so a token of tenant A would pass on tenant B's
host (same SECRET_KEY, same user ids). REST authentication, token refresh and the WebSocket
middleware all go through `validate_access_token` / `check_tenant_claim`.

The other kind of access token is one the tenant's backend signed itself (a `kid` in its
header, PROTOCOL section 5): `access_token_user` is the one entry point for both kinds on the
paths that load the user, REST authentication and the WebSocket handshake.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, Token

TENANT_CLAIM = "tenant"


class WrongTenantError(TokenError):
    pass


class TokenUser(NamedTuple):
    """Who an access token names, until when, and the tenant signing key that verified it
    (None for our own tokens): a socket remembers the key, so that revoking it closes the
    socket (chat/authz.py)."""

    user: Any
    exp: int
    signing_key_id: int | None = None


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


def access_token_user(raw: str, schema_name: str) -> TokenUser:
    """(active user, exp, signing key id) of an access token of either kind; runs inside
    `schema_name`.

    Our own tokens: `validate_access_token`, then the user by id. Tokens signed by the
    tenant's backend (header `kid`): verified with that tenant's signing key, the user found
    or created by external id (integrations.identity). Raises TokenError."""
    from django.contrib.auth import get_user_model

    from integrations.identity import is_tenant_signed, tenant_token_user

    if is_tenant_signed(raw):
        return tenant_token_user(raw)
    token = validate_access_token(raw, schema_name)
    user = get_user_model().objects.filter(pk=token_user_id(token), is_active=True).first()
    if user is None:
        raise TokenError("User not found or inactive.")
    return TokenUser(user, int(token["exp"]))
