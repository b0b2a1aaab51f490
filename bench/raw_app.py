"""Raw baseline: a bare ASGI WebSocket app on uvicorn, no Django. The practical limit of
uvicorn + PostgreSQL + Redis on this machine, doing the same work per message as the project.

    RAW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_raw REDIS_URL=redis://... \
    SECRET_KEY=... uvicorn raw_app:app --app-dir bench --port 8100
    python bench/raw_app.py --init-db     # creates (and empties) its tables first

Per socket: `ws://<any host>/ws/raw/<room>/?token=<access>`; the token is the project's own
simplejwt access token, verified here with PyJWT (HS256, same SECRET_KEY, `exp`,
`token_type` == access, `tenant` claim); the room is created on its first join (one upsert
per room and process) and then known in memory. Per message: the same token bucket as the
project (10/s, burst 20), JSON parse and checks, one `INSERT ... RETURNING id, seq,
created_at` (autocommit, psycopg AsyncConnectionPool; `seq` from the same BEFORE INSERT
trigger as the project's), the same `chat.message` frame encoded once, one Redis PUBLISH
to the room's channel. One subscriber per process (redis.asyncio pub/sub, subscribed per
room on its first local join) writes each published frame to the room's local sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("raw_app")

DATABASE_URL = os.environ.get("RAW_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_raw")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
TENANT = os.environ.get("RAW_TENANT", "bench")
RATE = float(os.environ.get("CHAT_RATE_PER_SECOND", "10"))
BURST = int(os.environ.get("CHAT_RATE_BURST", "20"))
MAX_CHARS = 4000
CHANNEL_PREFIX = "raw.room."
PATH_RE = re.compile(r"^/ws/raw/([A-Za-z0-9_-]{1,64})/$")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS raw_room (
    id serial PRIMARY KEY,
    slug varchar(64) NOT NULL UNIQUE,
    last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS raw_message (
    id bigserial PRIMARY KEY,
    room_id integer NOT NULL REFERENCES raw_room (id),
    seq bigint NOT NULL DEFAULT 0,
    user_id bigint NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (room_id, seq)
);
CREATE OR REPLACE FUNCTION raw_message_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE raw_room SET last_seq = last_seq + 1 WHERE id = NEW.room_id
        RETURNING last_seq INTO NEW.seq;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS raw_message_assign_seq ON raw_message;
CREATE TRIGGER raw_message_assign_seq BEFORE INSERT ON raw_message
    FOR EACH ROW EXECUTE FUNCTION raw_message_assign_seq();
"""
INSERT_SQL = (
    "INSERT INTO raw_message (room_id, user_id, body) VALUES (%s, %s, %s) "
    "RETURNING id, seq, created_at"
)
ROOM_SQL = (
    "INSERT INTO raw_room (slug) VALUES (%s) "
    "ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id"
)


def _encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _error(code: str, detail: str, **extra: Any) -> str:
    return _encode({"type": "error", "code": code, "detail": detail, **extra})


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, float(burst), float(burst), 0.0
        self.stamp = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Room:
    __slots__ = ("id", "sends", "slug")

    def __init__(self, room_id: int, slug: str) -> None:
        self.id = room_id
        self.slug = slug
        self.sends: set[Any] = set()  # ASGI `send` callables of this process' sockets


class RawChat:
    def __init__(self) -> None:
        self.pool: AsyncConnectionPool | None = None
        self.redis: aioredis.Redis | None = None
        self.pubsub: Any = None
        self.rooms: dict[str, Room] = {}
        self.by_channel: dict[bytes, Room] = {}
        self.room_locks: dict[str, asyncio.Lock] = {}
        self.listener: asyncio.Task[None] | None = None

    # --- lifespan ---
    async def startup(self) -> None:
        if not SECRET_KEY:
            raise RuntimeError("SECRET_KEY is required (the project's JWT signing key)")
        self.pool = AsyncConnectionPool(
            DATABASE_URL,
            min_size=int(os.environ.get("DB_POOL_MIN", "2")),
            max_size=int(os.environ.get("DB_POOL_MAX", "10")),
            kwargs={"autocommit": True},
            open=False,
        )
        await self.pool.open(wait=True)
        self.redis = aioredis.from_url(REDIS_URL)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(CHANNEL_PREFIX.encode() + b"-")  # so listen() has a sub
        self.listener = asyncio.ensure_future(self.listen())

    async def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
        if self.pubsub is not None:
            await self.pubsub.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()

    # --- fan-out ---
    async def listen(self) -> None:
        while True:
            try:
                async for msg in self.pubsub.listen():
                    if msg["type"] != "message":
                        continue
                    room = self.by_channel.get(msg["channel"])
                    if room is None:
                        continue
                    event = {"type": "websocket.send", "text": msg["data"].decode()}
                    for send in tuple(room.sends):
                        try:
                            await send(event)
                        except Exception:
                            room.sends.discard(send)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("subscriber failed; resubscribing")
                await asyncio.sleep(0.5)

    async def room(self, slug: str) -> Room:
        room = self.rooms.get(slug)
        if room is not None:
            return room
        lock = self.room_locks.setdefault(slug, asyncio.Lock())
        async with lock:
            room = self.rooms.get(slug)
            if room is None:
                assert self.pool is not None
                async with self.pool.connection() as conn:
                    row = await (await conn.execute(ROOM_SQL, (slug,))).fetchone()
                assert row is not None
                room = Room(row[0], slug)
                channel = (CHANNEL_PREFIX + slug).encode()
                await self.pubsub.subscribe(channel)
                self.by_channel[channel] = room
                self.rooms[slug] = room
        return room

    # --- one socket ---
    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        match = PATH_RE.match(scope["path"])
        if match is None:
            await send({"type": "websocket.close", "code": 1008})  # refused at the handshake
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        claims = None
        try:
            claims = jwt.decode(query["token"][0], SECRET_KEY, algorithms=["HS256"])
            if claims.get("token_type") != "access" or claims.get("tenant") != TENANT:
                claims = None
        except (KeyError, IndexError, jwt.PyJWTError):
            claims = None
        if claims is None:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4401})
            return
        user_id = int(claims["user_id"])
        username = str(claims.get("username", ""))
        room = await self.room(match.group(1))
        bucket = TokenBucket(RATE, BURST)
        await send({"type": "websocket.accept"})
        room.sends.add(send)
        try:
            while True:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    text = event.get("text")
                    if text is None:
                        await send(
                            {
                                "type": "websocket.send",
                                "text": _error("invalid_frame", "Binary frames are not supported."),
                            }
                        )
                        continue
                    await self.on_text(text, room, user_id, username, bucket, send)
                elif kind == "websocket.disconnect":
                    break
        finally:
            room.sends.discard(send)

    async def on_text(
        self, text: str, room: Room, user_id: int, username: str, bucket: TokenBucket, send: Any
    ) -> None:
        try:
            content = json.loads(text)
        except ValueError:
            await send(
                {
                    "type": "websocket.send",
                    "text": _error("invalid_json", "Frame is not valid JSON."),
                }
            )
            return
        if not isinstance(content, dict) or content.get("type", "message") != "message":
            await send({"type": "websocket.send", "text": _error("unknown_type", "Unknown frame.")})
            return
        retry_after = bucket.take()
        if retry_after:
            await send(
                {
                    "type": "websocket.send",
                    "text": _error(
                        "rate_limited", "Too many messages.", retry_after=round(retry_after, 3)
                    ),
                }
            )
            return
        body = content.get("message")
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_CHARS:
            await send(
                {"type": "websocket.send", "text": _error("invalid_frame", "Bad `message`.")}
            )
            return
        assert self.pool is not None and self.redis is not None
        async with self.pool.connection() as conn:
            row = await (await conn.execute(INSERT_SQL, (room.id, user_id, body))).fetchone()
        assert row is not None
        frame = _encode(
            {
                "type": "chat.message",
                "id": row[0],
                "seq": row[1],
                "room": room.slug,
                "user": username,
                "message": body,
                "client_id": None,
                "created_at": row[2].isoformat().replace("+00:00", "Z"),
                "edited_at": None,
            }
        )
        await self.redis.publish(CHANNEL_PREFIX + room.slug, frame)


chat = RawChat()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await chat.websocket(scope, receive, send)
    elif kind == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    await chat.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await chat.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif kind == "http":  # readiness probe for the runner
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


def init_db(url: str = DATABASE_URL) -> None:
    """Create the raw baseline's tables and trigger, and empty them."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        conn.execute("TRUNCATE raw_message, raw_room RESTART IDENTITY")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--init-db"]:
        init_db(sys.argv[2] if len(sys.argv) > 2 else DATABASE_URL)
    else:
        sys.exit(__doc__)
