"""Redis clients for budgets and caches (rate limits, socket counts, the tenant-host cache).

A synchronous client for code that runs on request threads (DRF throttles, the HTTP tenant
middleware) and one asynchronous client per event loop (redis.asyncio clients belong to
the loop that made them). Short timeouts: callers treat Redis trouble as "no answer" and
fall back (fail open or to the database) instead of hanging a request.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio
from django.conf import settings

REDIS_TIMEOUT = 2.0

_sync: redis.Redis | None = None
# Keyed by loop id, with the loop kept so that the id cannot be reused by a later loop.
_by_loop: dict[int, tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis]] = {}


def redis_key(*parts: str) -> str:
    """A key under this deployment's prefix (tests give each run its own)."""
    return ":".join((settings.CHANNEL_PREFIX, *parts))


def sync_redis() -> redis.Redis:
    global _sync
    if _sync is None:
        _sync = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
    return _sync


def async_redis() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    entry = _by_loop.get(id(loop))
    if entry is None or entry[0] is not loop:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        entry = _by_loop[id(loop)] = (loop, client)
    return entry[1]


_last_warning: dict[str, float] = {}
WARNING_INTERVAL = 10.0


def warn_redis_trouble(logger: logging.Logger, what: str) -> None:
    """Log Redis trouble of one kind at most every WARNING_INTERVAL seconds: when Redis is
    away every request would log it, and the log would drown what matters."""
    now = time.monotonic()
    if now - _last_warning.get(what, -WARNING_INTERVAL) >= WARNING_INTERVAL:
        _last_warning[what] = now
        logger.warning("%s", what, exc_info=True)
