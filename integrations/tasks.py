"""Procrastinate tasks of webhook deliveries (run by `manage.py procrastinate worker`).

Fairness: every job of one webhook carries that webhook's Procrastinate `lock`, so a webhook
has at most one request in flight; a slow or dead endpoint (each attempt is cut at
WEBHOOK_TIMEOUT) holds one of the worker's `--concurrency` slots, never all of them, and
other webhooks, other tenants' included, go on. Retries are new jobs, scheduled after the
WEBHOOK_RETRY_SCHEDULE delay and given a lower priority the more attempts they had, so a retry
waiting for its time never holds back a newer event of the same webhook (Procrastinate runs
the jobs of one lock by priority, then in order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name
from procrastinate import JobContext
from procrastinate.contrib.django import app

from infra.metrics import WEBHOOK_DELIVERIES
from integrations import webhooks
from tenants.context import in_schema
from tenants.selectors import tenant_schema_names

logger = logging.getLogger(__name__)

DELIVER_TASK = "integrations.deliver"
MAX_ERROR_CHARS = 200


def defer_delivery(
    schema_name: str, webhook_id: int, delivery_id: int, *, attempt: int, delay: float
) -> None:
    """Queue one attempt of a delivery, through the caller's Django connection (and so in
    the caller's transaction)."""
    deliver.configure(
        lock=f"webhook:{schema_name}:{webhook_id}",
        priority=-attempt,
        schedule_at=timezone.now() + timedelta(seconds=delay) if delay else None,
    ).defer(schema_name=schema_name, delivery_id=delivery_id)


@dataclass(frozen=True, slots=True)
class _Attempt:
    url: str
    secret: str
    message_id: str
    body: str


def _load(delivery_id: int) -> _Attempt | None:
    from integrations.models import Delivery

    delivery = (
        Delivery.objects.select_related("webhook")
        .filter(pk=delivery_id, state=Delivery.State.PENDING, webhook__is_active=True)
        .first()
    )
    if delivery is None:
        return None  # delivered meanwhile (a manual retry raced a scheduled one), or gone
    return _Attempt(
        delivery.webhook.url, delivery.webhook.secret, delivery.message_id, delivery.body
    )


def _finish(schema_name: str, delivery_id: int, status_code: int | None, error: str) -> str:
    """Log the attempt; delivered on a 2xx, else the next attempt is queued in the same
    transaction, or the delivery is failed when the schedule is spent."""
    from integrations.models import Delivery

    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            return "gone"
        delivery.attempts.append(
            {"at": timezone.now().isoformat(), "status_code": status_code, "error": error or None}
        )
        schedule = settings.WEBHOOK_RETRY_SCHEDULE
        failures = sum(1 for a in delivery.attempts if not _ok(a["status_code"]))
        if _ok(status_code):
            delivery.state = Delivery.State.DELIVERED
        elif failures <= len(schedule):
            delivery.state = Delivery.State.PENDING
            defer_delivery(
                schema_name,
                delivery.webhook_id,
                delivery.pk,
                attempt=failures,
                delay=schedule[failures - 1],
            )
        else:
            delivery.state = Delivery.State.FAILED
        delivery.save(update_fields=["attempts", "state"])
        return "retry" if delivery.state == Delivery.State.PENDING else str(delivery.state)


def _ok(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


async def _pinned_url(url: str) -> tuple[str, str]:
    """(URL with the host replaced by a checked address, the Host header): the address is
    resolved and checked now, at delivery time, and the request goes to that very address,
    so a name that re-resolves to a private address after the save-time check (DNS
    rebinding) reaches nothing private."""
    scheme, host, port = webhooks.url_target(url)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=0, proto=6)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(webhooks.address_refused(a) for a in addresses):
        raise PermissionError("the URL resolves to a loopback, private or link-local address")
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    parts = urlsplit(url)
    default_port = 443 if scheme == "https" else 80
    host_header = host if port == default_port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")), host_header


async def _post(client: httpx.AsyncClient, attempt: _Attempt) -> tuple[int | None, str]:
    timestamp = int(time.time())
    try:
        target, host_header = await _pinned_url(attempt.url)
        headers = {
            "host": host_header,
            "content-type": "application/json",
            "user-agent": "tenantchat-webhooks",
            "webhook-id": attempt.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.signature(
                attempt.secret, attempt.message_id, timestamp, attempt.body
            ),
        }
        hostname = webhooks.url_target(attempt.url)[1]
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT):
            request = client.build_request(
                "POST",
                target,
                content=attempt.body.encode(),
                headers=headers,
                extensions={"sni_hostname": hostname},
            )
            response = await client.send(request, stream=True)  # the body is never read
            await response.aclose()
        return response.status_code, "" if _ok(response.status_code) else "non-2xx answer"
    except TimeoutError:
        return None, f"no answer within {settings.WEBHOOK_TIMEOUT:g} s"
    except (httpx.HTTPError, OSError, PermissionError, ValueError) as exc:
        return None, (str(exc) or type(exc).__name__)[:MAX_ERROR_CHARS]


_CLIENT: httpx.AsyncClient | None = None


def _client() -> httpx.AsyncClient:
    global _CLIENT
    if _CLIENT is None:
        # No redirects (a 3xx is a failed attempt: following it would skip the address check).
        _CLIENT = httpx.AsyncClient(follow_redirects=False, timeout=settings.WEBHOOK_TIMEOUT)
    return _CLIENT


@app.task(name=DELIVER_TASK)
async def deliver(schema_name: str, delivery_id: int) -> None:
    """One attempt of one delivery."""
    attempt = await in_schema(schema_name, _load, delivery_id)
    if attempt is None:
        return
    status_code, error = await _post(_client(), attempt)
    outcome = await in_schema(schema_name, _finish, schema_name, delivery_id, status_code, error)
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    logger.info("webhook delivery %s attempt: %s (%s)", delivery_id, outcome, status_code or error)


# croniter's sixth field is seconds: every WEBHOOK_STALLED_CHECK_SECONDS.
@app.periodic(cron=f"* * * * * */{settings.WEBHOOK_STALLED_CHECK_SECONDS}")
@app.task(
    name="integrations.retry_stalled_jobs", queueing_lock="retry_stalled_jobs", pass_context=True
)
async def retry_stalled_jobs(context: JobContext, timestamp: int) -> None:
    """Jobs of a worker that died (SIGKILL, OOM) without finishing them are run again: the
    delivery may then reach its endpoint twice, with the same `webhook-id` (at least once)."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=settings.WEBHOOK_STALLED_SECONDS
    )
    for job in stalled:
        await manager.retry_job(job)
        logger.info("webhook job %s of a dead worker queued again", job.id)


@app.periodic(cron="17 * * * *")
@app.task(name="integrations.remove_old_jobs", queueing_lock="remove_old_jobs", pass_context=True)
async def remove_old_jobs(context: JobContext, timestamp: int) -> None:
    """Finished Procrastinate jobs older than a day go (every hour): the delivery log is the
    `Delivery` rows, a job is only the vehicle of one attempt."""
    await context.app.job_manager.delete_old_jobs(
        nb_hours=24, include_failed=True, include_cancelled=True, include_aborted=True
    )


def _remove_finished_deliveries(older_than: timedelta) -> int:
    """Delivered and failed deliveries of the current schema older than `older_than`; pending
    ones stay whatever their age (their retries are still to come)."""
    from integrations.models import Delivery

    deleted, _ = (
        Delivery.objects.filter(created_at__lt=timezone.now() - older_than)
        .exclude(state=Delivery.State.PENDING)
        .delete()
    )
    return deleted


@app.periodic(cron="23 * * * *")
@app.task(name="integrations.remove_old_deliveries", queueing_lock="remove_old_deliveries")
async def remove_old_deliveries(timestamp: int) -> int:
    """Every hour, in every tenant: the delivery log keeps finished deliveries
    WEBHOOK_DELIVERY_RETENTION_DAYS days (the contract's "every delivery" is the log of that
    window). Returns how many went."""
    older_than = timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS)
    removed = 0
    for schema_name in await in_schema(get_public_schema_name(), tenant_schema_names):
        removed += await in_schema(schema_name, _remove_finished_deliveries, older_than)
    if removed:
        logger.info("removed %d finished webhook deliveries", removed)
    return removed
