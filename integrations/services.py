"""Writes of the integration API (keys, signing keys, server tokens, webhooks). Each runs in
the request's tenant schema (REST views only) and takes the tenant's schema explicitly."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.serializers import TenantTokenObtainPairSerializer
from chat import events
from chat.protocol import CloseCode
from integrations import webhooks
from integrations.identity import external_user
from integrations.jwks import parse_public_jwk
from integrations.models import ApiKey, Delivery, SigningKey, Webhook
from integrations.tasks import wake
from tenants.context import run_in_schema


class IntegrationError(Exception):
    """A refused request, answered 400 under `field` (or 404 with `not_found`)."""

    def __init__(self, field: str, detail: str, *, not_found: bool = False) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
        self.not_found = not_found


def api_key_create(*, schema_name: str, user: Any, name: str) -> tuple[ApiKey, str]:
    """A new server key acting as `user`; returns it with the key, which is never stored."""
    return run_in_schema(schema_name, lambda: ApiKey.objects.create_key(name=name, user=user))


def api_key_revoke(*, schema_name: str, key_id: str) -> bool:
    """Revoke at once: the key is looked up on every request, nothing caches it."""
    return bool(
        run_in_schema(
            schema_name, ApiKey.objects.filter(prefix=key_id, revoked=False).update, revoked=True
        )
    )


def signing_key_add(*, schema_name: str, jwk: Any) -> SigningKey:
    try:
        kid, kty, alg, public = parse_public_jwk(jwk)
    except ValueError as exc:
        raise IntegrationError("jwk", str(exc)) from exc

    def add() -> SigningKey:
        try:
            with transaction.atomic():
                return SigningKey.objects.create(kid=kid, kty=kty, alg=alg, jwk=public)
        except IntegrityError:
            raise IntegrationError("jwk", "A signing key with this `kid` exists.") from None

    return run_in_schema(schema_name, add)


def signing_key_remove(*, schema_name: str, kid: str) -> bool:
    """Revoke a signing key: tokens it signed are refused from the next request on, and the
    sockets that stand on them close with 4401 on every process (the kick; chat/authz.py's
    periodic re-check closes them too should the kick be lost)."""

    def remove() -> int | None:
        key = SigningKey.objects.filter(kid=kid).first()
        if key is None:
            return None
        deleted, _ = SigningKey.objects.filter(pk=key.pk).delete()
        return key.pk if deleted else None

    removed = run_in_schema(schema_name, remove)
    if removed is None:
        return False
    async_to_sync(events.close_signing_key_sockets)(schema_name, removed, CloseCode.UNAUTHORIZED)
    return True


def server_tokens_issue(
    *, schema_name: str, external_id: str, username: str | None, is_admin: bool | None
) -> dict[str, str]:
    """`{access, refresh}` for the tenant backend's user, created on first use."""
    from integrations.identity import IdentityError

    def issue() -> dict[str, str]:
        try:
            user, _ = external_user(external_id=external_id, username=username, is_admin=is_admin)
        except IdentityError as exc:
            raise IntegrationError(exc.field, exc.detail) from exc
        refresh: RefreshToken = TenantTokenObtainPairSerializer.get_token(user)
        return {"access": str(refresh.access_token), "refresh": str(refresh)}

    return run_in_schema(schema_name, issue)


def _check_url(url: str) -> None:
    problem = webhooks.url_problem(url)
    if problem:
        raise IntegrationError("url", problem)


def webhook_create(*, schema_name: str, url: str, events: list[str], is_active: bool) -> Webhook:
    _check_url(url)
    return run_in_schema(
        schema_name,
        Webhook.objects.create,
        url=url,
        events=events,
        is_active=is_active,
        secret=webhooks.new_secret(),
    )


def webhook_update(*, schema_name: str, webhook: Webhook, changes: dict[str, Any]) -> Webhook:
    if "url" in changes:
        _check_url(changes["url"])
    for field, value in changes.items():
        setattr(webhook, field, value)
    run_in_schema(schema_name, webhook.save, update_fields=list(changes) or None)
    return webhook


def delivery_retry(*, schema_name: str, delivery: Delivery) -> Delivery:
    """One more attempt now, with the same `webhook-id` (and body) as before."""

    def retry() -> Delivery:
        with transaction.atomic():
            Delivery.objects.filter(pk=delivery.pk).update(
                state=Delivery.State.PENDING, due_at=timezone.now()
            )
            wake(schema_name)
        delivery.refresh_from_db()
        return delivery

    return run_in_schema(schema_name, retry)
