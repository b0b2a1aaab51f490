"""Load generator: R rooms x M members on real authenticated WebSockets (asyncio + websockets).

Two modes, one JSON report on stdout (and in --out):

* sweep step (default): opens rooms x members sockets, S members per room send
  `{"type":"message","message":"<t_ns>|<sender>|<n>"}` at --rate messages/s each (random
  initial phase, jittered intervals uniform in [0.5, 1.5] x 1/rate), for --warmup then
  --duration seconds. Every member (the sender included) must receive every message of the
  measured window: expected = sent x members. Latency = receive time - the send timestamp
  in the body (CLOCK_MONOTONIC, which every process on the machine shares).
* --connect-only N: opens N sockets spread over the rooms (concurrency --concurrency),
  reports the time to open all of them and holds them; with --server-pids it reports the
  servers' RSS per idle connection = (RSS with N open - RSS before) / N.

The sockets are spread over --procs worker processes (rooms are never split across
workers, so each worker checks its own rooms' deliveries). The parent only coordinates
and samples CPU (/proc) of the servers, PostgreSQL, Redis and the workers over the
measured window. Each worker reports its own CPU seconds (getrusage) over that window.

Per received frame a worker does one substring test, one regex search, one clock read and
one histogram increment (0.1 ms bins); error frames (rate_limited, ...) are JSON-parsed and
counted by code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import random
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import CpuSampler, OtherCpu, pids_named, postgres_pids, raise_nofile, rss_kib

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

import websockets
from websockets.asyncio.client import connect
from websockets.protocol import State

BIN_NS = 100_000  # histogram bin: 0.1 ms
NBINS = 600_000  # up to 60 s; later deliveries land in the last bin
TS_RE = re.compile(r'"message":\s*"(\d+)\|')
CHAT_MARK = '"chat.message"'
ERROR_MARK = '"error"'


def _now() -> int:
    return time.monotonic_ns()


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------
# plan: which socket goes where


def _targets(urls: list[str], host: str | None) -> list[tuple[str, str, int]]:
    """(uri host:port part for the Host header, connect host, connect port) per server url."""
    out = []
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or 80
        header_host = host or parts.hostname or "127.0.0.1"
        out.append((f"{header_host}:{port}", parts.hostname or "127.0.0.1", port))
    return out


def plan_sweep(args: argparse.Namespace, n_users: int) -> list[list[dict[str, Any]]]:
    """Per worker: a list of rooms, each {room, target, members: [user index]}."""
    per_worker: list[list[dict[str, Any]]] = [[] for _ in range(args.procs)]
    for r in range(args.rooms):
        members = [(r * args.members + m) % n_users for m in range(args.members)]
        per_worker[r % args.procs].append(
            {"room": f"{args.room_prefix}{r}", "index": r, "members": members}
        )
    return per_worker


def plan_connect(args: argparse.Namespace, n_users: int) -> list[list[tuple[int, int]]]:
    """Per worker: list of (room index, user index) for --connect-only sockets."""
    per_worker: list[list[tuple[int, int]]] = [[] for _ in range(args.procs)]
    for i in range(args.connect_only):
        room = i % args.rooms
        per_worker[room % args.procs].append((room, i % n_users))
    return per_worker


# ---------------------------------------------------------------------------------------
# worker


class Worker:
    def __init__(self, args: argparse.Namespace, users: list[dict[str, str]], conn: Any) -> None:
        self.args = args
        self.users = users
        self.conn = conn  # multiprocessing pipe end
        self.targets = _targets(args.url.split(","), args.host)
        self.hist = [0] * NBINS
        self.delivered = 0
        self.warm_delivered = 0
        self.in_window = 0  # chat.message frames received inside the measured window
        self.slow_closed: Counter[str] = Counter()
        self.slow_frames = 0
        self.sent = 0
        self.errors: Counter[str] = Counter()
        self.connect_errors: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.window_start = 1 << 62  # set when the run starts
        self.window_end = 0
        self.lag_max_ns = 0
        self.lags: list[int] = []
        self.lat_max_ns = 0

    # -- pipe helpers (blocking recv off the loop) --
    async def recv_ctl(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def uri(self, room_index: int, room: str, user: int) -> tuple[str, str, int]:
        header_host, host, port = self.targets[room_index % len(self.targets)]
        path = self.args.path_template.format(room=room, token=self.users[user]["access"])
        return f"ws://{header_host}{path}", host, port

    async def open(self, room_index: int, room: str, user: int, slow: bool = False) -> Any:
        uri, host, port = self.uri(room_index, room, user)
        sock = None
        if slow:
            # A client that stops reading: a small receive buffer (set before connecting, so
            # the TCP window stays small) makes the server's own buffers fill, not the kernel's.
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        return await connect(
            uri,
            **where,
            compression=None if not self.args.compression else "deflate",
            ping_interval=None,
            ping_timeout=None,
            close_timeout=2,
            open_timeout=self.args.open_timeout,
            max_queue=None,
            proxy=None,
            user_agent_header=None,
        )

    # -- sweep mode --
    async def reader(self, ws: Any) -> None:
        hist = self.hist
        ts_search = TS_RE.search
        try:
            async for text in ws:
                now = _now()
                if not isinstance(text, str):
                    continue
                if CHAT_MARK in text:
                    m = ts_search(text)
                    if m is None:
                        continue
                    if self.window_start <= now < self.window_end:
                        self.in_window += 1
                    t = int(m.group(1))
                    if t >= self.window_start:
                        lat = now - t
                        self.delivered += 1
                        b = lat // BIN_NS
                        hist[b if b < NBINS else NBINS - 1] += 1
                        if lat > self.lat_max_ns:
                            self.lat_max_ns = lat
                    else:
                        self.warm_delivered += 1
                elif ERROR_MARK in text:
                    try:
                        code = json.loads(text).get("code", "?")
                    except ValueError:
                        code = "?"
                    self.errors[str(code)] += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            if ws.close_code is not None and ws.close_code != 1000:
                self.closed[str(ws.close_code)] += 1

    async def sender(self, ws: Any, sender_id: str, t0: int) -> None:
        rate = self.args.rate
        period = 1e9 / rate
        rnd = random.Random()
        due = t0 + int(rnd.random() * period)  # random initial phase
        n = 0
        end = self.window_end
        start = self.window_start
        send = ws.send
        pad = "|" + "x" * self.args.pad if self.args.pad else ""
        while True:
            now = _now()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                now = _now()
            if due >= end:
                return
            t = _now()
            try:
                await send(f'{{"type":"message","message":"{t}|{sender_id}|{n}{pad}"}}')
            except websockets.ConnectionClosed:
                self.errors["send_on_closed"] += 1
                return
            n += 1
            if t >= start:
                self.sent += 1
                lag = t - due
                self.lags.append(lag)
            due += int(period * (0.5 + rnd.random()))  # jittered: mean = period

    async def slow_reader(self, ws: Any) -> None:
        """A slow client that finally reads: drain what the server kept, note how it ended."""
        try:
            async for _text in ws:
                self.slow_frames += 1
        except websockets.ConnectionClosed:
            pass
        # The server ended it (or it broke) while the client read what was left.
        self.slow_closed[str(ws.close_code)] += 1

    async def run_sweep(self, rooms: list[dict[str, Any]]) -> dict[str, Any]:
        args = self.args
        sockets: list[tuple[Any, int, str]] = []  # (ws, room index, sender id or "")
        slow_sockets: list[Any] = []
        n_slow = args.members // args.slow_every if args.slow_every else 0
        sem = asyncio.Semaphore(max(1, args.concurrency // args.procs))

        async def one(room: dict[str, Any], m: int, user: int) -> None:
            # The last members of a room (never senders) are the slow ones, if any.
            slow = m >= args.members - n_slow
            async with sem:
                try:
                    ws = await self.open(room["index"], room["room"], user, slow=slow)
                except Exception as exc:
                    self.connect_errors[type(exc).__name__] += 1
                    return
            if slow:
                ws.transport.pause_reading()  # never reads again until the run is over
                slow_sockets.append(ws)
                return
            sid = f"{room['index']}.{m}" if m < args.senders else ""
            sockets.append((ws, room["index"], sid))

        t_connect = time.monotonic()
        await asyncio.gather(
            *(one(room, m, u) for room in rooms for m, u in enumerate(room["members"]))
        )
        connect_seconds = time.monotonic() - t_connect
        readers = [asyncio.ensure_future(self.reader(ws)) for ws, _, _ in sockets]
        self.conn.send(("ready", {"connected": len(sockets), "connect_s": connect_seconds}))
        t0 = await self.recv_ctl()  # CLOCK_MONOTONIC ns, the same in every process
        self.window_start = t0 + int(args.warmup * 1e9)
        self.window_end = self.window_start + int(args.duration * 1e9)
        senders = [asyncio.ensure_future(self.sender(ws, sid, t0)) for ws, _, sid in sockets if sid]
        await asyncio.sleep(max(0.0, (self.window_start - _now()) / 1e9))
        cpu0 = _cpu_seconds()
        await asyncio.sleep(max(0.0, (self.window_end - _now()) / 1e9))
        cpu1 = _cpu_seconds()
        await asyncio.gather(*senders)
        # Drain: wait for every message of the window to reach every member, or give up.
        expected = self.sent * (args.members - n_slow)
        deadline = time.monotonic() + args.drain
        while self.delivered < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        drain_s = args.drain - max(0.0, deadline - time.monotonic())
        if slow_sockets:
            # The slow clients read at last: how many did the server close, and with what?
            for ws in slow_sockets:
                ws.transport.resume_reading()
            slow_tasks = [asyncio.ensure_future(self.slow_reader(ws)) for ws in slow_sockets]
            await asyncio.wait(slow_tasks, timeout=args.slow_read)
            for t in slow_tasks:
                if not t.done():
                    t.cancel()  # still open after reading for --slow-read s
                    self.slow_closed["still open"] += 1
            await asyncio.wait(
                [asyncio.ensure_future(ws.close()) for ws in slow_sockets], timeout=5
            )
        if sockets:
            await asyncio.wait(
                [asyncio.ensure_future(ws.close()) for ws, _, _ in sockets], timeout=5
            )
        for r in readers:
            r.cancel()
        self.lags.sort()
        return {
            "connected": len(sockets),
            "connect_s": round(connect_seconds, 3),
            "sent": self.sent,
            "expected": expected,
            "delivered": self.delivered,
            "warm_delivered": self.warm_delivered,
            "in_window": self.in_window,
            "slow": len(slow_sockets),
            "slow_closed": dict(self.slow_closed),
            "slow_frames": self.slow_frames,
            "hist": {i: c for i, c in enumerate(self.hist) if c},
            "lat_max_ns": self.lat_max_ns,
            "lag_p99_ns": self.lags[int(0.99 * (len(self.lags) - 1))] if self.lags else 0,
            "lag_max_ns": self.lags[-1] if self.lags else 0,
            "errors": dict(self.errors),
            "connect_errors": dict(self.connect_errors),
            "closed": dict(self.closed),
            "cpu_s": round(cpu1 - cpu0, 3),
            "drain_s": round(drain_s, 2),
        }

    # -- connect-only mode --
    async def run_connect(self, plan: list[tuple[int, int]]) -> dict[str, Any]:
        args = self.args
        sem = asyncio.Semaphore(max(1, args.concurrency // args.procs))
        sockets: list[Any] = []
        times: list[float] = []

        async def one(room_index: int, user: int) -> None:
            async with sem:
                t = time.monotonic()
                try:
                    ws = await self.open(room_index, f"{args.room_prefix}{room_index}", user)
                except Exception as exc:
                    self.connect_errors[type(exc).__name__] += 1
                    return
                times.append(time.monotonic() - t)
                sockets.append(ws)

        # Warm-up: a few sockets opened and closed, so lazy start-up work (imports, pools,
        # subscriptions) is not counted in the idle-connection memory or the open time.
        warm = plan[: args.warm_connections]
        await asyncio.gather(*(one(r, u) for r, u in warm))
        await asyncio.gather(*(ws.close() for ws in sockets))
        sockets.clear()
        times.clear()
        self.connect_errors.clear()
        self.conn.send(("ready", {}))
        t0 = await self.recv_ctl()
        await asyncio.sleep(max(0.0, (t0 - _now()) / 1e9))
        cpu0 = _cpu_seconds()
        start = time.monotonic()
        await asyncio.gather(*(one(r, u) for r, u in plan))
        open_s = time.monotonic() - start
        cpu1 = _cpu_seconds()
        self.conn.send(("opened", {"open_s": open_s, "opened": len(sockets)}))
        await self.recv_ctl()  # parent measured RSS after the hold; now check and close
        still_open = sum(1 for ws in sockets if ws.state is State.OPEN)
        for ws in sockets:
            if ws.state is not State.OPEN:
                self.closed[str(ws.close_code)] += 1
        if sockets:
            await asyncio.wait([asyncio.ensure_future(ws.close()) for ws in sockets], timeout=10)
        times.sort()

        def pct(p: float) -> float:
            return round(1000 * times[int(p * (len(times) - 1))], 2) if times else 0.0

        return {
            "opened": len(sockets),
            "still_open": still_open,
            "open_s": round(open_s, 3),
            "connect_ms_p50": pct(0.5),
            "connect_ms_p99": pct(0.99),
            "connect_errors": dict(self.connect_errors),
            "closed": dict(self.closed),
            "cpu_s": round(cpu1 - cpu0, 3),
        }


def _worker_main(args: argparse.Namespace, users: list, plan: Any, conn: Any) -> None:
    raise_nofile()
    if uvloop is not None:
        uvloop.install()
    worker = Worker(args, users, conn)
    try:
        if args.connect_only:
            result = asyncio.run(worker.run_connect(plan))
        else:
            result = asyncio.run(worker.run_sweep(plan))
        conn.send(("result", result))
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise


# ---------------------------------------------------------------------------------------
# parent


def _percentile(hist: dict[int, int], total: int, p: float) -> float:
    """Upper edge (ms) of the bin holding the p-th delivery; 0 when nothing was delivered."""
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(p * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return round((b + 1) * BIN_NS / 1e6, 1)
    return round(NBINS * BIN_NS / 1e6, 1)


def _expect(conn: Any, kind: str) -> Any:
    tag, payload = conn.recv()
    if tag == "failed":
        raise SystemExit(f"load generator worker failed: {payload}")
    if tag != kind:
        raise SystemExit(f"load generator worker said {tag!r}, expected {kind!r}")
    return payload


def _sampler(args: argparse.Namespace, worker_pids: list[int]) -> CpuSampler:
    groups: dict[str, Any] = {"loadgen": worker_pids}
    for i, pid in enumerate(int(p) for p in args.server_pids.split(",") if p):
        groups[f"server{i}" if "," in args.server_pids else "server"] = [pid]
    dbs = [d for d in args.pg_dbs.split(",") if d] or None
    groups["postgres"] = lambda: postgres_pids(dbs)
    groups["redis"] = "redis-server"
    return CpuSampler(groups)


def _other(args: argparse.Namespace, worker_pids: list[int]) -> OtherCpu:
    """Everything on the machine that is not part of the benchmark."""
    dbs = [d for d in args.pg_dbs.split(",") if d] or None
    fixed = set(worker_pids)
    fixed |= {int(p) for p in args.server_pids.split(",") if p}
    fixed |= {int(p) for p in args.exclude_pids.split(",") if p}

    def ours() -> set[int]:
        return fixed | set(postgres_pids(dbs)) | set(pids_named("redis-server"))

    return OtherCpu(ours)


def parser() -> argparse.ArgumentParser:
    """The load generator's options (bench/handshake_profile.py drives its workers with them)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True, help="ws://127.0.0.1:8000 (comma-separate several)")
    ap.add_argument("--host", default=None, help="Host header (tenant domain), no port")
    ap.add_argument("--path-template", default="/ws/chat/{room}/?token={token}")
    ap.add_argument("--tokens", required=True, help="JSON from manage.py bench_provision")
    ap.add_argument("--room-prefix", default="bench-r")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1.0, help="messages/s per sender")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    ap.add_argument("--drain", type=float, default=5.0, help="max seconds to wait for stragglers")
    ap.add_argument("--connect-only", type=int, default=0, metavar="N")
    ap.add_argument("--hold", type=float, default=2.0, help="connect-only: settle before RSS")
    ap.add_argument("--warm-connections", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--procs", type=int, default=1, help="load-generator worker processes")
    ap.add_argument("--server-pids", default="", help="comma-separated server pids (CPU, RSS)")
    ap.add_argument(
        "--pg-dbs", default="", help="count only these databases' PostgreSQL backends (CPU)"
    )
    ap.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    ap.add_argument("--pad", type=int, default=0, help="characters added to each message body")
    ap.add_argument(
        "--slow-every",
        type=int,
        default=0,
        metavar="N",
        help="one socket in N never reads (pauses its transport) until the step is over",
    )
    ap.add_argument("--slow-read", type=float, default=5.0, help="seconds slow clients read at end")
    ap.add_argument(
        "--exclude-pids",
        default="",
        help="more pids that are ours (idle servers of other systems): not counted as other",
    )
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser()
    args = ap.parse_args(argv)
    if not args.connect_only and not 0 < args.senders <= args.members:
        ap.error("--senders must be between 1 and --members")
    if args.slow_every and args.members - args.members // args.slow_every < args.senders:
        ap.error("--slow-every leaves fewer non-slow members than --senders")
    raise_nofile()

    users = json.loads(Path(args.tokens).read_text())["users"]
    plans: list[Any] = (
        plan_connect(args, len(users)) if args.connect_only else plan_sweep(args, len(users))
    )
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for w in range(args.procs):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(args, users, plans[w], child_end))
        proc.start()
        pipes.append(parent_end)
        procs.append(proc)
    server_pids = [int(p) for p in args.server_pids.split(",") if p]
    sampler = _sampler(args, [p.pid for p in procs if p.pid])
    other = _other(args, [p.pid for p in procs if p.pid])
    report: dict[str, Any] = {
        "mode": "connect" if args.connect_only else "sweep",
        "url": args.url,
        "path_template": args.path_template.replace("{token}", "<token>"),
        "procs": args.procs,
        "uvloop": uvloop is not None,
    }
    try:
        if args.connect_only:
            report.update(_parent_connect(args, pipes, server_pids, sampler, other))
        else:
            report.update(_parent_sweep(args, pipes, server_pids, sampler, other))
    finally:
        for proc in procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()
    text = json.dumps(report)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


def _parent_sweep(
    args: argparse.Namespace,
    pipes: list,
    server_pids: list[int],
    sampler: CpuSampler,
    other: OtherCpu,
) -> dict[str, Any]:
    ready = [_expect(p, "ready") for p in pipes]
    t0 = _now() + 200_000_000  # everyone starts 0.2 s from now
    for p in pipes:
        p.send(t0)
    window_start = t0 + int(args.warmup * 1e9)
    window_end = window_start + int(args.duration * 1e9)
    time.sleep(max(0.0, (window_start - _now()) / 1e9))
    before = sampler.sample()
    other.start()
    rss_max = {str(pid): rss_kib(pid) or 0 for pid in server_pids}
    while _now() < window_end:
        time.sleep(min(0.5, max(0.0, (window_end - _now()) / 1e9)))
        for pid in server_pids:
            rss_max[str(pid)] = max(rss_max[str(pid)], rss_kib(pid) or 0)
    after = sampler.sample()
    other_cpu = other.stop()
    cpu = CpuSampler.delta(before, after, args.duration)
    cpu["other"] = other_cpu["pct"]
    cpu["kernel"] = other_cpu["kernel_pct"]
    rss = {str(pid): rss_kib(pid) for pid in server_pids}
    results = [_expect(p, "result") for p in pipes]
    slow_closed: Counter[str] = Counter()
    for r in results:
        slow_closed.update(r["slow_closed"])
    server_cpu_s = (
        sum(v for k, v in cpu.items() if k.startswith("server") and "#" not in k)
        * args.duration
        / 100
    )
    in_window = sum(r["in_window"] for r in results)

    hist: Counter[int] = Counter()
    for r in results:
        hist.update({int(k): v for k, v in r["hist"].items()})
    sent = sum(r["sent"] for r in results)
    expected = sum(r["expected"] for r in results)
    delivered = sum(r["delivered"] for r in results)
    errors: Counter[str] = Counter()
    connect_errors: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
        connect_errors.update(r["connect_errors"])
        closed.update(r["closed"])
    target = args.rooms * args.senders * args.rate
    return {
        "rooms": args.rooms,
        "members": args.members,
        "senders": args.senders,
        "rate_per_sender": args.rate,
        "target_msgs_per_s": round(target, 1),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connected": sum(r["connected"] for r in ready),
        "connect_s": round(max(r["connect_s"] for r in ready), 3),
        "sent": sent,
        "sent_per_s": round(sent / args.duration, 1),
        "expected": expected,
        "delivered": delivered,
        "ratio": round(delivered / expected, 6) if expected else 0.0,
        "deliveries_per_s": round(delivered / args.duration, 1),
        "p50_ms": _percentile(hist, delivered, 0.50),
        "p95_ms": _percentile(hist, delivered, 0.95),
        "p99_ms": _percentile(hist, delivered, 0.99),
        "max_ms": round(max(r["lat_max_ns"] for r in results) / 1e6, 1),
        "send_lag_p99_ms": round(max(r["lag_p99_ns"] for r in results) / 1e6, 1),
        "errors": dict(errors),
        "error_frames": sum(errors.values()),
        "connect_errors": dict(connect_errors),
        "closed": dict(closed),
        "loadgen_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
        "loadgen_cpu_pct": round(100 * sum(r["cpu_s"] for r in results) / args.duration, 1),
        "cpu_pct": cpu,
        "server_rss_kib": rss,
        "server_rss_max_kib": sum(rss_max.values()),
        "other_top": other_cpu["top"],
        "in_window": in_window,
        "server_cpu_s": round(server_cpu_s, 3),
        # server CPU (utime + stime of its own processes) per chat.message frame it
        # delivered during the measured window, in microseconds
        "cpu_us_per_frame": round(1e6 * server_cpu_s / in_window, 1) if in_window else None,
        "pad": args.pad,
        "slow": sum(r["slow"] for r in results),
        "slow_closed": dict(slow_closed),
        "slow_frames": sum(r["slow_frames"] for r in results),
        "drain_s": max(r["drain_s"] for r in results),
    }


def _parent_connect(
    args: argparse.Namespace,
    pipes: list,
    server_pids: list[int],
    sampler: CpuSampler,
    other: OtherCpu,
) -> dict[str, Any]:
    for p in pipes:
        _expect(p, "ready")
    time.sleep(1.0)  # let the warm-up sockets' teardown finish
    rss0 = {pid: rss_kib(pid) for pid in server_pids}
    t0 = _now() + 100_000_000
    for p in pipes:
        p.send(t0)
    time.sleep(max(0.0, (t0 - _now()) / 1e9))
    before = sampler.sample()
    other.start()
    t_start = _now()
    opened = [_expect(p, "opened") for p in pipes]
    open_s = (_now() - t_start) / 1e9
    after = sampler.sample()
    cpu = CpuSampler.delta(before, after, open_s)
    time.sleep(args.hold)
    # Other processes over the opening and the hold: a window of a few ticks says nothing.
    other_cpu = other.stop()
    cpu["other"] = other_cpu["pct"]
    cpu["kernel"] = other_cpu["kernel_pct"]
    rss1 = {pid: rss_kib(pid) for pid in server_pids}
    for p in pipes:
        p.send("close")
    results = [_expect(p, "result") for p in pipes]
    n_open = sum(r["still_open"] for r in results)
    connect_errors: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    for r in results:
        connect_errors.update(r["connect_errors"])
        closed.update(r["closed"])
    rss_before = sum(v or 0 for v in rss0.values())
    rss_after = sum(v or 0 for v in rss1.values())
    n = sum(o["opened"] for o in opened)
    return {
        "requested": args.connect_only,
        "opened": n,
        "still_open_after_hold": n_open,
        "open_s": round(open_s, 3),
        "opens_per_s": round(n / open_s, 1) if open_s else 0.0,
        "connect_ms_p50": max(r["connect_ms_p50"] for r in results),
        "connect_ms_p99": max(r["connect_ms_p99"] for r in results),
        "concurrency": args.concurrency,
        "connect_errors": dict(connect_errors),
        "closed": dict(closed),
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "rss_per_conn_kib": round((rss_after - rss_before) / n, 1) if n and server_pids else None,
        "loadgen_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
        "cpu_pct": cpu,
        "other_top": other_cpu["top"],
    }


if __name__ == "__main__":
    main()
