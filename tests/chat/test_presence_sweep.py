"""Presence of a killed process (PROTOCOL.md section 4): its users leave the room within
60 s, announced as `user.left`, even if nobody joins or leaves that room again."""

from __future__ import annotations

import signal

import redis
from django.conf import settings

from tests.conftest import make_user_in, unique
from tests.realtime_helpers import Sockets, frames_until, types

# Short enough for a test; the defaults (30 s / 10 s) keep the contract's 60 s.
FAST_PRESENCE = {"PRESENCE_TTL": "3", "PRESENCE_HEARTBEAT": "0.5"}


def presence_hash(schema_name: str, slug: str) -> tuple[dict[str, int], int]:
    """The room's presence hash (`username|process`: sockets) and its TTL in seconds."""
    from chat.events import room_group_name

    key = f"{settings.CHANNEL_PREFIX}:presence:room:{room_group_name(schema_name, slug)}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        entries = {k.decode(): int(v) for k, v in client.hgetall(key).items()}
        return entries, int(client.ttl(key))
    finally:
        client.close()


async def test_killed_process_users_get_user_left_and_leave_the_hash_without_anyone_joining(
    server_factory, tenant_a
):
    stays, doomed = server_factory(**FAST_PRESENCE), server_factory(**FAST_PRESENCE)
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = unique("sweep_")
    joined = {"type": "user.joined", "user": bob.username}
    left = {"type": "user.left", "user": bob.username}
    async with Sockets() as sockets:
        alice_ws = await sockets.room(stays, alice, slug)
        await sockets.room(doomed, bob, slug)
        await frames_until(alice_ws, lambda f: f == joined)
        entries, ttl = presence_hash(tenant_a.schema_name, slug)
        assert any(field.startswith(f"{bob.username}|") for field in entries), entries
        assert 0 < ttl <= 3, ttl  # the room hash expires unless a live process keeps it

        doomed.stop(signal.SIGKILL)
        frames = await frames_until(alice_ws, lambda f: f == left, timeout=30)
        assert "user.joined" not in types(frames[:-1]), frames
        entries, _ = presence_hash(tenant_a.schema_name, slug)
        assert not any(field.startswith(f"{bob.username}|") for field in entries), entries
        assert any(field.startswith(f"{alice.username}|") for field in entries), entries
