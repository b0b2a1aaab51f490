"""Who is in a room, across all server processes, kept in Redis.

For each room a hash counts open sockets per `username|process`. A process proves it is
alive with a key that it refreshes every PRESENCE_HEARTBEAT seconds and that expires after
PRESENCE_TTL: the sockets of a process that died (SIGKILL, OOM) stop counting once its key
expires, and are swept by the next join or leave in that room. Join and leave are Lua
scripts, so "first socket of this user" / "last socket of this user" is decided atomically
even when two processes connect the same user at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)
PROCESS_ID = uuid.uuid4().hex[:16]
PRESENCE_TTL = 60
PRESENCE_HEARTBEAT = 20
PRESENCE_REDIS_CONNECTIONS = 32

# KEYS[1] room hash; ARGV: username, process id, process-key prefix.
# Returns {sockets of this user after the change, username, username, ...} of live users.
_SWEEP = """
local function live_users(key, prefix)
  local entries = redis.call('HGETALL', key)
  local users, seen = {}, {}
  for i = 1, #entries, 2 do
    local field, count = entries[i], tonumber(entries[i + 1])
    local sep = string.find(field, '|', 1, true)
    local user, proc = string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
    if count <= 0 or redis.call('EXISTS', prefix .. proc) == 0 then
      redis.call('HDEL', key, field)
    else
      if not seen[user] then seen[user] = 0; table.insert(users, user) end
      seen[user] = seen[user] + count
    end
  end
  return users, seen
end
"""
_JOIN = (
    _SWEEP
    + """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 1)
local users, seen = live_users(KEYS[1], ARGV[3])
local result = {seen[ARGV[1]] or 0}
for _, user in ipairs(users) do table.insert(result, user) end
return result
"""
)
_LEAVE = (
    _SWEEP
    + """
local field = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HINCRBY', KEYS[1], field, -1) <= 0 then redis.call('HDEL', KEYS[1], field) end
local users, seen = live_users(KEYS[1], ARGV[3])
return {seen[ARGV[1]] or 0}
"""
)


class Presence:
    """One per event loop (redis.asyncio clients belong to the loop that made them)."""

    def __init__(self) -> None:
        # A blocking pool: when many sockets join or leave at once (a pod draining, a load
        # balancer reshuffling), callers wait for a connection instead of failing with
        # "Too many connections" and leaving stale presence behind.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=PRESENCE_REDIS_CONNECTIONS, timeout=10
        )
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.prefix = f"{settings.CHANNEL_PREFIX}:presence"
        self.process_key_prefix = f"{self.prefix}:proc:"
        self._join = self.redis.register_script(_JOIN)
        self._leave = self.redis.register_script(_LEAVE)
        self._heartbeat: asyncio.Task[None] | None = None

    def room_key(self, group: str) -> str:
        return f"{self.prefix}:room:{group}"

    async def _beat(self) -> None:
        key = self.process_key_prefix + PROCESS_ID
        while True:
            try:
                await self.redis.set(key, "1", ex=PRESENCE_TTL)
            except Exception:  # Redis away: try again next beat; presence is best effort
                logger.warning("presence heartbeat failed", exc_info=True)
            await asyncio.sleep(PRESENCE_HEARTBEAT)

    async def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None:
            await self.redis.set(self.process_key_prefix + PROCESS_ID, "1", ex=PRESENCE_TTL)
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def join(self, group: str, username: str) -> tuple[bool, list[str]]:
        """Count a socket in; returns (first socket of this user, users present)."""
        await self._ensure_heartbeat()
        result: list[Any] = await self._join(
            keys=[self.room_key(group)], args=[username, PROCESS_ID, self.process_key_prefix]
        )
        users = sorted(u.decode() if isinstance(u, bytes) else str(u) for u in result[1:])
        return int(result[0]) == 1, users

    async def leave(self, group: str, username: str) -> bool:
        """Count a socket out; returns whether it was the user's last one in the room."""
        result: list[Any] = await self._leave(
            keys=[self.room_key(group)], args=[username, PROCESS_ID, self.process_key_prefix]
        )
        return int(result[0]) == 0


_by_loop: dict[int, Presence] = {}


def presence_registry() -> Presence:
    loop = asyncio.get_running_loop()
    registry = _by_loop.get(id(loop))
    if registry is None or registry.redis.connection_pool is None:
        registry = _by_loop[id(loop)] = Presence()
    return registry


async def process_heartbeat_ensure() -> tuple[str, str]:
    """Make sure this process's liveness key exists and is refreshed; returns (process id,
    prefix of the liveness keys). Counts kept per process elsewhere (the socket cap of
    chat/budgets.py) stop counting once the process's key expires, as presence does."""
    registry = presence_registry()
    await registry._ensure_heartbeat()
    return PROCESS_ID, registry.process_key_prefix
