"""Fairness between tenants: tenant B's latency with and without tenant A at its limits.

    DATABASE_URL=postgresql://... REDIS_URL=redis://... .venv/bin/python bench/fairness.py

One uvicorn process serves two tenants. Tenant B keeps 5 sockets open, each in its own room,
each sending a message every 0.2 s, and polls `/readyz` every 0.2 s. Phases alternate on the
same server process: A-off, A-on, A-off, A-on ... In an A-on phase a separate load process
(so its CPU does not distort B's client) runs tenant A at its limits: 10 sockets each sending
at the platform's per-connection rate limit, and with `--reconnecters N` also N clients that
reconnect with `since=0` to a room of 1000 messages and drop the socket at once. Reported:
B's send-to-echo p50/p99/max and `/readyz` p50/p99/max per phase and over all phases of a
kind, the on/off ratios, echoes missing after 5 s and non-200 probes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import websockets

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
A_SCHEMA, A_DOMAIN = "fair_a", "fair-a.localhost"
B_SCHEMA, B_DOMAIN = "fair_b", "fair-b.localhost"
HISTORY, BODY_CHARS = 1000, 2000
B_SOCKETS, B_INTERVAL, PROBE_INTERVAL, TIMEOUT = 5, 0.2, 0.2, 5.0
MARKERS = ("<!-- fairness:start -->", "<!-- fairness:end -->")


def log(msg: str) -> None:
    print(f"[fairness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- tenant A's load (run in its own process) ----------------------------------------------


async def a_load(args: argparse.Namespace, tokens: list[dict[str, str]]) -> dict[str, int]:
    base = f"ws://127.0.0.1:{args.port}"
    headers = {"Host": A_DOMAIN}
    rate = args.a_rate
    stop_at = time.monotonic() + args.seconds
    counts = {"sent": 0, "rate_limited": 0, "reconnects": 0}

    async def writer(i: int) -> None:
        path = f"/ws/chat/arooms{i}/?token={tokens[i]['access']}"
        async with websockets.connect(base + path, additional_headers=headers) as ws:

            async def drain() -> None:
                async for raw in ws:
                    if '"rate_limited"' in str(raw):
                        counts["rate_limited"] += 1

            reader = asyncio.ensure_future(drain())
            next_at = time.monotonic()
            while time.monotonic() < stop_at:
                await ws.send(json.dumps({"type": "message", "message": f"a{i}"}))
                counts["sent"] += 1
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            reader.cancel()

    async def reconnecter(i: int) -> None:
        token = tokens[args.a_sockets + i % (len(tokens) - args.a_sockets)]["access"]
        path = f"/ws/chat/history/?token={token}&since=0"
        while time.monotonic() < stop_at:
            try:
                ws = await websockets.connect(base + path, additional_headers=headers)
                await ws.close()
                counts["reconnects"] += 1
            except Exception:
                await asyncio.sleep(0.05)

    await asyncio.gather(
        *(writer(i) for i in range(args.a_sockets)),
        *(reconnecter(i) for i in range(args.reconnecters)),
        return_exceptions=True,
    )
    return counts


# --- tenant B's measurements ---------------------------------------------------------------


class BClient:
    def __init__(self, port: int, tokens: list[dict[str, str]]) -> None:
        self.port, self.tokens = port, tokens
        self.echoes: list[tuple[float, float | None]] = []  # (sent at, seconds or None)
        self.probes: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        self.stop = False

    async def socket(self, i: int) -> None:
        path = f"ws://127.0.0.1:{self.port}/ws/chat/broom{i}/?token={self.tokens[i]['access']}"
        pending: dict[str, float] = {}  # this socket's messages not echoed yet
        async with websockets.connect(path, additional_headers={"Host": B_DOMAIN}) as ws:

            async def read() -> None:
                async for raw in ws:
                    frame = json.loads(raw)
                    sent = pending.pop(str(frame.get("message")), None)
                    if frame.get("type") == "chat.message" and sent is not None:
                        self.echoes.append((sent, time.monotonic() - sent))

            reader = asyncio.ensure_future(read())
            n = 0
            await asyncio.sleep(i * B_INTERVAL / B_SOCKETS)
            while not self.stop:
                text = f"b{i}-{n}"
                n += 1
                pending[text] = time.monotonic()
                await ws.send(json.dumps({"type": "message", "message": text}))
                await asyncio.sleep(B_INTERVAL)
            await asyncio.sleep(TIMEOUT)
            reader.cancel()
        self.echoes += [(sent, None) for sent in pending.values()]

    def probe_once(self) -> None:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=TIMEOUT):
                status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        self.probes.append((started, time.monotonic() - started, status))

    async def prober(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop:
            # A blocking client on a thread: its timing is not delayed by this event loop.
            await loop.run_in_executor(None, self.probe_once)
            await asyncio.sleep(PROBE_INTERVAL)

    def window(self, start: float, end: float) -> dict[str, Any]:
        echoes = [s for t, s in self.echoes if start <= t < end]
        done = [s * 1000 for s in echoes if s is not None]
        probes = [(s * 1000, st) for t, s, st in self.probes if start <= t < end]
        probe_ms = [s for s, _ in probes]
        return {
            "echoes": len(echoes),
            "missing": sum(1 for s in echoes if s is None),
            "echo_p50_ms": pct(done, 50),
            "echo_p99_ms": pct(done, 99),
            "echo_max_ms": max(done, default=None),
            "probes": len(probes),
            "probe_not_200": sum(1 for _, st in probes if st != 200),
            "probe_p50_ms": pct(probe_ms, 50),
            "probe_p99_ms": pct(probe_ms, 99),
            "probe_max_ms": max(probe_ms, default=None),
        }


# --- the run -------------------------------------------------------------------------------


def provision(env: dict[str, str], tmp: Path) -> tuple[Path, Path]:
    subprocess.run(
        [PY, "manage.py", "migrate_schemas", "--shared", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    out = []
    for schema, domain, users in ((A_SCHEMA, A_DOMAIN, 40), (B_SCHEMA, B_DOMAIN, B_SOCKETS)):
        path = tmp / f"{schema}.json"
        subprocess.run(
            [PY, "manage.py", "bench_provision", "--tenant", schema, "--domain", domain,
             "--users", str(users), "--prefix", schema, "--tokens-out", str(path), "--reset-chat"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        out.append(path)
    import psycopg

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        user_id = conn.execute(f"SELECT min(id) FROM {A_SCHEMA}.auth_user").fetchone()
        conn.execute(
            f"INSERT INTO {A_SCHEMA}.chat_room (slug, name, is_private, created_by_id, last_seq, "
            "created_at) VALUES ('history', 'history', false, %s, 0, now())",
            user_id,
        )
        conn.execute(
            f"INSERT INTO {A_SCHEMA}.chat_message (room_id, user_id, body) "
            f"SELECT r.id, %s, repeat('x', %s) FROM {A_SCHEMA}.chat_room r, "
            "generate_series(1, %s) WHERE r.slug = 'history'",
            (user_id[0] if user_id else None, BODY_CHARS, HISTORY),
        )
    return out[0], out[1]


def start_server(env: dict[str, str], port: int, logf: Any) -> subprocess.Popen[bytes]:
    args = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("uvicorn exited at start")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2),
        ):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("uvicorn did not become ready")


async def measure(
    args: argparse.Namespace, port: int, tokens_a: Path, tokens_b: list[dict[str, str]]
) -> dict[str, Any]:
    b = BClient(port, tokens_b)
    tasks = [asyncio.ensure_future(b.socket(i)) for i in range(B_SOCKETS)]
    tasks.append(asyncio.ensure_future(b.prober()))
    await asyncio.sleep(2.0)  # B's sockets open, the first calls made
    phases = []
    for n in range(args.rounds * 2):
        a_on = n % 2 == 1
        child = None
        if a_on:
            child = await asyncio.create_subprocess_exec(
                *[PY, __file__, "--a-load", "--port", str(port), "--tokens-a", str(tokens_a),
                 "--seconds", str(args.warmup + args.phase), "--a-sockets", str(args.a_sockets),
                 "--a-rate", str(args.a_rate), "--reconnecters", str(args.reconnecters)],
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        await asyncio.sleep(args.warmup)
        start = time.monotonic()
        await asyncio.sleep(args.phase)
        end = time.monotonic()
        load: dict[str, Any] = {}
        if child is not None:
            stdout, _ = await child.communicate()
            load = json.loads(stdout or b"{}")
            await asyncio.sleep(3.0)  # the server works off what A left queued
        phases.append({"a": "on" if a_on else "off", "start": start, "end": end, "load": load})
        log(f"phase {n + 1}/{args.rounds * 2} A-{'on' if a_on else 'off'} {load}")
    b.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)

    def in_kind(kind: str, t: float) -> bool:
        return any(p["a"] == kind and p["start"] <= t < p["end"] for p in phases)

    summary = {}
    for kind in ("off", "on"):
        echo = [s * 1000 for t, s in b.echoes if s is not None and in_kind(kind, t)]
        probe = [s * 1000 for t, s, _ in b.probes if in_kind(kind, t)]
        summary[kind] = {
            "echo_p50_ms": pct(echo, 50), "echo_p99_ms": pct(echo, 99),
            "probe_p50_ms": pct(probe, 50), "probe_p99_ms": pct(probe, 99),
            "missing": sum(1 for t, s in b.echoes if s is None and in_kind(kind, t)),
            "probe_not_200": sum(1 for t, _, st in b.probes if st != 200 and in_kind(kind, t)),
        }  # fmt: skip
    for phase in phases:
        phase.update(b.window(phase.pop("start"), phase.pop("end")))
    ratios = {
        key: round(summary["on"][key] / summary["off"][key], 2)
        for key in ("echo_p50_ms", "echo_p99_ms", "probe_p50_ms", "probe_p99_ms")
        if summary["on"][key] and summary["off"][key]
    }
    return {"phases": phases, "summary": summary, "ratios": ratios}


def markdown(result: dict[str, Any]) -> list[str]:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    p = result["params"]
    lines = [
        f"### {result['label']} ({result['date']})",
        "",
        f"`{result['command']}`: one uvicorn process, DB_THREADS={p['db_threads'] or 'default'}; "
        f"A-on = {p['a_sockets']} sockets at {p['a_rate']:g} msgs/s each"
        + (f" + {p['reconnecters']} `since=0` reconnecters" if p["reconnecters"] else "")
        + f"; phases {p['warmup']:g} s warm-up + {p['phase']:g} s measured, interleaved.",
        "",
        "| phase | A load | B echoes | missing | echo p50 / p99 / max ms | /readyz | not 200 "
        "| /readyz p50 / p99 / max ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, ph in enumerate(result["phases"], 1):
        load = ph["load"]
        desc = (
            f"{load.get('sent', 0)} sent, {load.get('rate_limited', 0)} limited, "
            f"{load.get('reconnects', 0)} reconnects"
            if ph["a"] == "on"
            else "off"
        )
        lines.append(
            f"| {n} | {desc} | {ph['echoes']} | {ph['missing']} | {ms(ph['echo_p50_ms'])} / "
            f"{ms(ph['echo_p99_ms'])} / {ms(ph['echo_max_ms'])} | {ph['probes']} | "
            f"{ph['probe_not_200']} | {ms(ph['probe_p50_ms'])} / {ms(ph['probe_p99_ms'])} / "
            f"{ms(ph['probe_max_ms'])} |"
        )
    s, r = result["summary"], result["ratios"]
    lines += [
        "",
        f"All A-off phases: echo p99 {ms(s['off']['echo_p99_ms'])} ms, /readyz p99 "
        f"{ms(s['off']['probe_p99_ms'])} ms. All A-on phases: echo p99 "
        f"{ms(s['on']['echo_p99_ms'])} ms, /readyz p99 {ms(s['on']['probe_p99_ms'])} ms "
        f"({s['on']['missing']} echoes missing, {s['on']['probe_not_200']} probes not 200). "
        f"**Ratios on/off**: echo p50 {r.get('echo_p50_ms', 'n/a')}, echo p99 "
        f"{r.get('echo_p99_ms', 'n/a')}, /readyz p50 {r.get('probe_p50_ms', 'n/a')}, "
        f"/readyz p99 {r.get('probe_p99_ms', 'n/a')}.",
        "",
    ]
    return lines


def write_results_section(result: dict[str, Any]) -> None:
    """Append this run's table inside the fairness block of RESULTS.md (kept by report.py)."""
    path = BENCH / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    start, end = MARKERS
    if start not in text:
        text = (
            text.rstrip("\n")
            + f"\n\n{start}\n## Fairness between tenants (bench/fairness.py)\n\n{end}\n"
        )
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    body = body.rstrip("\n") + "\n\n" + "\n".join(markdown(result))
    path.write_text(f"{head}{start}{body}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="A-off/A-on pairs (default 3)")
    parser.add_argument("--phase", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--a-sockets", type=int, default=10)
    parser.add_argument(
        "--a-rate", type=float, default=10.0, help="msgs/s per A socket (the limit)"
    )
    parser.add_argument("--reconnecters", type=int, default=0, help="A's since=0 reconnecters")
    parser.add_argument("--db-threads", type=int, default=0, help="DB_THREADS (0: the default)")
    parser.add_argument("--label", default="fairness", help="heading of the RESULTS.md section")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--a-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens-a", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.a_load:
        tokens = json.loads(Path(args.tokens_a).read_text())["users"]
        print(json.dumps(asyncio.run(a_load(args, tokens))))
        return

    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tenantchat")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "bench-" + secrets.token_hex(24),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CHANNEL_PREFIX": "tcfair",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    if args.db_threads:
        env["DB_THREADS"] = str(args.db_threads)
    tmp = Path(tempfile.mkdtemp(prefix="tenantchat-fairness-"))
    tokens_a, tokens_b = provision(env, tmp)
    log(f"provisioned; work dir {tmp}")
    port = free_port()
    with open(tmp / "server.log", "wb") as logf:
        server = start_server(env, port, logf)
        try:
            users_b = json.loads(tokens_b.read_text())["users"]
            measured = asyncio.run(measure(args, port, tokens_a, users_b))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    result = {
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/fairness.py " + " ".join(sys.argv[1:]),
        "params": {
            "rounds": args.rounds,
            "phase": args.phase,
            "warmup": args.warmup,
            "a_sockets": args.a_sockets,
            "a_rate": args.a_rate,
            "reconnecters": args.reconnecters,
            "db_threads": args.db_threads,
        },
        **measured,
    }
    out = BENCH / "results" / f"fairness-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(markdown(result)))
    if not args.no_write:
        write_results_section(result)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
