"""Tenant from the Host header, for WebSocket connections."""

from __future__ import annotations

from infra.logging import tenant_var
from middleware.closing import refuse_handshake
from middleware.types import ASGIApp, Receive, Scope, Send
from tenants.host_cache import acached_tenant_for_host
from tenants.selectors import hostname_of


def host_header(scope: Scope) -> str:
    """The last `Host` header: some client libraries (websockets' `additional_headers`) send
    their own from the URL first and the caller's override after it."""
    host = ""
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1")
    return host


class TenantFromHostMiddleware:
    """Puts the active tenant of the `Host` into `scope["tenant"]`; refuses unknown hosts.

    django-tenants only has HTTP middleware; this is its WebSocket twin. An unknown or
    deactivated host is refused before accept (HTTP 403) and nothing is created; neither
    costs a database query.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hostname = hostname_of(host_header(scope))
        # From the process's host snapshot: a handshake costs no query (tenants/host_cache.py).
        tenant = await acached_tenant_for_host(hostname) if hostname else None
        if tenant is None or tenant.schema_name == "public":
            await refuse_handshake(scope, receive, send)
            return
        scope["tenant"] = tenant
        tenant_var.set(tenant.schema_name)  # this connection's task only (a context variable)
        await self.app(scope, receive, send)
