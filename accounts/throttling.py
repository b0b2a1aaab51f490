"""Login rate limits, counted in Redis so that all pods share them: one budget per tenant and
username (as authentication will see the name), one per client IP beside it."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from django.core.cache import caches
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from chat.ratelimit import SharedTokenBucket
from tenants.context import current_schema


class _SharedRateThrottle(SimpleRateThrottle):
    """DRF's rate syntax (`10/min`) and cache keys, counted by ONE atomic Redis script (the
    shared token bucket of chat/ratelimit.py: `10/min` is a burst of 10, then one more every
    6 s). DRF's own SimpleRateThrottle reads the history, decides and writes it back in three
    steps: concurrent attempts, on one pod or several, all read the same history and all got
    in (40 parallel guesses on 4 processes against a 3/min budget: more than 3 checked the
    password in one of two runs; tests/accounts/test_login_throttle.py)."""

    cache = caches["default"]  # unused by the counting; DRF's base class expects one

    def allow_request(self, request: Request, view: Any) -> bool:
        self.retry_after = 0.0
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        count, seconds = self.parse_rate(self.rate)
        assert count is not None and seconds is not None
        self.retry_after = SharedTokenBucket(key, count / seconds, count).take()
        return self.retry_after <= 0

    def wait(self) -> float | None:
        # DRF puts this, rounded up to whole seconds, into `Retry-After`.
        return float(math.ceil(self.retry_after)) if self.retry_after > 0 else None


class LoginRateThrottle(_SharedRateThrottle):
    """`LOGIN_THROTTLE_RATE` attempts per tenant + username; then 429 with Retry-After.

    The username is cleaned by the very field that the token serializer authenticates with
    (simplejwt's CharField: whitespace, Unicode spaces included, trimmed; numbers made text),
    so `" alice"`, `"alice\\t"` and `"\\u3000alice"` are one budget with `alice`. It is then
    case-folded: ModelBackend looks names up case-sensitively, so `Alice` and `alice` may be
    two accounts sharing one budget; that only ever makes the limit stricter, while keying
    each case apart would hand a guesser a fresh budget per spelling of a case-insensitive
    username. Input the field refuses (lists, objects, booleans, blank) is a 400 that checks
    no password; it counts against the IP budget only.
    """

    scope = "login"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        serializer = view.get_serializer_class()()
        field_name = serializer.username_field
        data = request.data
        raw = data.get(field_name) if hasattr(data, "get") else None
        if raw is None:
            return None
        try:
            username = serializer.fields[field_name].run_validation(raw)
        except ValidationError:
            return None
        digest = hashlib.sha256(str(username).casefold().encode()).hexdigest()
        return f"throttle:login:{current_schema()}:{digest}"


class LoginIPRateThrottle(_SharedRateThrottle):
    """`LOGIN_THROTTLE_IP_RATE` attempts per client IP, whatever the tenant or username: one
    address cannot spread its guesses over many names. The IP is DRF's `get_ident`, which
    takes `X-Forwarded-For` only as far as `NUM_PROXIES` trusts it."""

    scope = "login_ip"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return f"throttle:login_ip:{self.get_ident(request)}"
