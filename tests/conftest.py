"""Test foundation: a real PostgreSQL test database, tenants, users, tokens, live servers.

The suite runs against committed data in a database of its own (`<name>_test`, recreated
at every run): the code under test reaches the database from other threads (the async ORM
thread) and other processes (live uvicorn servers), which cannot see a test transaction.
Tests therefore never roll back; factories give every tenant, user and room a unique name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def _test_database_url() -> str:
    parts = urlsplit(settings.DATABASE_URL)
    name = parts.path.lstrip("/") or "tenantchat"
    # One database per test run, so two runs on one server (developers, helpers) never drop
    # each other's database; it is dropped again when the run ends.
    return urlunsplit(parts._replace(path=f"/{name}_test_{os.getpid()}"))


TEST_DATABASE_URL = _test_database_url()
# Redis is shared too: channel-layer groups, presence and throttle counts of this run carry
# their own prefix, so another run's kicks or presence can never reach this run's sockets.
TEST_REDIS_PREFIX = f"tc{os.getpid()}"
# Every process of this run names its PostgreSQL connections (pg_stat_activity's
# application_name), so the run's use of max_connections can be read per process.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _maintenance(url: str, *statements: str) -> None:
    import dj_database_url

    params = dj_database_url.parse(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    with psycopg.connect(
        dbname=params["NAME"],
        user=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        host=params.get("HOST") or None,
        port=params.get("PORT") or None,
        autocommit=True,
    ) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _recreate_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _maintenance(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')


def _drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _maintenance(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    _recreate_database(TEST_DATABASE_URL)
    settings.CHANNEL_PREFIX = TEST_REDIS_PREFIX
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = TEST_REDIS_PREFIX
    settings.CACHES["default"]["KEY_PREFIX"] = TEST_REDIS_PREFIX
    test_name = urlsplit(TEST_DATABASE_URL).path.lstrip("/")
    settings.DATABASES["default"]["NAME"] = test_name
    settings.DATABASES["default"]["OPTIONS"]["application_name"] = f"tc-{XDIST_WORKER}-tests"
    for conn in connections.all():
        conn.close()
        conn.close_pool()  # a pool opened before now would still point at the old database
        conn.settings_dict["NAME"] = test_name
        conn.settings_dict["OPTIONS"]["application_name"] = f"tc-{XDIST_WORKER}-tests"
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        from tenants.services import tenant_ensure

        tenant_ensure(schema_name="public", name="Platform", domain="localhost")
    yield
    for conn in connections.all():
        conn.close()
        conn.close_pool()
    if os.environ.get("KEEP_TEST_DB") != "1":
        _drop_database(TEST_DATABASE_URL)


_POOL_FAILURES = ("couldn't get a connection", "PoolTimeout", "too many clients")


def _connection_census() -> str:
    """This process's pool figures and who holds the server's connections (by
    application_name and state), read on a connection of its own outside the pool."""
    lines = []
    for conn in connections.all():
        pool = getattr(conn, "_connection_pools", {}).get(conn.alias)
        if pool is not None:
            lines.append(f"this process's pool ({conn.alias}): {pool.get_stats()}")
    try:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=3) as admin:
            limit = admin.execute("SHOW max_connections").fetchone()
            lines.append(f"max_connections: {limit[0] if limit else '?'}")
            for name, state, count in admin.execute(
                "SELECT application_name, state, count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' GROUP BY 1, 2 ORDER BY 3 DESC"
            ).fetchall():
                lines.append(f"  {count:4d}  {state or '-':<22} {name or '(unnamed)'}")
    except psycopg.Error as exc:
        lines.append(f"pg_stat_activity could not be read: {exc}")
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that failed waiting for a PostgreSQL connection carries, in its report, the
    census of who held the connections at that moment (issue 17, item 11)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and any(text in str(report.longrepr) for text in _POOL_FAILURES):
        report.sections.append(("PostgreSQL connections at the failure", _connection_census()))


@pytest.fixture(autouse=True)
def _database(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """Every test may use the (committed, never rolled back) test database."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        # As Django does at each request: this thread's connection goes back to the pool,
        # which checks it before handing it out again, so a test that ended backends
        # (tests/tenants/test_stale_connections.py) leaves no dead connection to the next.
        for conn in connections.all():
            conn.close_if_unusable_or_obsolete()
        yield


@pytest.fixture(autouse=True)
def _fresh_channel_layers() -> Iterator[None]:
    """A channel layer is bound to the event loop that made it; each test has its own loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


# --- factories -----------------------------------------------------------------------------


def blocking(fn: Callable[[], T]) -> T:
    """Run a synchronous ORM helper from anywhere, async tests included.

    Inside a running event loop Django refuses synchronous queries, so there the helper runs
    on a short-lived thread (with its own connection, closed after) while the test waits.
    On a thread other than the main one (`asyncio.to_thread`, an executor) the connection is
    closed after the call too: the thread outlives the test, and a pooled connection that
    it kept would never go back to the pool (16 such calls and every later test of the
    process waits for a connection in vain).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if threading.current_thread() is threading.main_thread():
            return fn()
        try:
            return fn()
        finally:
            connections.close_all()

    def call() -> T:
        try:
            return fn()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class TenantInfo:
    schema_name: str
    domain: str
    pk: int


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    password: str
    tenant: TenantInfo
    is_admin: bool


def _make_tenant(schema_name: str) -> TenantInfo:
    from tenants.services import tenant_ensure

    domain = f"{schema_name.replace('_', '-')}.localhost"
    tenant = tenant_ensure(
        schema_name=schema_name, name=schema_name.title(), domain=domain, verbosity=0
    )
    return TenantInfo(schema_name=schema_name, domain=domain, pk=tenant.pk)


@pytest.fixture(scope="session")
def tenant_a(django_db_setup: None, django_db_blocker) -> TenantInfo:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        return _make_tenant("acme_t")


@pytest.fixture(scope="session")
def tenant_b(django_db_setup: None, django_db_blocker) -> TenantInfo:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        return _make_tenant("globex_t")


@pytest.fixture(scope="session")
def tenant_c(django_db_setup: None, django_db_blocker) -> TenantInfo:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        return _make_tenant("initech_t")


@pytest.fixture(scope="session")
def make_tenant(django_db_setup: None, django_db_blocker) -> Callable[[], TenantInfo]:  # type: ignore[no-untyped-def]
    """A brand-new tenant (slow: creates and migrates a schema); for tests that change one."""

    def make() -> TenantInfo:
        with django_db_blocker.unblock():
            return blocking(lambda: _make_tenant(unique("t_")))

    return make


def make_user_in(
    tenant: TenantInfo, *, username: str | None = None, is_admin: bool = False
) -> UserInfo:
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    name = username or unique("user_")
    password = f"pw-{uuid.uuid4().hex}"

    def create() -> int:
        user = get_user_model().objects.create_user(username=name, password=password)
        user.is_staff = is_admin
        user.save(update_fields=["is_staff"])
        return user.pk

    user_id = blocking(lambda: run_in_schema(tenant.schema_name, create))
    return UserInfo(id=user_id, username=name, password=password, tenant=tenant, is_admin=is_admin)


@pytest.fixture
def make_user() -> Callable[..., UserInfo]:
    return make_user_in


def tokens_for(user: UserInfo) -> dict[str, str]:
    """A real access/refresh pair, issued the way the token endpoint issues it."""
    from django.contrib.auth import get_user_model

    from accounts.serializers import TenantTokenObtainPairSerializer
    from tenants.context import run_in_schema

    def issue() -> dict[str, str]:
        refresh = TenantTokenObtainPairSerializer.get_token(
            get_user_model().objects.get(pk=user.id)
        )
        return {"access": str(refresh.access_token), "refresh": str(refresh)}

    return blocking(lambda: run_in_schema(user.tenant.schema_name, issue))


@pytest.fixture
def access_token() -> Callable[[UserInfo], str]:
    return lambda user: tokens_for(user)["access"]


def set_user_active(user: UserInfo, active: bool) -> None:
    from django.contrib.auth import get_user_model

    from tenants.context import run_in_schema

    blocking(
        lambda: run_in_schema(
            user.tenant.schema_name,
            lambda: get_user_model().objects.filter(pk=user.id).update(is_active=active),
        )
    )


# --- live servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=TEST_DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY=settings.SECRET_KEY,
        DEBUG="0",
        DJANGO_SETTINGS_MODULE="config.settings",
        CHANNEL_PREFIX=TEST_REDIS_PREFIX,
        # Every test logs in from 127.0.0.1: only the tests of the per-IP budget lower it
        # (and they send from addresses of their own, see test_login_throttle.py).
        LOGIN_THROTTLE_IP_RATE="100000/min",
        # PostgreSQL serves both xdist workers, their servers (a test may start four) and
        # the worker processes: a server started here holds at most 14 connections (its 8
        # database threads and Django's 6 HTTP threads), not 16, and closes those it has not
        # used for 10 s, so that the run stays under PostgreSQL's max_connections (100).
        DB_POOL_MIN="1",
        DB_POOL_MAX="14",
        DB_POOL_MAX_IDLE="10",
        DB_APPLICATION_NAME=f"tc-{XDIST_WORKER}-child",
    )
    env.update(overrides)
    return env


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(tmp_dir: Path, *, port: int | None = None, **env: str) -> LiveServer:
    """One real uvicorn process (a pod), started the way the contract says; on `port` to
    start one again where a stopped one was (clients reconnect to the same URL)."""
    port = port or free_port()
    env = {"DB_APPLICATION_NAME": f"tc-{XDIST_WORKER}-uvicorn-{port}", **env}
    log_path = tmp_dir / f"uvicorn-{port}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=server_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(process=process, port=port, log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"uvicorn did not become ready:\n{server.log()}")


def start_pods(tmp_dir: Path, n: int, **env: str) -> list[LiveServer]:
    """`n` uvicorn processes of one environment, as replicas behind one load balancer; when
    one fails to start, those already started are stopped before the error goes on (a module
    fixture that raises has no teardown to stop them)."""
    started: list[LiveServer] = []
    try:
        for _ in range(n):
            started.append(start_server(tmp_dir, **env))
    except BaseException:
        stop_pods(started)
        raise
    return started


def stop_pods(pods: list[LiveServer]) -> None:
    for pod in pods:
        pod.stop()


@pytest.fixture(autouse=True)
def _live_server_helper() -> None:
    """Replaces pytest-django's hook for its own `live_server` (ours is a real uvicorn)."""


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[LiveServer]:
    """One uvicorn process shared by the tests that only need a server to talk to."""
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start extra uvicorn processes (stopped at the end of the test)."""
    started: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        server = start_server(tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
