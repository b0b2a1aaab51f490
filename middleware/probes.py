"""`/healthz`, `/readyz` and `/metrics`, answered before Django so they work on any Host
(load balancers, Kubernetes probes and Prometheus scrape pod IPs).

`/readyz` checks PostgreSQL on a thread and a connection of its own, never through the
tenants' database threads: behind a busy tenant's backlog the probe would time out while
the database is fine, and the load balancer would pull a healthy pod.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.db import connection

from chat.drain import install_signal_drain
from infra.metrics import WEBHOOK_QUEUE_AGE, WEBHOOK_QUEUE_DUE, render
from infra.redis_clients import fresh_async_client
from middleware.types import ASGIApp, Receive, Scope, Send

PROBE_TIMEOUT = 3.0

# One thread, one connection, used by nothing else (the connection is only touched there).
_PROBE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-db")
_probe_connection: psycopg.Connection | None = None  # type: ignore[type-arg]


def _connect() -> psycopg.Connection:  # type: ignore[type-arg]
    # Django's own connection parameters (database, credentials, OPTIONS), outside its pool.
    params = connection.get_connection_params()
    params.setdefault("connect_timeout", int(PROBE_TIMEOUT))
    return psycopg.connect(**params, autocommit=True)


def _database_answers() -> bool:
    """`SELECT 1` on the probe connection; a connection that died since the last probe is
    replaced once, so a database restart is not reported as an outage afterwards."""
    global _probe_connection
    while True:
        fresh = _probe_connection is None
        try:
            if _probe_connection is None:
                _probe_connection = _connect()
            row = _probe_connection.execute("SELECT 1").fetchone()
            return row == (1,)
        except psycopg.Error:
            if _probe_connection is not None:
                _probe_connection.close()
                _probe_connection = None
            if fresh:
                raise


# The webhook queue as seen from PostgreSQL (Procrastinate's tables, public schema): jobs due
# and waiting, and the wait of the oldest; read on the probe thread at each /metrics scrape.
_QUEUE_SQL = """
    SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(j.scheduled_at, e.at))), 0)
    FROM public.procrastinate_jobs j
    LEFT JOIN public.procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred'
    WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
"""


def _queue_figures() -> tuple[int, float]:
    global _probe_connection
    if _probe_connection is None:
        _probe_connection = _connect()
    try:
        row = _probe_connection.execute(_QUEUE_SQL).fetchone()
    except psycopg.Error:
        _probe_connection.close()
        _probe_connection = None
        raise
    assert row is not None
    return int(row[0]), max(float(row[1]), 0.0)


async def _update_queue_gauges() -> None:
    """Best effort: with PostgreSQL away the gauges keep their last values (/readyz says why)."""
    try:
        due, age = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(_PROBE_THREAD, _queue_figures),
            PROBE_TIMEOUT,
        )
    except (TimeoutError, psycopg.Error, OSError):
        return
    WEBHOOK_QUEUE_DUE.set(due)
    WEBHOOK_QUEUE_AGE.set(age)


async def _database_probe() -> bool:
    return await asyncio.get_running_loop().run_in_executor(_PROBE_THREAD, _database_answers)


async def _channel_layer_answers() -> bool:
    # The layer is Redis pub/sub; a PING on a fresh connection to the same server proves it
    # is reachable without leaving a subscribed probe channel behind in the layer.
    client = fresh_async_client()
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def _check(coro_factory) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(await asyncio.wait_for(coro_factory(), PROBE_TIMEOUT))
    except Exception:
        return False


async def _respond(send: Send, status: int, body: dict) -> None:  # type: ignore[type-arg]
    await _respond_bytes(send, status, json.dumps(body).encode(), "application/json")


async def _respond_bytes(send: Send, status: int, payload: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer the server's lifespan events (Channels' router does not know the scope type)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            install_signal_drain()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class ProbesMiddleware:
    """Liveness (process up), readiness (PostgreSQL and channel layer reachable), lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http" and path == "/metrics":
            await _update_queue_gauges()
            payload, content_type = render()
            await _respond_bytes(send, 200, payload, content_type)
        elif scope["type"] == "http" and path == "/healthz":
            await _respond(send, 200, {"status": "ok"})
        elif scope["type"] == "http" and path == "/readyz":
            database, layer = await asyncio.gather(
                _check(_database_probe), _check(_channel_layer_answers)
            )
            ok = database and layer
            body = {
                "status": "ok" if ok else "unavailable",
                "database": database,
                "channel_layer": layer,
            }
            await _respond(send, 200 if ok else 503, body)
        else:
            await self.app(scope, receive, send)
