"""Webhook delivery: latency, throughput and isolation of one worker (issues 11 and 17).

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/webhooks.py [--cases ...]
    ... bench/webhooks.py --code /path/to/other/checkout   # the same cases on other code

Starts one uvicorn process and one webhook worker (`--concurrency 20`) from `--code` (default:
this checkout) on the given database (migrated by that code: `manage.py migrate_schemas`),
makes fresh tenants with webhooks pointing at local receivers, and runs the cases asked for:

- `latency`: messages one by one over REST, from each 201 (the message and its event are
  committed) to the receiver having the signed POST (issue 11's figure);
- `fanout`: a burst of `--messages` messages to one tenant with `--webhooks` webhooks, every
  message to every webhook: deliveries a second at the receiver (issue 11's figure);
- `burst`: 1000 messages (`--burst`) to ONE webhook, committed while no worker runs; then the
  worker starts: deliveries a second from the first arrival to the last (issue 17: >= 200);
- `steady`: 50 messages a second (`--rate`) for `--seconds` to one webhook: commit-to-receiver
  p50/p99/max (issue 17);
- `isolation`: a second tenant's latency (one message at a time) before and while a first
  tenant has 25 webhooks on an endpoint that never answers (issue 17: unchanged within 1 s).

Prints one JSON object; leaves no process running. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
LOGS = Path(tempfile.gettempdir())


class Receiver:
    """Records the arrival time of each message text (per path); answers 200 at once, or
    never (`blackhole`: holds the request until the client gives up)."""

    def __init__(self, *, blackhole: bool = False) -> None:
        self.arrivals: dict[str, float] = {}  # "<path>|<message text>" -> arrival time
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver.lock:
                    text = body["data"]["message"]["message"]
                    receiver.arrivals.setdefault(f"{self.path}|{text}", time.monotonic())
                    receiver.lock.notify_all()
                if blackhole:
                    self.close_connection = True
                    self.connection.settimeout(60)
                    with contextlib.suppress(OSError):
                        self.connection.recv(1)  # until the client gives up
                    return
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 512
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def wait(self, count: int, timeout: float) -> None:
        with self.lock:
            self.lock.wait_for(lambda: len(self.arrivals) >= count, timeout=timeout)

    def wait_key(self, key: str, timeout: float) -> float | None:
        with self.lock:
            self.lock.wait_for(lambda: key in self.arrivals, timeout=timeout)
            return self.arrivals.get(key)


# Run by the code under test (`--code`), so that its models and migrations make the tenant.
_SETUP = """
import json, sys, uuid
import django
django.setup()
from django.contrib.auth import get_user_model
from accounts.serializers import TenantTokenObtainPairSerializer
from tenants.context import run_in_schema
from tenants.services import tenant_ensure

schema = "whbench_" + uuid.uuid4().hex[:8]
domain = schema.replace("_", "-") + ".localhost"
tenant_ensure(schema_name=schema, name=schema, domain=domain, verbosity=0)

def users():
    User = get_user_model()
    admin = User.objects.create_user(username="bench_admin", password=None, is_staff=True)
    member = User.objects.create_user(username="bench_member", password=None)
    issue = TenantTokenObtainPairSerializer.get_token
    return str(issue(admin).access_token), str(issue(member).access_token)

admin, member = run_in_schema(schema, users)
print(json.dumps({"domain": domain, "admin": admin, "member": member}))
"""


class Bench:
    def __init__(self, code: Path, port: int) -> None:
        self.code = code
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.env = {
            **os.environ,
            # Production settings unless told otherwise: DEBUG=1 records every query.
            "DEBUG": os.environ.get("DEBUG", "0"),
            "SECRET_KEY": os.environ.get("SECRET_KEY", secrets.token_urlsafe(40)),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "WEBHOOK_ALLOW_PRIVATE": "1",
            "CHAT_RATE_PER_SECOND": "100000",
            "CHAT_RATE_BURST": "100000",
            "ROOM_CREATE_RATE_PER_MINUTE": "100000",
        }
        self.bin_dir = Path(sys.executable).parent

    def tenant(self) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", _SETUP],
            cwd=self.code,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def _start(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            cwd=self.code,
            env=self.env,
            stdout=(LOGS / log).open("wb"),
            stderr=subprocess.STDOUT,
        )

    @contextmanager
    def server(self) -> Iterator[None]:
        uvicorn = str(self.bin_dir / "uvicorn")
        process = self._start(
            [uvicorn, "config.asgi:application", "--port", str(self.port)], "whbench-server.log"
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)

    @contextmanager
    def worker(self) -> Iterator[None]:
        process = self._start(
            [sys.executable, "manage.py", "procrastinate", "worker", "--concurrency", "20"],
            "whbench-worker.log",
        )
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a drain of a dead endpoint: no need to wait
                process.kill()
                process.wait()

    def client(self, tenant: dict[str, str], who: str = "member") -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            headers={"Host": tenant["domain"], "Authorization": f"Bearer {tenant[who]}"},
            timeout=60,
        )

    def hooks(self, tenant: dict[str, str], urls: list[str]) -> None:
        with self.client(tenant, "admin") as c:
            for url in urls:
                answer = c.post("/api/webhooks/", json={"url": url, "events": ["message.created"]})
                assert answer.status_code == 201, answer.text
        with self.client(tenant) as c:
            c.post("/api/rooms/", json={"slug": "bench", "name": "bench"})

    def send(self, c: httpx.Client, text: str) -> float:
        """POST one message; the monotonic time of its 201 (committed)."""
        answer = c.post("/api/rooms/bench/messages/", json={"message": text})
        assert answer.status_code == 201, answer.text
        return time.monotonic()


def summary(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    p99 = ordered[max(int(len(ordered) * 0.99) - 1, 0)]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "samples": len(ordered),
    }


def one_by_one(
    bench: Bench, tenant: dict[str, str], receiver: Receiver, tag: str, count: int
) -> list[float]:
    latencies = []
    with bench.client(tenant) as c:
        for n in range(count):
            committed = bench.send(c, f"{tag}-{n}")
            arrived = receiver.wait_key(f"/{tag}|{tag}-{n}", timeout=60)
            latencies.append((arrived or time.monotonic() + 60) - committed)
    return latencies


def case_latency(bench: Bench, options: argparse.Namespace) -> dict[str, Any]:
    tenant, receiver = bench.tenant(), Receiver()
    with bench.server(), bench.worker():
        bench.hooks(tenant, [receiver.url("lat")])
        return summary(one_by_one(bench, tenant, receiver, "lat", 50))


def _burst_send(bench: Bench, tenant: dict[str, str], tag: str, count: int) -> float:
    started = time.monotonic()

    def send(n: int) -> None:
        with bench.client(tenant) as c:
            bench.send(c, f"{tag}-{n}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(count)))
    return time.monotonic() - started


def case_fanout(bench: Bench, options: argparse.Namespace) -> dict[str, Any]:
    tenant, receiver = bench.tenant(), Receiver()
    with bench.server(), bench.worker():
        bench.hooks(tenant, [receiver.url(f"h{n}") for n in range(options.webhooks)])
        started = time.monotonic()
        sent = _burst_send(bench, tenant, "fan", options.messages)
        receiver.wait(options.messages * options.webhooks, timeout=600)
        elapsed = time.monotonic() - started
    delivered = len(receiver.arrivals)
    return {
        "messages": options.messages,
        "webhooks": options.webhooks,
        "deliveries": delivered,
        "send_seconds": round(sent, 2),
        "seconds": round(elapsed, 2),
        "deliveries_per_second": round(delivered / elapsed, 1),
    }


def case_burst(bench: Bench, options: argparse.Namespace) -> dict[str, Any]:
    tenant, receiver = bench.tenant(), Receiver()
    with bench.server():
        bench.hooks(tenant, [receiver.url("burst")])
        sent = _burst_send(bench, tenant, "burst", options.burst)  # no worker yet: all wait
        with bench.worker():
            # Slow code may not finish: what arrived within --burst-timeout counts.
            receiver.wait(options.burst, timeout=options.burst_timeout)
    times = sorted(receiver.arrivals.values())
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "messages": options.burst,
        "delivered": len(times),
        "send_seconds": round(sent, 2),
        "first_to_last_seconds": round(span, 2),
        "deliveries_per_second": round((len(times) - 1) / span, 1) if span else None,
    }


def case_steady(bench: Bench, options: argparse.Namespace) -> dict[str, Any]:
    tenant, receiver = bench.tenant(), Receiver()
    count = int(options.rate * options.seconds)
    committed: dict[int, float] = {}
    with bench.server(), bench.worker():
        bench.hooks(tenant, [receiver.url("steady")])
        with bench.client(tenant) as c:  # the worker is up and has delivered once
            bench.send(c, "steady-warm-up")
            assert receiver.wait_key("/steady|steady-warm-up", timeout=120), "no worker"
        start = time.monotonic() + 0.5
        clients = [bench.client(tenant) for _ in range(8)]
        requested: dict[int, float] = {}

        def send(n: int) -> None:
            time.sleep(max(start + n / options.rate - time.monotonic(), 0))
            requested[n] = time.monotonic()
            committed[n] = bench.send(clients[n % len(clients)], f"steady-{n}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(count)))
        achieved = count / (time.monotonic() - start)
        receiver.wait(count, timeout=options.seconds + 120)
        for c in clients:
            c.close()
    # From the 201 (the commit happened before it: an arrival can precede it, and count
    # negative), and from the moment the request was sent (an upper bound).
    arrivals = [receiver.arrivals.get(f"/steady|steady-{n}", math.inf) for n in range(count)]
    latencies = [arrivals[n] - committed[n] for n in range(count)]
    from_request = summary([arrivals[n] - requested[n] for n in range(count)])
    if options.dump:  # per message: seconds since the start, commit-to-receiver seconds
        options.dump.write_text(
            json.dumps(
                [[round(committed[n] - start, 3), round(latencies[n], 3)] for n in range(count)]
            )
        )
    return {
        "rate": options.rate,
        "achieved_rate": round(achieved, 1),
        **summary(latencies),
        "undelivered": sum(1 for a in arrivals if a == math.inf),
        "from_request_p50_ms": from_request["p50_ms"],
        "from_request_p99_ms": from_request["p99_ms"],
    }


def case_isolation(bench: Bench, options: argparse.Namespace) -> dict[str, Any]:
    noisy, quiet = bench.tenant(), bench.tenant()
    hole, fast = Receiver(blackhole=True), Receiver()
    with bench.server(), bench.worker():
        bench.hooks(noisy, [hole.url(f"dead{n}") for n in range(25)])
        bench.hooks(quiet, [fast.url("quiet"), fast.url("quietd")])
        time.sleep(2)
        before = one_by_one(bench, quiet, fast, "quiet", 20)
        with bench.client(noisy) as c:
            for n in range(4):  # 100 deliveries into the hole, each attempt held 10 s
                bench.send(c, f"noisy-{n}")
        hole.wait(25, timeout=30)
        during_started = time.monotonic()
        during = one_by_one(bench, quiet, fast, "quietd", 20)
        during_seconds = time.monotonic() - during_started
        attempts_in_hole = len(hole.arrivals)
    b, d = summary(before), summary(during)
    return {
        "before": b,
        "during": d,
        "during_seconds": round(during_seconds, 1),
        "dead_endpoint_requests": attempts_in_hole,
        "p99_increase_ms": round(d["p99_ms"] - b["p99_ms"], 1),
    }


CASES = {
    "latency": case_latency,
    "fanout": case_fanout,
    "burst": case_burst,
    "steady": case_steady,
    "isolation": case_isolation,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="latency,fanout,burst,steady,isolation")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to run (default: this)")
    parser.add_argument("--messages", type=int, default=300, help="fanout: messages")
    parser.add_argument("--webhooks", type=int, default=10, help="fanout: webhooks")
    parser.add_argument("--burst", type=int, default=1000, help="burst: messages")
    parser.add_argument("--burst-timeout", type=float, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="steady: messages a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady: how long")
    parser.add_argument("--dump", type=Path, help="steady: write each message's latency here")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "0")))
    options = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    bench = Bench(options.code.resolve(), options.port or free_port())
    results: dict[str, Any] = {"code": str(bench.code)}
    for name in options.cases.split(","):
        results[name] = CASES[name](bench, options)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
