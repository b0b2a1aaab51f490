"""Origin check for WebSocket handshakes."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings

from middleware.types import ASGIApp


class MissingOrAllowedOriginValidator(OriginValidator):
    """Channels' origin check, except that a handshake with no Origin header is allowed.

    Native mobile clients send no Origin, and Channels' `AllowedHostsOriginValidator` refuses
    them; a browser always sends one, so cross-site pages are still refused (HTTP 403).
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))


def origin_check(app: ASGIApp) -> ASGIApp:
    """Allowed origins are the deployment's ALLOWED_HOSTS (`.example.com` covers subdomains)."""
    return MissingOrAllowedOriginValidator(app, settings.ALLOWED_HOSTS)
