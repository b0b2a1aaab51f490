"""The per-user budget of REST writes, shared by every server process (PROTOCOL.md section 3)."""

from __future__ import annotations

import math
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from chat.budgets import rest_write_bucket

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UserWriteThrottle(BaseThrottle):
    """POST/PATCH/PUT/DELETE of an authenticated user on a tenant host take one token of the
    user's shared bucket; an empty bucket answers 429 with `Retry-After`.

    Reads are free, and so are anonymous requests (they are answered 401 before throttles
    run; login has its own throttle). The platform host (public schema) is not limited here.
    """

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        tenant = getattr(request._request, "tenant", None)
        user = request.user
        if (
            request.method in SAFE_METHODS
            or tenant is None
            or tenant.schema_name == "public"
            or user is None
            or not getattr(user, "is_authenticated", False)
        ):
            return True
        wait = rest_write_bucket(tenant, user.pk).take()
        if wait <= 0:
            return True
        self.retry_after = wait
        return False

    def wait(self) -> float | None:
        # DRF puts this, rounded up to whole seconds, into `Retry-After`.
        return float(math.ceil(self.retry_after)) if self.retry_after else None
