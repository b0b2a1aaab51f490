"""Webhook delivery latency and one worker's throughput (issue 11's closing figures).

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/webhooks.py --messages 300

Starts one uvicorn process and one Procrastinate worker (`--concurrency 20`) on the given
database (migrated: `manage.py migrate_schemas`), makes a tenant with a webhook pointing at a
local receiver, then:

- latency: sends messages one by one over REST and measures, for each, from the 201 (the
  message and its event are committed) to the receiver having the signed POST;
- throughput: sends a burst of messages from several threads to that tenant's one webhook and
  to `--webhooks` webhooks of their own (deliveries of one webhook run one at a time) and
  counts deliveries a second at the receiver.

Prints one JSON object; leaves no process running. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # message text -> arrival time
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver.lock:
                    text = body["data"]["message"]["message"]
                    receiver.arrivals.setdefault(f"{self.path}|{text}", time.monotonic())
                    receiver.lock.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def wait(self, count: int, timeout: float) -> None:
        with self.lock:
            self.lock.wait_for(lambda: len(self.arrivals) >= count, timeout=timeout)


def setup_tenant() -> tuple[str, str, str]:
    """(domain, admin access, member access) of a fresh tenant."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.auth import get_user_model

    from accounts.serializers import TenantTokenObtainPairSerializer
    from tenants.context import run_in_schema
    from tenants.services import tenant_ensure

    schema = f"whbench_{uuid.uuid4().hex[:8]}"
    domain = f"{schema.replace('_', '-')}.localhost"
    tenant_ensure(schema_name=schema, name=schema, domain=domain, verbosity=0)

    def users() -> tuple[str, str]:
        User = get_user_model()
        admin = User.objects.create_user(username="bench_admin", password=None, is_staff=True)
        member = User.objects.create_user(username="bench_member", password=None)
        issue = TenantTokenObtainPairSerializer.get_token
        return str(issue(admin).access_token), str(issue(member).access_token)

    admin, member = run_in_schema(schema, users)
    return domain, admin, member


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--webhooks", type=int, default=10)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "19250")))
    options = parser.parse_args()
    os.environ.setdefault("DEBUG", "1")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ["WEBHOOK_ALLOW_PRIVATE"] = "1"
    env = {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "CHAT_RATE_PER_SECOND": "100000",
        "CHAT_RATE_BURST": "100000",
    }
    domain, admin, member = setup_tenant()
    logs = Path(tempfile.gettempdir())
    bin_dir = Path(sys.executable).parent
    server = start(
        [str(bin_dir / "uvicorn"), "config.asgi:application", "--port", str(options.port)],
        env,
        logs / "whbench-server.log",
    )
    worker = start(
        [sys.executable, "manage.py", "procrastinate", "worker", "--concurrency", "20"],
        env,
        logs / "whbench-worker.log",
    )
    receiver = Receiver()
    base = f"http://127.0.0.1:{options.port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Host": domain}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
            for n in range(options.webhooks):
                c.post(
                    "/api/webhooks/",
                    headers={"Authorization": f"Bearer {admin}"},
                    json={"url": receiver.url(f"h{n}"), "events": ["message.created"]},
                )
            c.post(
                "/api/rooms/",
                headers={"Authorization": f"Bearer {member}"},
                json={"slug": "bench", "name": "bench"},
            )
            # Latency: one at a time, from the committed 201 to the receiver (webhook h0).
            latencies = []
            for n in range(50):
                text = f"lat-{n}"
                c.post(
                    "/api/rooms/bench/messages/",
                    headers={"Authorization": f"Bearer {member}"},
                    json={"message": text},
                )
                committed = time.monotonic()
                key = f"/h0|{text}"
                with receiver.lock:
                    receiver.lock.wait_for(lambda k=key: k in receiver.arrivals, timeout=30)
                    latencies.append(receiver.arrivals[key] - committed)
        # Throughput: a burst; every message goes to every webhook.
        before = len(receiver.arrivals)
        started = time.monotonic()

        def send(n: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                c.post(
                    "/api/rooms/bench/messages/",
                    headers={"Authorization": f"Bearer {member}"},
                    json={"message": f"burst-{n}"},
                )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(options.messages)))
        sent = time.monotonic() - started
        expected = before + options.messages * options.webhooks
        receiver.wait(expected, timeout=300)
        elapsed = time.monotonic() - started
        delivered = len(receiver.arrivals) - before
        latencies.sort()
        print(
            json.dumps(
                {
                    "latency_ms": {
                        "p50": round(statistics.median(latencies) * 1000, 1),
                        "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
                        "max": round(latencies[-1] * 1000, 1),
                        "samples": len(latencies),
                    },
                    "burst": {
                        "messages": options.messages,
                        "webhooks": options.webhooks,
                        "deliveries": delivered,
                        "send_seconds": round(sent, 2),
                        "seconds": round(elapsed, 2),
                        "deliveries_per_second": round(delivered / elapsed, 1),
                    },
                },
                indent=2,
            )
        )
    finally:
        for process in (worker, server):
            process.terminate()
            process.wait(timeout=30)
        receiver.server.shutdown()


if __name__ == "__main__":
    main()
