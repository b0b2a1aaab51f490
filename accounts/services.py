"""Writes on a tenant's users. Each takes the tenant's schema explicitly."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from chat import events
from chat.protocol import CloseCode
from integrations import webhooks
from tenants.context import run_in_schema


class UsernameTaken(Exception):
    """Another user holds (or has just taken) this username: a 400 naming `username`."""


def user_create(*, schema_name: str, username: str, password: str, is_admin: bool = False) -> Any:
    """Create an active user in the tenant's schema. Raises UsernameTaken when the name is
    another user's, also one created at the same moment (the serializer's uniqueness check
    cannot see a concurrent request's uncommitted row; the UNIQUE index can)."""

    def create() -> Any:
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user(
                    username=username, password=password, is_staff=is_admin
                )
                webhooks.record("user.created", lambda: webhooks.user_data(user))
        except IntegrityError:
            raise UsernameTaken(username) from None
        return user

    return run_in_schema(schema_name, create)


def user_update(
    *,
    schema_name: str,
    user: Any,
    username: str | None = None,
    password: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
) -> Any:
    """Change a user; turning `is_active` off is a deactivation (see `user_deactivate`).
    Raises UsernameTaken for a rename onto another user's name (see `user_create`)."""

    def update() -> Any:
        if username is not None:
            user.username = username
        if password is not None:
            user.set_password(password)
        if is_admin is not None:
            user.is_staff = is_admin
        if is_active is True:
            user.is_active = True
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            raise UsernameTaken(user.get_username()) from None
        return user

    updated = run_in_schema(schema_name, update)
    if is_active is False:
        user_deactivate(schema_name=schema_name, user=updated)
    return updated


def user_deactivate(*, schema_name: str, user: Any) -> None:
    """Deactivate: access tokens fail at once (every path checks `is_active`), refresh tokens
    are blacklisted, and the user's open sockets on every process close with 4401."""

    def deactivate() -> None:
        with transaction.atomic():
            user.is_active = False
            user.save(update_fields=["is_active"])
            outstanding = OutstandingToken.objects.filter(user_id=user.pk).exclude(
                blacklistedtoken__isnull=False
            )
            BlacklistedToken.objects.bulk_create(
                [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
            )
            webhooks.record("user.deactivated", lambda: webhooks.user_data(user))

    run_in_schema(schema_name, deactivate)
    async_to_sync(events.close_user)(schema_name, user.pk, CloseCode.UNAUTHORIZED)
