"""The tenant of a host, answered from memory: each process keeps a snapshot of the active
tenants' domains, checked on every lookup against a generation kept in Redis.

Why a snapshot of the whole table and not a per-host cache: a handshake or request with an
unknown (random) `Host` must cost no database query, or an attacker can send them without
limit; with a snapshot an unknown host is a dictionary miss, and memory is bounded by the
domains the platform itself created, not by the hosts clients send.

Invalidation: every write on tenants or domains (tenants/services.py) sets the generation
to a new random value, and a lookup that sees another generation than its snapshot's
reloads the snapshot (one query), so a deactivated tenant's hosts answer 404 on every
process at once. The generation is read BEFORE the reload, so a write that commits during a
reload is seen by the next lookup. A random value rather than a counter: a Redis that lost
its data cannot bring back an old generation. When Redis cannot answer, lookups go to the
database (the behaviour without a cache), with a warning.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import uuid
from collections.abc import Mapping

from infra.redis_clients import async_redis, redis_key, sync_redis, warn_redis_trouble
from tenants.context import in_public
from tenants.models import Domain, Tenant
from tenants.selectors import TENANT_FIELDS, active_tenant_for_host

logger = logging.getLogger(__name__)

_snapshot: tuple[str, Mapping[str, Tenant]] | None = None
_reload_lock = threading.Lock()
_async_locks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def generation_key() -> str:
    return redis_key("tenants", "generation")


def tenants_changed() -> None:
    """Tell every process that a tenant or domain changed: their next lookup reloads.

    Call after the write is committed. If Redis cannot be told, the snapshots stay stale, so
    the failure is raised to the caller rather than hidden.
    """
    sync_redis().set(generation_key(), uuid.uuid4().hex)


def _load_hosts() -> dict[str, Tenant]:
    """Every domain of an active tenant, with its tenant (one query). Public schema."""
    rows = (
        Domain.objects.filter(tenant__is_active=True)
        .select_related("tenant")
        .only("domain", *(f"tenant__{f}" for f in TENANT_FIELDS))
    )
    return {row.domain: row.tenant for row in rows}


def _answer(hosts: Mapping[str, Tenant], hostname: str) -> Tenant | None:
    tenant = hosts.get(hostname)
    # A copy: django-tenants' middleware sets attributes (domain_url) on the tenant it gets.
    return copy.copy(tenant) if tenant is not None else None


def _generation_sync() -> str:
    client = sync_redis()
    value = client.get(generation_key())
    if value is None:  # first start, or a Redis that lost its data
        client.set(generation_key(), uuid.uuid4().hex, nx=True)
        value = client.get(generation_key())
    return value.decode() if isinstance(value, bytes) else str(value)


async def _generation_async() -> str:
    client = async_redis()
    value = await client.get(generation_key())
    if value is None:
        await client.set(generation_key(), uuid.uuid4().hex, nx=True)
        value = await client.get(generation_key())
    return value.decode() if isinstance(value, bytes) else str(value)


def cached_tenant_for_host(hostname: str) -> Tenant | None:
    """`active_tenant_for_host` from the snapshot; for request threads (HTTP). Must run in
    the public schema (a reload queries it)."""
    global _snapshot
    try:
        generation = _generation_sync()
    except Exception:
        warn_redis_trouble(logger, "tenant host cache: Redis unavailable, asking the database")
        return active_tenant_for_host(hostname)
    snapshot = _snapshot
    if snapshot is None or snapshot[0] != generation:
        with _reload_lock:  # concurrent misses after a change: one reload, not one each
            snapshot = _snapshot
            if snapshot is None or snapshot[0] != generation:
                snapshot = _snapshot = (generation, _load_hosts())
    return _answer(snapshot[1], hostname)


def _async_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    entry = _async_locks.get(id(loop))
    if entry is None or entry[0] is not loop:
        entry = _async_locks[id(loop)] = (loop, asyncio.Lock())
    return entry[1]


async def acached_tenant_for_host(hostname: str) -> Tenant | None:
    """`cached_tenant_for_host` for the event loop (WebSocket handshakes)."""
    global _snapshot
    try:
        generation = await _generation_async()
    except Exception:
        warn_redis_trouble(logger, "tenant host cache: Redis unavailable, asking the database")
        return await in_public(active_tenant_for_host, hostname)
    snapshot = _snapshot
    if snapshot is None or snapshot[0] != generation:
        async with _async_lock():
            snapshot = _snapshot
            if snapshot is None or snapshot[0] != generation:
                snapshot = _snapshot = (generation, await in_public(_load_hosts))
    return _answer(snapshot[1], hostname)
