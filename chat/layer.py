"""The channel layer we run: channels-redis' pub/sub layer with a lock-free PUBLISH.

Only its sending side is used: `group_send` (chat/events.py). Receiving is chat/fanout.py's,
one pub/sub connection per process that reads the same Redis channels; no socket has a
channel of its own, so the layer's own subscriptions and receive loop stay idle.

channels-redis 4.3 takes one asyncio lock per Redis shard around every PUBLISH (and every
SUBSCRIBE), so a process's broadcasts go out one at a time, each holding the lock until its
reply has been read by a busy event loop. Under load that queue was the largest source of
p99 latency in bench/ (group_send alone took over 100 ms for a third of the messages).
PUBLISH needs no such lock: the redis-py client behind it has its own connection pool.
Subscribing keeps the lock (it guards the set of subscribed channels).

The shard's receive loop starts on the first subscribe, inside the first socket's task; it is
started in an empty context (config/background.py) so that its log lines do not carry that
socket's tenant and request id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis import pubsub

from infra.background import start_background

logger = logging.getLogger(__name__)


class _Shard(pubsub.RedisSingleShardConnection):
    async def publish(self, channel: str, message: bytes) -> None:
        self._ensure_redis()
        await self._redis.publish(channel, message)

    def _ensure_receiver(self) -> None:
        if getattr(self, "_receive_task", None) is None:
            task = start_background(self._receive_loop(), name="layer-receive")
            self._receive_task = task

    async def _receive_loop(self) -> None:
        logger.debug("channel layer receive loop started")
        await self._do_receiving()


class _LoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shards: list[Any] = getattr(self, "_shards")  # noqa: B009 (untyped in channels-redis)
        self._shards = [_Shard(shard.host, self) for shard in shards]


class RedisPubSubLayer(pubsub.RedisPubSubChannelLayer):
    """`channels_redis.pubsub.RedisPubSubChannelLayer`, same settings, same behaviour."""

    def _get_layer(self) -> Any:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            pubsub._wrap_close(self, loop)
        return layer
