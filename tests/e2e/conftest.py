"""Fixtures of the fault tests: a PostgreSQL and a Redis of the test's own that it may stop
and start."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.pg_cluster import PostgresCluster, remove_cluster, start_cluster


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A running cluster on a free port with an empty `tenantchat` database (seed it with
    `tests.pg_cluster.seed_cluster`); removed, stopped or not, when the test ends."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


class RedisProcess:
    """A redis-server of the test's own on a free port, that it may kill and start again on
    the same port (never the machine's shared Redis)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    instance = RedisProcess(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.kill()
