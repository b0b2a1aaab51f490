"""The WebSocket middleware stack, outermost first: origin, tenant, token."""

from __future__ import annotations

from middleware.closing import DatabaseUnavailableClose
from middleware.jwt import JWTQueryStringMiddleware
from middleware.origin import origin_check
from middleware.tenant import TenantFromHostMiddleware
from middleware.types import ASGIApp


def websocket_stack(app: ASGIApp) -> ASGIApp:
    """PostgreSQL away anywhere below (accept + 1013), origin (403), then tenant from Host
    (403), then JWT (accept + 4401), then `app`."""
    return DatabaseUnavailableClose(
        origin_check(TenantFromHostMiddleware(JWTQueryStringMiddleware(app)))
    )
