"""Who is in a room, across all server processes, kept in Redis.

For each room a hash counts open sockets per `username|process`. A process proves it is
alive with a key that it refreshes every PRESENCE_HEARTBEAT seconds and that expires after
PRESENCE_TTL: the sockets of a process that died (SIGKILL, OOM) stop counting once its key
expires. Each heartbeat also sweeps the rooms this process holds sockets in, so a dead
process's entries go (and the room hears `user.left` for each user who had no other socket)
even if nobody joins or leaves that room again; and it keeps an EXPIRE on those room hashes,
so a room that no live process holds any more disappears on its own. Join, leave and sweep
are Lua scripts, so "first socket of this user" / "last socket of this user" is decided
atomically even when two processes connect the same user, or sweep the same room, at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

import redis.asyncio
from django.conf import settings

from chat import events
from chat.protocol import ServerFrame
from infra.background import start_background
from infra.redis_clients import async_pool, redis_key

logger = logging.getLogger(__name__)
PROCESS_ID = uuid.uuid4().hex[:16]
PRESENCE_REDIS_CONNECTIONS = 32
_SWEEP_BATCH = 100  # room hashes swept per pipelined round trip by the heartbeat

# KEYS[1] room hash; ARGV: username, process id, process-key prefix, room TTL (seconds).
# `sweep` drops entries of dead processes (and empty counts); it returns the live users,
# their socket counts, and the users who lost their last entry to a dead process ("gone":
# they left without a leave, and the caller announces `user.left` for them).
_SWEEP = """
local function sweep(key, prefix)
  local entries = redis.call('HGETALL', key)
  local users, seen, dead, alive = {}, {}, {}, {}
  for i = 1, #entries, 2 do
    local field, count = entries[i], tonumber(entries[i + 1])
    local sep = string.find(field, '|', 1, true)
    local user, proc = string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
    -- One EXISTS per process, not per entry: a room's entries name a few processes.
    if count > 0 and alive[proc] == nil then
      alive[proc] = redis.call('EXISTS', prefix .. proc) == 1
    end
    if count <= 0 or not alive[proc] then
      redis.call('HDEL', key, field)
      if count > 0 then dead[user] = true end
    else
      if not seen[user] then seen[user] = 0; table.insert(users, user) end
      seen[user] = seen[user] + count
    end
  end
  local gone = {}
  for user, _ in pairs(dead) do
    if not seen[user] then table.insert(gone, user) end
  end
  return users, seen, gone
end
local function keep(key, ttl)
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
end
"""
_JOIN = (
    _SWEEP
    + """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 1)
local users, seen, gone = sweep(KEYS[1], ARGV[3])
keep(KEYS[1], ARGV[4])
return {seen[ARGV[1]] or 0, users, gone}
"""
)
_LEAVE = (
    _SWEEP
    + """
local field = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HINCRBY', KEYS[1], field, -1) <= 0 then redis.call('HDEL', KEYS[1], field) end
local users, seen, gone = sweep(KEYS[1], ARGV[3])
keep(KEYS[1], ARGV[4])
return {seen[ARGV[1]] or 0, gone}
"""
)
# KEYS[1] room hash; ARGV: process-key prefix, room TTL. Returns the gone users.
_HEARTBEAT_SWEEP = (
    _SWEEP
    + """
local users, seen, gone = sweep(KEYS[1], ARGV[1])
keep(KEYS[1], ARGV[2])
return gone
"""
)


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values or []]


class Presence:
    """One per event loop (redis.asyncio clients belong to the loop that made them)."""

    def __init__(self) -> None:
        # A blocking pool: when many sockets join or leave at once (a pod draining, a load
        # balancer reshuffling), callers wait for a connection instead of failing with
        # "Too many connections" and leaving stale presence behind.
        pool = async_pool(blocking=True, max_connections=PRESENCE_REDIS_CONNECTIONS, timeout=10)
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.prefix = redis_key("presence")
        self.process_key_prefix = f"{self.prefix}:proc:"
        self.ttl = int(settings.PRESENCE_TTL)
        self._join = self.redis.register_script(_JOIN)
        self._leave = self.redis.register_script(_LEAVE)
        self._sweep = self.redis.register_script(_HEARTBEAT_SWEEP)
        self._heartbeat: asyncio.Task[None] | None = None
        self._heartbeat_starting = asyncio.Lock()
        # Groups this process holds sockets in (and how many), swept at every heartbeat.
        self.held: Counter[str] = Counter()

    def room_key(self, group: str) -> str:
        return f"{self.prefix}:room:{group}"

    async def _beat(self) -> None:
        key = self.process_key_prefix + PROCESS_ID
        while True:
            try:
                await self.redis.set(key, "1", ex=self.ttl)
                swept = await self.sweep_held()
                logger.debug("presence heartbeat: %d rooms swept", swept)
            except Exception:  # Redis away: try again next beat; presence is best effort
                logger.warning("presence heartbeat failed", exc_info=True)
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT)

    async def sweep_held(self) -> int:
        """Sweep the room hashes this process holds sockets in and keep their EXPIRE;
        announce `user.left` for the users a dead process took away. Returns rooms swept."""
        groups = [group for group, count in self.held.items() if count > 0]
        for start in range(0, len(groups), _SWEEP_BATCH):
            batch = groups[start : start + _SWEEP_BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for group in batch:
                await self._sweep(
                    keys=[self.room_key(group)],
                    args=[self.process_key_prefix, self.ttl],
                    client=pipe,
                )
            results = await pipe.execute()
            for group, gone in zip(batch, results, strict=True):
                await self._announce_gone(group, _names(gone))
        return len(groups)

    async def _announce_gone(self, group: str, gone: list[str]) -> None:
        # Only the script run that removed a user's last entry reports that user, so exactly
        # one process announces each departure.
        for username in gone:
            await events.broadcast(group, events.user_event(ServerFrame.USER_LEFT, username))

    async def _ensure_heartbeat(self) -> None:
        """The liveness key exists before the first join counts (a sweep takes the entries of
        a process without one for a dead process's), and ONE loop keeps it. Handshakes that
        arrive while the first SET is in flight wait for it: each used to start a loop of its
        own (about 18 of them on a pod opening 2000 sockets, each sweeping every room)."""
        if self._heartbeat is not None:
            return
        async with self._heartbeat_starting:
            if self._heartbeat is None:  # a SET that failed leaves it None: the next tries
                await self.redis.set(self.process_key_prefix + PROCESS_ID, "1", ex=self.ttl)
                self._heartbeat = start_background(self._beat(), name="presence-heartbeat")

    async def join(self, group: str, username: str) -> tuple[bool, list[str]]:
        """Count a socket in; returns (first socket of this user, users present)."""
        await self._ensure_heartbeat()
        result: list[Any] = await self._join(
            keys=[self.room_key(group)],
            args=[username, PROCESS_ID, self.process_key_prefix, self.ttl],
        )
        self.held[group] += 1
        await self._announce_gone(group, _names(result[2]))
        return int(result[0]) == 1, sorted(_names(result[1]))

    async def leave(self, group: str, username: str) -> bool:
        """Count a socket out; returns whether it was the user's last one in the room."""
        self.held[group] -= 1
        if self.held[group] <= 0:
            del self.held[group]
        result: list[Any] = await self._leave(
            keys=[self.room_key(group)],
            args=[username, PROCESS_ID, self.process_key_prefix, self.ttl],
        )
        await self._announce_gone(group, _names(result[1]))
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
