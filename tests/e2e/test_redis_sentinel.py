"""Redis through Sentinel (PROTOCOL.md section 4, issue 9 item 5): with `REDIS_SENTINELS` and
`REDIS_SENTINEL_MASTER` every Redis client of the server (channel layer, presence, budgets,
login throttle, `/readyz`) reaches the master the sentinels name, and after a failover the
same processes go on. The test runs its own master, replica and three sentinels on free
ports; REDIS_URL points at a port where nothing listens, so a client still built from it
would fail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from infra.redis_clients import parse_redis_target
from tests.api_helpers import http, login
from tests.conftest import LiveServer, TenantInfo, free_port, make_user_in, tokens_for, unique
from tests.realtime_helpers import rest_history, room_path
from tests.support import ws_connect, ws_receive_type

MASTER_NAME = "tcmaster"
SLOW = 30.0  # generous: a failover takes a few seconds, the machine is shared


def _wait_for(what: str, check: Any, timeout: float = SLOW) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@dataclass
class SentinelCluster:
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[n], decode_responses=True, socket_timeout=5)

    def master_port_now(self) -> int:
        _host, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)


def _redis_server(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "redis.log").open("wb")
    return subprocess.Popen(
        ["redis-server", *args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    master_port, replica_port = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    processes = [
        _redis_server(["--port", str(master_port), *common], tmp_path / "master"),
        _redis_server(
            ["--port", str(replica_port), *common, "--replicaof", "127.0.0.1", str(master_port)],
            tmp_path / "replica",
        ),
    ]
    cluster = SentinelCluster(master_port, replica_port, sentinel_ports, processes)
    try:
        _wait_for(
            "the replica to sync",
            lambda: (
                redis.Redis(port=replica_port).info("replication")["master_link_status"] == "up"
            ),
        )
        for port in sentinel_ports:
            workdir = tmp_path / f"sentinel-{port}"
            workdir.mkdir()
            conf = workdir / "sentinel.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            processes.append(_redis_server([str(conf), "--sentinel"], workdir))
        for n in range(3):
            # Each sentinel knows the replica and the two others: a failover can be agreed.
            def ready(n: int = n) -> bool:
                state = cluster.sentinel(n).sentinel_master(MASTER_NAME)
                return int(state["num-slaves"]) == 1 and int(state["num-other-sentinels"]) == 2

            _wait_for(f"sentinel {n} to see the replica and its peers", ready, timeout=60)
        yield cluster
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _ready(server: LiveServer) -> bool:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


async def _messages_until(ws: Any, client_id: str, timeout: float = SLOW) -> list[dict[str, Any]]:
    """The chat.message frames read from `ws` up to and including the one with `client_id`."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "chat.message":
                frames.append(frame)
                if frame.get("client_id") == client_id:
                    return frames


async def _crosses(sender: Any, receiver: Any, text: str) -> list[dict[str, Any]]:
    """Send `text` on one socket and read the other up to it; returns what it read."""
    client_id = str(uuid.uuid4())
    await sender.send(json.dumps({"type": "message", "message": text, "client_id": client_id}))
    frames = await _messages_until(receiver, client_id)
    assert frames[-1]["message"] == text
    return frames


@pytest.mark.parametrize("fault", ["sentinel-failover", "master-sigkill"])
async def test_every_redis_client_goes_through_sentinel_and_survives_a_failover(
    server_factory: Any, tenant_a: TenantInfo, sentinel_cluster: SentinelCluster, fault: str
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {
        "REDIS_URL": nowhere,
        "REDIS_SENTINELS": sentinel_cluster.sentinels_setting,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "LOGIN_THROTTLE_RATE": "3/min",
        "ROOM_CREATE_RATE": "2/min",
    }
    first, second = server_factory(**env), server_factory(**env)
    assert _ready(first) and _ready(second)

    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    alice_token, bob_token = tokens_for(alice)["access"], tokens_for(bob)["access"]

    # The login throttle (Django's cache) counts across both processes.
    for server in (first, second, first):
        assert login(server, tenant_a.domain, bob.username, "wrong").status_code == 401
    assert login(server, tenant_a.domain, bob.username, "wrong").status_code == 429

    # The room-creation budget (infra/redis_clients.py clients) too; it fails open without
    # Redis, so a 429 proves it reached the master.
    created = []
    for server in (first, second, first):
        with http(server, tenant_a.domain, alice_token) as client:
            created.append(client.post("/api/rooms/", json={"slug": unique("budget-")}))
    assert [r.status_code for r in created] == [201, 201, 429], [r.text for r in created]

    slug = unique("sentinel-")
    with http(first, tenant_a.domain, bob_token) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
    alice_ws = await ws_connect(first.ws_url, tenant_a.domain, room_path(slug, alice_token))
    bob_ws = await ws_connect(second.ws_url, tenant_a.domain, room_path(slug, bob_token))
    await ws_receive_type(alice_ws, "presence")
    await ws_receive_type(bob_ws, "presence")
    try:
        await _crosses(alice_ws, bob_ws, "first to second")
        await _crosses(bob_ws, alice_ws, "second to first")
        # The presence scripts ran on the master the sentinels name.
        master = redis.Redis(port=sentinel_cluster.master_port)
        assert any(True for _ in master.scan_iter(match="*presence*", count=1000))

        # Mid-traffic failover: alice keeps sending from the first process.
        old_master = sentinel_cluster.master_port_now()
        acked: set[str] = set()
        sent: list[str] = []
        failed_over = False
        for n in range(40):
            client_id = str(uuid.uuid4())
            try:
                await alice_ws.send(json.dumps({"message": f"m{n}", "client_id": client_id}))
                sent.append(client_id)
            except websockets.ConnectionClosed:
                break
            if n == 10 and fault == "sentinel-failover":
                assert sentinel_cluster.sentinel().execute_command(
                    "SENTINEL", "FAILOVER", MASTER_NAME
                )
                failed_over = True
            elif n == 10:  # the master dies; the sentinels notice after down-after-milliseconds
                sentinel_cluster.processes[0].kill()
                sentinel_cluster.processes[0].wait(timeout=10)
                failed_over = True
            await asyncio.sleep(0.15)  # under the 10/s chat rate limit
        assert failed_over
        await asyncio.to_thread(
            _wait_for,
            "the replica's promotion",
            lambda: sentinel_cluster.master_port_now() != old_master,
        )
        assert sentinel_cluster.master_port_now() == sentinel_cluster.replica_port

        # The sender's acknowledgements are its own chat.message frames (a closed socket
        # ends them).
        try:
            async with asyncio.timeout(5):
                async for raw in alice_ws:
                    frame = json.loads(raw)
                    if frame.get("type") == "chat.message" and frame.get("client_id"):
                        acked.add(frame["client_id"])
        except (TimeoutError, websockets.ConnectionClosed):
            pass

        for server in (first, second):
            await asyncio.to_thread(_wait_for, "/readyz 200 again", lambda s=server: _ready(s))

        stored = {m["client_id"] for m in rest_history(second, bob, slug)}
        assert acked <= stored, "an acknowledged message is missing from history"
        assert acked, "no message was acknowledged around the failover"

        # New messages cross both ways, on fresh sockets that resume with `since`.
        last_seq = max(m["seq"] for m in rest_history(second, bob, slug))
        alice_new = await ws_connect(
            first.ws_url, tenant_a.domain, room_path(slug, alice_token, since=last_seq)
        )
        bob_new = await ws_connect(
            second.ws_url, tenant_a.domain, room_path(slug, bob_token, since=last_seq)
        )
        try:
            await _crosses(alice_new, bob_new, "after failover, first to second")
            await _crosses(bob_new, alice_new, "after failover, second to first")
            # Bob's first socket stayed open through the failover: its process re-subscribed
            # on the promoted master and repaired from PostgreSQL what was published while
            # it was away (chat/fanout.py): it has every stored message, once, in order.
            seen = await _crosses(alice_new, bob_ws, "after failover, to the open socket")
            seen_ids = [f.get("client_id") for f in seen]
            missed = (set(sent) & stored) - set(seen_ids)
            print(
                f"sentinel failover: {len(acked)} of {len(sent)} acknowledged, {len(stored)}"
                f" stored; the socket that stayed open missed {len(missed)}"
            )
            assert not missed, f"the socket that stayed open missed {len(missed)}"
            seqs = [f["seq"] for f in seen]
            assert seqs == sorted(set(seqs)), "a duplicate or out of order"
        finally:
            await alice_new.close()
            await bob_new.close()
        # The keys now live on the promoted master.
        promoted = redis.Redis(port=sentinel_cluster.replica_port)
        assert promoted.info("replication")["role"] == "master"
        assert any(True for _ in promoted.scan_iter(match="*presence*", count=1000))
    finally:
        await alice_ws.close()
        await bob_ws.close()
    assert "Exception in ASGI application" not in first.log() + second.log()


@pytest.mark.parametrize(
    ("sentinels", "master", "complaint"),
    [
        ("127.0.0.1:26379", "", "go together"),
        ("", "mymaster", "go together"),
        ("127.0.0.1", "mymaster", "host:port"),
        ("127.0.0.1:26379,:26380", "mymaster", "host:port"),
        ("127.0.0.1:notaport", "mymaster", "host:port"),
    ],
)
def test_a_half_or_malformed_sentinel_setting_stops_the_server_with_a_clear_message(
    tmp_path: Path, sentinels: str, master: str, complaint: str
) -> None:
    env = {**os.environ, "REDIS_SENTINELS": sentinels, "REDIS_SENTINEL_MASTER": master}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert complaint in started.stderr


def test_sentinel_addresses_are_parsed_in_order_and_ipv6_brackets_dropped() -> None:
    target = parse_redis_target(
        "redis://unused:1/0", " 10.0.0.1:26379, [::1]:26380 ,sentinel-2:26381", "main", db="3"
    )
    assert target.uses_sentinel
    assert target.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-2", 26381))
    assert (target.master, target.db) == ("main", 3)
    assert not parse_redis_target("redis://r:6379/0").uses_sentinel
