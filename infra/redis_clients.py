"""The one place that knows how to reach Redis, and the clients for budgets and caches.

Redis is reached either by URL (`REDIS_URL`) or through Redis Sentinel (`REDIS_SENTINELS` and
`REDIS_SENTINEL_MASTER`): `RedisTarget` holds which, and every Redis client of the server is
built from it here: the channel layer's host (`channel_layer_host`), presence's pool, the
budgets and host-cache clients below, Django's cache (`DjangoCachePool`) and the `/readyz`
probe. Through Sentinel a connection asks the sentinels for the current master when it
connects, so after a failover the next (re)connection reaches the promoted master.

A synchronous client for code that runs on request threads (DRF throttles, the HTTP tenant
middleware) and one asynchronous client per event loop (redis.asyncio clients belong to
the loop that made them). Short timeouts: callers treat Redis trouble as "no answer" and
fall back (fail open or to the database) instead of hanging a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis.driver_info import DriverInfo

REDIS_TIMEOUT = 2.0
ASYNC_MAX_CONNECTIONS = 100  # per event loop, for budgets and caches


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a URL, or a master name and the sentinels that know its address."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    password: str | None = None  # the master's (and replicas') password, Sentinel mode
    sentinel_password: str | None = None  # the sentinels' own password
    tls: bool = False  # TLS to the sentinels and the master, Sentinel mode

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def _master_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"db": self.db}
        if self.password:
            kwargs["password"] = self.password
        if self.tls:
            kwargs["ssl"] = True
        return kwargs

    def _sentinel_kwargs(self, **options: Any) -> dict[str, Any]:
        # Only the socket options apply to the sentinels (timeouts, keepalive), as redis-py
        # does by default; the master's db and password are not the sentinels'.
        kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
        kwargs.setdefault("socket_timeout", REDIS_TIMEOUT)
        kwargs.setdefault("socket_connect_timeout", REDIS_TIMEOUT)
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.tls:
            kwargs["ssl"] = True
        return kwargs


def parse_redis_target(
    url: str,
    sentinels: str = "",
    master: str = "",
    *,
    db: str = "",
    password: str = "",
    sentinel_password: str = "",
    tls: bool = False,
) -> RedisTarget:
    """The settings' REDIS_* values, checked: both of REDIS_SENTINELS and
    REDIS_SENTINEL_MASTER or neither, each sentinel `host:port`."""
    sentinels, master = sentinels.strip(), master.strip()
    if bool(sentinels) != bool(master):
        raise ImproperlyConfigured(
            "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both (Sentinel) "
            "or neither (REDIS_URL)"
        )
    if not sentinels:
        if db or password or sentinel_password or tls:
            raise ImproperlyConfigured(
                "REDIS_SENTINEL_DB, REDIS_SENTINEL_MASTER_PASSWORD, REDIS_SENTINEL_PASSWORD and "
                "REDIS_SENTINEL_TLS only apply with REDIS_SENTINELS (put them in REDIS_URL)"
            )
        return RedisTarget(url=url)
    addresses = []
    for entry in sentinels.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(
                f"REDIS_SENTINELS is a comma-separated list of host:port, not {entry.strip()!r}"
            )
        addresses.append((host.strip("[]"), int(port)))
    if db and not db.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINEL_DB is a database number, not {db!r}")
    return RedisTarget(
        url=url,
        sentinels=tuple(addresses),
        master=master,
        db=int(db or 0),
        password=password or None,
        sentinel_password=sentinel_password or None,
        tls=tls,
    )


def redis_target() -> RedisTarget:
    target: RedisTarget = settings.REDIS_TARGET
    return target


def channel_layer_host(target: RedisTarget) -> str | dict[str, Any]:
    """The channel layer's `hosts` entry: the URL, or the sentinel form channels-redis
    understands (channels_redis.utils.create_pool builds a SentinelConnectionPool from it)."""
    if not target.uses_sentinel:
        return target.url
    return {
        "master_name": target.master,
        "sentinels": list(target.sentinels),
        "sentinel_kwargs": target._sentinel_kwargs(),
        **target._master_kwargs(),
    }


# redis-py reads its own version from the package metadata (importlib.metadata, parsing
# the METADATA file: about 1 ms) for EVERY new connection unless it is given; a burst of
# handshakes that grows a pool by 100 connections paid 0.1 s of CPU for it (cProfile).
_LIB_VERSION = redis.__version__


def _with_lib_version(options: dict[str, Any]) -> dict[str, Any]:
    return {"driver_info": DriverInfo(lib_version=_LIB_VERSION), **options}


def sync_pool(target: RedisTarget | None = None, **options: Any) -> redis.ConnectionPool:
    """A connection pool to the master (options: socket timeouts, max_connections...)."""
    options = _with_lib_version(options)
    target = target or redis_target()
    if not target.uses_sentinel:
        return redis.ConnectionPool.from_url(target.url, **options)
    sentinel = redis.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target._sentinel_kwargs(**options)
    )
    return redis.sentinel.SentinelConnectionPool(
        target.master, sentinel, **{**options, **target._master_kwargs()}
    )


class _BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """Sentinel's master pool that waits for a free connection instead of failing."""


def async_pool(
    target: RedisTarget | None = None, *, blocking: bool = False, **options: Any
) -> redis.asyncio.ConnectionPool:
    """A redis.asyncio pool to the master; `blocking`: callers wait for a connection when
    all `max_connections` are in use (BlockingConnectionPool) instead of failing."""
    options = _with_lib_version(options)
    target = target or redis_target()
    if not target.uses_sentinel:
        cls = redis.asyncio.BlockingConnectionPool if blocking else redis.asyncio.ConnectionPool
        return cls.from_url(target.url, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(
        target.sentinels, sentinel_kwargs=target._sentinel_kwargs(**options)
    )
    pool_class = (
        _BlockingSentinelPool if blocking else redis.asyncio.sentinel.SentinelConnectionPool
    )
    return pool_class(target.master, sentinel, **{**options, **target._master_kwargs()})


def fresh_async_client(**options: Any) -> redis.asyncio.Redis:
    """A client with a pool of its own (its `aclose()` closes the pool too): for probes that must
    not share, or wait behind, the pools of the code they check."""
    return redis.asyncio.Redis.from_pool(async_pool(**options))


class DjangoCachePool:
    """`pool_class` for Django's RedisCache (settings CACHES): Django hands it LOCATION,
    which is REDIS_URL; the pool is built from the settings' target, Sentinel included."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> redis.ConnectionPool:
        return sync_pool(**options)


_sync: redis.Redis | None = None
# Keyed by loop id, with the loop kept so that the id cannot be reused by a later loop.
_by_loop: dict[int, tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis]] = {}


def redis_key(*parts: str) -> str:
    """A key under this deployment's prefix (tests give each run its own)."""
    return ":".join((settings.CHANNEL_PREFIX, *parts))


def sync_redis() -> redis.Redis:
    global _sync
    if _sync is None:
        _sync = redis.Redis(
            connection_pool=sync_pool(
                socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
        )
    return _sync


def async_redis() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    entry = _by_loop.get(id(loop))
    if entry is None or entry[0] is not loop:
        # A burst (hundreds of sockets closing at once, each releasing its slot) waits up to
        # REDIS_TIMEOUT for one of the pool's connections; redis-py's plain pool raised
        # MaxConnectionsError at its 100th, and the slot of that socket was never released.
        client = redis.asyncio.Redis(
            connection_pool=async_pool(
                blocking=True,
                max_connections=ASYNC_MAX_CONNECTIONS,
                timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
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
