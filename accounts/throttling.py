"""Login rate limit per tenant and username, counted in Redis so that all pods share it."""

from __future__ import annotations

from typing import Any

from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from tenants.context import current_schema


class LoginRateThrottle(SimpleRateThrottle):
    """`LOGIN_THROTTLE_RATE` attempts per tenant + username (case-folded); then 429 with
    Retry-After. Keyed by username, not IP: many users share a NAT, one attacker many IPs."""

    scope = "login"
    cache = caches["default"]

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username:
            return None  # the serializer answers 400 for a missing username
        return f"throttle:login:{current_schema()}:{username.casefold()[:150]}"
