"""Recovery run: Redis SIGKILLed and started again under traffic; how long until every open
socket has every stored message? Used by `bench/run.py` (which owns the Redis process and
the project's server); see bench/README.md.

Timeline: R rooms x M members connect to the project (whose REDIS_URL is the bench's own
redis-server), S members per room send `{"type": "message", ..., "client_id": <uuid>}` at
--rate each; after `kill_after` s the runner SIGKILLs Redis, `down` s later starts it again
on the same port; `back` is the moment it answers PING. Senders go on for `after` s more,
then stop. A socket closed by the server (4409, 4408, 1011, 1006, ...) reconnects at once
with `since=<its highest seq without a hole>` (and counts as resumed once it gets
`resume.done`). Truth is PostgreSQL: each room's `last_seq` (the rooms' seq has no gaps).

- time_to_complete_s: from `back` until every socket has every seq that was stored by
  `back` (the gap the outage made).
- time_to_complete_all_s: from `back` until every socket has every seq stored by the end.
- missing / duplicates: at the end (after `timeout` s at most), per socket, stored seqs
  it never got, and seqs it got twice on the same connection (after a reconnect with
  `since`, the replay may repeat seqs the client had beyond its hole: the client dedupes
  those by seq, as the SDK does, and they are not counted).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import connect


class Sock:
    def __init__(self, room: str, user: int, sender: bool, member: int = 0) -> None:
        self.room = room
        self.member = member
        self.user = user
        self.sender = sender
        self.base = 0  # room's last_seq before any send: expected from base + 1 on
        self.seen: set[int] = set()  # every seq this client got, over all its connections
        self.duplicates = 0  # a seq twice on the same connection
        self.ws: Any = None
        self.open = False
        self.closes: Counter[str] = Counter()
        self.reconnects = 0
        self.resumed = 0

    def contiguous(self) -> int:
        s = self.base
        while (s + 1) in self.seen:
            s += 1
        return s

    def has_up_to(self, target: int) -> bool:
        return self.open and all(s in self.seen for s in range(self.base + 1, target + 1))


async def run_recovery(
    *,
    url: str,
    host: str,
    tokens: list[dict[str, str]],
    database_url: str,
    schema: str,
    kill: Callable[[], None],
    restart: Callable[[], None],
    redis_ping: Callable[[], bool],
    rooms: int = 10,
    members: int = 10,
    senders: int = 3,
    rate: float = 2.0,
    kill_after: float = 3.0,
    down: float = 2.0,
    after: float = 3.0,
    timeout: float = 30.0,
    prefix: str = "rec-r",
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    import psycopg

    # Several processes (comma-separated URLs): member m of every room is on process
    # m mod N, so each room spans the processes and a frame crosses Redis to reach half
    # of its sockets (on one process, local delivery would hide what Redis lost).
    ports = [urlsplit(u).port or 80 for u in url.split(",")]
    stop = asyncio.Event()
    sending_done = asyncio.Event()
    socks = [
        Sock(f"{prefix}{r}", (r * members + m) % len(tokens), m < senders, m)
        for r in range(rooms)
        for m in range(members)
    ]
    sent = Counter[str]()

    def port_of(s: Sock) -> int:
        return ports[s.member % len(ports)]

    def uri(s: Sock, since: int | None) -> str:
        path = f"/ws/chat/{s.room}/?token={tokens[s.user]['access']}"
        if since is not None:
            path += f"&since={since}"
        return f"ws://{host}:{port_of(s)}{path}"

    async def keep(s: Sock) -> None:
        since: int | None = None
        while not stop.is_set():
            try:
                s.ws = await connect(
                    uri(s, since),
                    host="127.0.0.1",
                    port=port_of(s),
                    compression=None,
                    ping_interval=None,
                    open_timeout=10,
                    max_queue=None,
                    proxy=None,
                )
            except Exception as exc:
                s.closes[f"connect {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            s.open = True
            this_connection: set[int] = set()
            try:
                async for text in s.ws:
                    frame = json.loads(text)
                    kind = frame.get("type")
                    if kind == "chat.message" and frame.get("room", s.room) == s.room:
                        seq = int(frame["seq"])
                        # A replay after `since` may repeat seqs this client had beyond its
                        # hole (it dedupes by seq, as the SDK does); twice on one connection
                        # is a duplicate.
                        if seq in this_connection:
                            s.duplicates += 1
                        this_connection.add(seq)
                        s.seen.add(seq)
                    elif kind == "resume.done":
                        s.resumed += 1
            except websockets.ConnectionClosed:
                pass
            finally:
                s.open = False
            if stop.is_set():
                return
            s.closes[str(s.ws.close_code)] += 1
            s.reconnects += 1
            since = s.contiguous()
            await asyncio.sleep(0.05)  # a server that closes every handshake: no hot loop

    async def send_loop(s: Sock) -> None:
        period = 1.0 / rate
        await asyncio.sleep(period * (hash(s.room + str(s.user)) % 100) / 100)
        n = 0
        while not sending_done.is_set():
            if s.open and s.ws is not None:
                try:
                    await s.ws.send(
                        json.dumps(
                            {
                                "type": "message",
                                "message": f"rec|{s.user}|{n}",
                                "client_id": str(uuid.uuid4()),
                            }
                        )
                    )
                    sent["sent"] += 1
                except websockets.ConnectionClosed:
                    sent["send_on_closed"] += 1
            else:
                sent["skipped_while_closed"] += 1
            n += 1
            await asyncio.sleep(period)

    def last_seqs() -> dict[str, int]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(
                f'SELECT slug, last_seq FROM "{schema}".chat_room WHERE slug LIKE %s',  # type: ignore[arg-type]
                (prefix + "%",),
            ).fetchall()
        return {slug: int(seq) for slug, seq in rows}

    keepers = [asyncio.ensure_future(keep(s)) for s in socks]
    deadline = time.monotonic() + 60
    while not all(s.open for s in socks) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    connected = sum(s.open for s in socks)
    base = await asyncio.to_thread(last_seqs)
    for s in socks:
        s.base = base.get(s.room, 0)
    senders_t = [asyncio.ensure_future(send_loop(s)) for s in socks if s.sender]

    await asyncio.sleep(kill_after)
    t_kill = time.monotonic()
    kill()
    await asyncio.sleep(down)
    restart()
    while not await asyncio.to_thread(redis_ping):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    t_back = time.monotonic()
    target_back = await asyncio.to_thread(last_seqs)
    await asyncio.sleep(after)
    sending_done.set()
    await asyncio.gather(*senders_t)
    await asyncio.sleep(0.5)  # the last sends' INSERTs
    target_end = await asyncio.to_thread(last_seqs)

    done_back: float | None = None
    done_all: float | None = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if done_back is None and all(s.has_up_to(target_back.get(s.room, 0)) for s in socks):
            done_back = time.monotonic() - t_back
        if all(s.has_up_to(target_end.get(s.room, 0)) for s in socks):
            done_all = time.monotonic() - t_back
            if done_back is None:
                done_back = done_all
            break
        await asyncio.sleep(0.05)

    missing = duplicates = missing_by_back = 0
    for s in socks:
        want = range(s.base + 1, target_end.get(s.room, 0) + 1)
        missing += sum(1 for q in want if q not in s.seen)
        upto = target_back.get(s.room, 0)
        missing_by_back += sum(1 for q in want if q <= upto and q not in s.seen)
        duplicates += s.duplicates
    closes: Counter[str] = Counter()
    for s in socks:
        closes.update(s.closes)
    open_at_end = sum(s.open for s in socks)
    stop.set()
    for s in socks:
        if s.ws is not None:
            await s.ws.close()
    for k in keepers:
        k.cancel()
    stored = sum(target_end.get(r, 0) - base.get(r, 0) for r in target_end)
    return {
        "rooms": rooms,
        "members": members,
        "senders": senders,
        "rate_per_sender": rate,
        "sockets": len(socks),
        "connected": connected,
        "open_at_end": open_at_end,
        "redis_down_s": round(t_back - t_kill, 2),
        "sent": sent["sent"],
        "send_skipped_while_closed": sent["skipped_while_closed"] + sent["send_on_closed"],
        "stored": stored,
        "stored_by_back": sum(target_back.get(r, 0) - base.get(r, 0) for r in target_back),
        "time_to_complete_s": round(done_back, 2) if done_back is not None else None,
        "time_to_complete_all_s": round(done_all, 2) if done_all is not None else None,
        "timeout_s": timeout,
        "missing": missing,
        "missing_by_back": missing_by_back,
        "duplicates": duplicates,
        "closes": dict(closes),
        "closed_4409": closes.get("4409", 0),
        "reconnects": sum(s.reconnects for s in socks),
        "resumed_with_since": sum(s.resumed for s in socks),
    }
