"""Budgets shared by every server process (PROTOCOL.md section 3, rate limit and close code
4429): per user, REST writes, rooms created, and open sockets; per tenant, users created by
its backend.

All live in Redis, so that a user cannot multiply a budget by spreading over pods. Redis
trouble fails OPEN with a warning: these budgets protect the service from one client, and
refusing every socket or write while Redis is away would turn a Redis outage into a full
outage; the per-connection buckets and the database still hold meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from chat.presence import process_heartbeat_ensure
from chat.protocol import ErrorCode
from chat.ratelimit import SharedTokenBucket, parse_rate, round_wait
from infra.redis_clients import async_redis, redis_key, warn_redis_trouble

logger = logging.getLogger(__name__)


def rest_write_bucket(tenant: Any, user_id: Any) -> SharedTokenBucket:
    """The user's REST write budget: the socket bucket's size (the tenant's override, or
    CHAT_RATE_PER_SECOND / CHAT_RATE_BURST)."""
    return SharedTokenBucket(
        f"rest:{tenant.schema_name}:{user_id}",
        tenant.rate_limit_per_second or settings.CHAT_RATE_PER_SECOND,
        tenant.rate_limit_burst or settings.CHAT_RATE_BURST,
    )


def search_bucket(schema_name: str, user_id: Any) -> SharedTokenBucket:
    """Searches the user may run in the tenant (SEARCH_RATE)."""
    rate, burst = parse_rate(settings.SEARCH_RATE)
    return SharedTokenBucket(f"search:{schema_name}:{user_id}", rate, burst)


def room_create_bucket(schema_name: str, user_id: Any) -> SharedTokenBucket:
    """Rooms the user may create in the tenant (ROOM_CREATE_RATE), by joining or by REST."""
    rate, burst = parse_rate(settings.ROOM_CREATE_RATE)
    return SharedTokenBucket(f"rooms:{schema_name}:{user_id}", rate, burst)


def user_create_bucket(schema_name: str) -> SharedTokenBucket:
    """Users the tenant's backend may create (USER_CREATE_RATE): one bucket per tenant."""
    rate, burst = parse_rate(settings.USER_CREATE_RATE)
    return SharedTokenBucket(f"users:{schema_name}", rate, burst)


def user_create_budget_spend(schema_name: str) -> None:
    """Before a user is created on first use of an external id (a server token, or a token
    the tenant's backend signed): one token of the tenant's budget. Raises ChatError
    RATE_LIMITED with `retry_after` when it is spent (REST 429 with Retry-After; a WebSocket
    handshake closes 4429). Tokens for existing users never come here."""
    from chat.services import ChatError  # chat.services imports this module

    wait = user_create_bucket(schema_name).take()
    if wait:
        raise ChatError(
            ErrorCode.RATE_LIMITED,
            "Too many new users for this tenant; try again later.",
            retry_after=round_wait(wait),
        )


# The open sockets of one user in one tenant: a hash of process id -> sockets. A process's
# entry counts only while its liveness key (chat/presence.py's heartbeat) exists, so the
# sockets of a process that died (SIGKILL, OOM) stop counting once its key expires; dead
# entries are swept by the next check. Check and increment are one script: two processes
# opening the user's 20th socket at the same moment cannot both get it.
# KEYS[1] user hash; ARGV: process id, liveness-key prefix, limit. Returns 1 (taken) or 0.
_ACQUIRE = """
local entries = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #entries, 2 do
  local proc, count = entries[i], tonumber(entries[i + 1])
  if count <= 0 or (proc ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. proc) == 0) then
    redis.call('HDEL', KEYS[1], proc)
  else
    total = total + count
  end
end
if total >= tonumber(ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


def sockets_key(schema_name: str, user_id: Any) -> str:
    return redis_key("sockets", schema_name, str(user_id))


async def _script(source: str, key: str, *args: Any) -> Any:
    """Run a script by its SHA (EVALSHA; redis-py loads it on NOSCRIPT), so that its text is
    not sent, and hashed by Redis, at every handshake and close."""
    return await async_redis().register_script(source)(keys=[key], args=list(args))


class SocketSlot:
    """One of the user's WS_MAX_SOCKETS_PER_USER sockets in a tenant; `release()` at close."""

    __slots__ = ("held", "key", "process_id")

    def __init__(self, key: str, process_id: str, held: bool) -> None:
        self.key = key
        self.process_id = process_id
        self.held = held  # False when Redis could not count it (failed open)

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            await _script(_RELEASE, self.key, self.process_id)
        except Exception:  # the entry then dies with this process's liveness key at worst
            warn_redis_trouble(logger, "socket count release failed (Redis)")


async def socket_slot_acquire(schema_name: str, user_id: Any) -> SocketSlot | None:
    """A slot for one more socket of the user, or None when all are taken (close 4429)."""
    key = sockets_key(schema_name, user_id)
    try:
        process_id, liveness_prefix = await process_heartbeat_ensure()
        taken = await _script(
            _ACQUIRE, key, process_id, liveness_prefix, settings.WS_MAX_SOCKETS_PER_USER
        )
    except Exception:
        warn_redis_trouble(logger, "socket counts unavailable (Redis): allowing")
        return SocketSlot(key, "", held=False)
    return SocketSlot(key, process_id, held=True) if int(taken) else None
