"""JWT from the query string, for WebSocket connections (replaces AuthMiddlewareStack)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from rest_framework_simplejwt.exceptions import TokenError

from accounts.tokens import access_token_user, token_user_id, validate_access_token
from chat.protocol import CloseCode, ErrorCode
from chat.services import ChatError
from integrations.identity import is_tenant_signed
from middleware.closing import accept_then_close
from middleware.types import ASGIApp, Receive, Scope, Send
from tenants.context import in_schema


def query_param(scope: Scope, name: str) -> str | None:
    # Blank values are kept: `since=` is a malformed since (4400), not an absent one.
    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[0] if values else None


class JWTQueryStringMiddleware:
    """Validates `?token=` with simplejwt and puts its user id and expiry into the scope.

    Runs after the tenant middleware. Any failure (no token, bad signature, `alg: none`,
    expired, refresh token, other tenant) accepts and closes with 4401 before the consumer
    runs, so the token is checked before anything else. The user row itself is read by the
    consumer, in the one query that also checks the tenant and the room once the socket's
    groups are joined (`chat.services.socket_admit`): an unknown or inactive user is closed
    with 4401 there. A tenant-signed token whose first use would create a user past the
    tenant's USER_CREATE_RATE closes with 4429.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The token and its claims are not kept in this frame, which lives as long as the
        # socket: only the user id, the expiry and the signing key go on, in the scope.
        raw = query_param(scope, "token")
        try:
            if not raw:
                raise TokenError("No token.")
            found = await socket_token(raw, scope["tenant"].schema_name)
        except TokenError:
            await accept_then_close(receive, send, CloseCode.UNAUTHORIZED)
            return
        except ChatError as exc:  # a first use past the tenant's USER_CREATE_RATE
            if exc.code != ErrorCode.RATE_LIMITED:
                raise
            await accept_then_close(receive, send, CloseCode.TOO_MANY_SOCKETS)
            return
        scope["user_id"], scope["token_exp"] = found.user_id, found.exp
        scope["signing_key_id"] = found.signing_key_id
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class SocketToken:
    """What a socket keeps of its access token: who, until when, and the tenant signing key
    that verified it (None for our own tokens; revoking the key closes the socket)."""

    user_id: int
    exp: int
    signing_key_id: int | None


async def socket_token(raw: str, schema_name: str) -> SocketToken:
    """An access token of either kind, for a handshake or an `auth` frame; raises TokenError."""
    try:
        if is_tenant_signed(raw):  # signed by the tenant's backend: its key, in its schema
            found = await in_schema(schema_name, access_token_user, raw, schema_name)
            return SocketToken(int(found.user.pk), found.exp, found.signing_key_id)
        # Our own: the signature is checked here, before any query.
        token = validate_access_token(raw, schema_name)
        return SocketToken(int(token_user_id(token)), int(token["exp"]), None)
    except (ValueError, TypeError) as exc:
        raise TokenError("Malformed token.") from exc
