"""Procrastinate tasks of the chat app (autodiscovered by procrastinate.contrib.django; run by
the worker processes, `manage.py webhook_worker`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from procrastinate.contrib.django import app

from chat.attachments import sweep_tenants

logger = logging.getLogger(__name__)


def _sweep() -> dict[str, int]:
    try:
        return sweep_tenants(older_than=timedelta(hours=settings.ATTACHMENT_UNLINKED_HOURS))
    finally:
        close_old_connections()


@app.periodic(cron="41 * * * *")
@app.task(name="chat.sweep_attachments", queueing_lock="sweep_attachments")
async def sweep_attachments(timestamp: int) -> int:
    """Every hour: uploads never attached to a message, older than ATTACHMENT_UNLINKED_HOURS,
    go in every tenant (rows, then their files). One run at a time across all workers."""
    removed = await sync_to_async(_sweep, thread_sensitive=False)()
    total = sum(removed.values())
    if total:
        logger.info("removed %d unlinked attachments", total)
    return total
