"""A uvicorn process and a Procrastinate worker process that may call local receivers
(WEBHOOK_ALLOW_PRIVATE=1, a short retry schedule), two fresh tenants, and an HTTP receiver."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import (
    ROOT,
    TEST_DATABASE_URL,
    LiveServer,
    TenantInfo,
    free_port,
    server_env,
    start_server,
)

INTEGRATION_ENV = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_SCHEDULE": "1,1,1"}


@pytest.fixture(scope="module")
def hook_server(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("hooks"), **INTEGRATION_ENV)
    yield server
    server.stop()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(tmp_dir: Path, **env: str) -> Worker:
    """`manage.py webhook_worker`, the command a worker pod runs (its /metrics on a port of
    its own)."""
    log_path = tmp_dir / f"worker-{time.monotonic_ns()}.log"
    metrics_port = free_port()
    database_url = env.get("DATABASE_URL", TEST_DATABASE_URL)
    before = _last_worker_id(database_url)
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "webhook_worker",
            "--concurrency",
            "4",
            "--fetch-job-polling-interval",
            "0.2",
        ],
        cwd=ROOT,
        env=server_env(**INTEGRATION_ENV, WEBHOOK_WORKER_METRICS_PORT=str(metrics_port), **env),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    started = Worker(process, log_path, metrics_port)
    # Ready once it has registered in procrastinate_workers (it fetches jobs from then on):
    # a test's deadline must not include the worker's start-up, which took 10 s under load.
    deadline = time.monotonic() + 60
    while _last_worker_id(database_url) <= before:
        if process.poll() is not None:
            return started  # the caller sees it exited (and may start another, as a pod would)
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"webhook_worker did not register within 60 s:\n{started.log()}")
        time.sleep(0.2)
    return started


def _last_worker_id(database_url: str) -> int:
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT COALESCE(max(id), 0) FROM procrastinate_workers").fetchone()
    except psycopg.OperationalError:
        return -1  # the database is not there (yet): not registered
    return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Worker]:
    started = start_worker(tmp_path_factory.mktemp("worker"))
    yield started
    started.process.terminate()
    started.process.wait(timeout=15)


@pytest.fixture(scope="module")
def tenant_x(make_tenant: Any) -> TenantInfo:
    return make_tenant()


@pytest.fixture(scope="module")
def tenant_y(make_tenant: Any) -> TenantInfo:
    return make_tenant()


@dataclass
class Receiver:
    """A real HTTP endpoint: answers `statuses` in turn (then 200), or never (blackhole: it
    holds the request until the client gives up). Counts the requests it holds at once."""

    statuses: list[int] = field(default_factory=list)
    blackhole: bool = False
    delay_first: float = 0.0  # seconds the first request waits before its answer
    delay: float = 0.0  # seconds every request waits before its answer
    keep_alive: bool = False  # HTTP/1.1 keep-alive (the default: one request a connection)
    answer_body: bytes = b""  # sent with every answer
    endless: bool = False  # the answer's body never ends (until the client leaves)
    calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    server: ThreadingHTTPServer | None = None
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.calls) >= count, timeout=timeout)
            return list(self.calls)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with receiver.arrived:
                receiver.calls.append(
                    {
                        "at": time.monotonic(),
                        "path": self.path,
                        "headers": dict(self.headers),
                        "peer": self.client_address,
                        "body": body,
                    }
                )
                first = len(receiver.calls) == 1
                receiver.in_flight += 1
                receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                receiver.arrived.notify_all()
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            try:
                if receiver.blackhole:
                    self._until_client_leaves(30)
                    return
                if receiver.delay_first and first:
                    time.sleep(receiver.delay_first)
                if receiver.delay:
                    time.sleep(receiver.delay)
            finally:
                with receiver.arrived:
                    receiver.in_flight -= 1
            self.send_response(status)
            if receiver.endless:
                self.send_header("content-length", str(10**12))
                self.end_headers()
                with contextlib.suppress(OSError):
                    while True:
                        self.wfile.write(b"x" * 65536)
                return
            self.send_header("content-length", str(len(receiver.answer_body)))
            self.end_headers()
            self.wfile.write(receiver.answer_body)

        def _until_client_leaves(self, at_most: float) -> None:
            deadline = time.monotonic() + at_most
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.1)
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return  # closed: the client gave up on this request
                    except OSError:
                        return

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    started: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        handler = _handler(receiver)
        if receiver.keep_alive:
            handler.protocol_version = "HTTP/1.1"
        receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        receiver.server.daemon_threads = True
        threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        assert receiver.server is not None
        receiver.server.shutdown()
        receiver.server.server_close()
