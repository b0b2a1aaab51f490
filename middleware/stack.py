"""The WebSocket middleware stack, outermost first: origin, tenant, token."""

from __future__ import annotations

from middleware.jwt import JWTQueryStringMiddleware
from middleware.origin import origin_check
from middleware.tenant import TenantFromHostMiddleware
from middleware.types import ASGIApp


def websocket_stack(app: ASGIApp) -> ASGIApp:
    """Origin (403), then tenant from Host (403), then JWT (accept + 4401), then `app`."""
    return origin_check(TenantFromHostMiddleware(JWTQueryStringMiddleware(app)))
