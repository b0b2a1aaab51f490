"""Token buckets: one per connection in memory, and shared ones in Redis (all processes)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from infra.redis_clients import async_redis, redis_key, sync_redis, warn_redis_trouble

logger = logging.getLogger(__name__)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take()` is 0.0 or the wait in seconds."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 1.0


# The same bucket as TokenBucket, kept in a Redis hash and refilled from Redis' own clock,
# so that every process (whatever its clock) takes from one budget. One script: the read,
# the refill and the take cannot interleave with another process's take.
# KEYS[1] bucket; ARGV: rate (tokens a second), burst. Returns the wait as a string ("0").
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
if rate > 0 then tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate) end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
elseif rate > 0 then
  wait = (1 - tokens) / rate
else
  wait = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
-- A full bucket is the same as no bucket: let Redis forget it once it would be full again.
local ttl = 60000
if rate > 0 then ttl = math.ceil(burst / rate * 1000) + 1000 end
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(wait)
"""

_scripts: dict[int, Any] = {}


def _script(client: Any) -> Any:
    script = _scripts.get(id(client))
    if script is None or script.registered_client is not client:
        script = _scripts[id(client)] = client.register_script(_TAKE)
    return script


def round_wait(seconds: float) -> float:
    """Rounded up to the millisecond: a refused write never says "retry after 0"."""
    return math.ceil(seconds * 1000) / 1000


def parse_rate(rate: str) -> tuple[float, int]:
    """`"10/min"` -> (tokens a second, burst): DRF's rate syntax, the burst being the count."""
    count, _, period = rate.partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[:1].lower()]
    return int(count) / seconds, int(count)


class SharedTokenBucket:
    """A token bucket in Redis, shared by every server process: `take()` / `atake()` return
    0.0 or the wait in seconds.

    Redis trouble fails OPEN (the write is allowed, with a warning): a budget protects the
    service from one client, and refusing every write while Redis is away would do an
    attacker's work for him. PostgreSQL and the per-connection buckets still hold.
    """

    __slots__ = ("burst", "key", "rate")

    def __init__(self, name: str, rate: float, burst: int) -> None:
        self.key = redis_key("bucket", name)
        self.rate = float(rate)
        self.burst = int(burst)

    def take(self) -> float:
        try:
            return float(_script(sync_redis())(keys=[self.key], args=[self.rate, self.burst]))
        except Exception:
            warn_redis_trouble(logger, "shared rate limits unavailable (Redis): allowing")
            return 0.0

    async def atake(self) -> float:
        try:
            client = async_redis()
            return float(await _script(client)(keys=[self.key], args=[self.rate, self.burst]))
        except Exception:
            warn_redis_trouble(logger, "shared rate limits unavailable (Redis): allowing")
            return 0.0
