"""With Redis away, the shared budgets fail open and the tenant-by-host lookup falls back to
the database (chat/budgets.py, tenants/host_cache.py): a Redis outage must not become a
REST outage. The server here has a Redis of its own, stopped by the test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.api_helpers import http
from tests.conftest import free_port, make_user_in, tokens_for, unique


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def test_rest_writes_and_host_lookups_go_on_while_redis_is_down(
    tenant_a, server_factory, own_redis
):
    url, redis_process = own_redis
    server = server_factory(REDIS_URL=url)
    user = make_user_in(tenant_a)
    token = tokens_for(user)["access"]
    with http(server, tenant_a.domain, token) as client:
        assert client.get("/api/me/").status_code == 200
    redis_process.kill()
    redis_process.wait(timeout=10)

    slug = unique("noredis-")
    with http(server, tenant_a.domain, token) as client:
        assert client.get("/api/me/").status_code == 200  # the host, from the database
        created = client.post("/api/rooms/", json={"slug": slug})  # both budgets fail open
        assert created.status_code == 201, created.text
    with http(server, f"{unique('nobody-')}.localhost", token) as client:
        assert client.get("/api/me/").status_code == 404
    # A message is stored with Redis away (its publish is retried, and other processes
    # repair from PostgreSQL): the sender gets its 201 and the message is in history.
    with http(server, tenant_a.domain, token) as client:
        sent = client.post(f"/api/rooms/{slug}/messages/", json={"message": "no redis"})
        assert sent.status_code == 201, sent.text
        history = client.get(f"/api/rooms/{slug}/messages/").json()
        assert [m["message"] for m in history] == ["no redis"]
    log = server.log()
    assert "Exception in ASGI application" not in log
    assert "Internal Server Error" not in log
