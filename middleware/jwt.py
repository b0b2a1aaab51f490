"""JWT from the query string, for WebSocket connections (replaces AuthMiddlewareStack)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.exceptions import TokenError

from accounts.tokens import access_token_user, token_user_id, validate_access_token
from chat.protocol import CloseCode
from integrations.identity import is_tenant_signed
from middleware.closing import accept_then_close
from middleware.types import ASGIApp, Receive, Scope, Send
from tenants.context import in_schema


def query_param(scope: Scope, name: str) -> str | None:
    # Blank values are kept: `since=` is a malformed since (4400), not an absent one.
    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[0] if values else None


def _active_user(user_id: Any) -> Any:
    return (
        get_user_model()
        .objects.filter(pk=user_id, is_active=True)
        .only("id", "username", "is_staff", "is_active")
        .first()
    )


class JWTQueryStringMiddleware:
    """Validates `?token=` with simplejwt and loads the user from the tenant's schema.

    Runs after the tenant middleware. Any failure (no token, bad signature, `alg: none`,
    expired, refresh token, other tenant, unknown or inactive user) accepts and closes with
    4401 before the consumer runs, so the token is checked before anything else.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = scope["tenant"]
        raw = query_param(scope, "token")
        user, exp = None, 0
        if raw:
            try:
                if is_tenant_signed(raw):  # signed by the tenant's backend: its key, in its schema
                    user, exp = await in_schema(
                        tenant.schema_name, access_token_user, raw, tenant.schema_name
                    )
                else:  # our own: the signature is checked here, before any query
                    token = validate_access_token(raw, tenant.schema_name)
                    user = await in_schema(tenant.schema_name, _active_user, token_user_id(token))
                    exp = int(token["exp"])
            except (TokenError, ValueError, TypeError):
                user = None
        if user is None:
            await accept_then_close(receive, send, CloseCode.UNAUTHORIZED)
            return
        scope["user"] = user
        scope["token_exp"] = exp
        await self.app(scope, receive, send)
