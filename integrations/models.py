"""Per-tenant rows of the integration API; the app is a TENANT_APP, so every table lives in
the tenant's own schema and a key, signing key or webhook of one tenant is unknown on another
tenant's host by construction."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

EXTERNAL_ID_MAX = 128


class ApiKey(AbstractAPIKey):
    """A server API key (djangorestframework-api-key: only a SHA-512 hash of the key is kept).

    The key acts as the tenant admin who created it (`user`): it stops working when that
    user is deactivated, and loses admin rights when they are demoted."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta(AbstractAPIKey.Meta):
        abstract = False


class ExternalIdentity(models.Model):
    """The tenant backend's own id of a user (`sub` of its tokens, `user` of server tokens)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identity"
    )
    external_id = models.CharField(max_length=EXTERNAL_ID_MAX, unique=True)

    def __str__(self) -> str:
        return self.external_id


class SigningKey(models.Model):
    """A public JWK with which the tenant's backend signs its users' access tokens."""

    kid = models.CharField(max_length=255, unique=True)
    kty = models.CharField(max_length=8)
    alg = models.CharField(max_length=8)  # pinned per key type: RS256, ES256 or EdDSA
    jwk = models.JSONField()  # the public members only
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.kid


class Webhook(models.Model):
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    secret = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class Delivery(models.Model):
    """One event for one webhook, recorded in the transaction of the change it reports.

    A pending delivery is attempted once `due_at` has passed, by whichever drain job of the
    tenant claims it first (`integrations.tasks`); `leased_until` marks an attempt in flight
    (claimed, not yet logged), so the per-webhook and per-tenant bounds are counted here,
    across worker processes, and an attempt of a killed worker is taken up again once its
    lease has run out."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32)
    message_id = models.CharField(max_length=64, unique=True)  # `webhook-id`, kept on retries
    body = models.TextField()  # the exact bytes signed and sent, the same on every attempt
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.JSONField(default=list)  # [{at, status_code, error}]
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(default=timezone.now)  # the next attempt may start then
    leased_until = models.DateTimeField(null=True)  # an attempt is in flight until then

    class Meta:
        indexes = [
            models.Index(fields=["webhook", "-id"]),
            # A drain's claim: per webhook, the oldest due pending deliveries.
            models.Index(
                fields=["webhook", "due_at", "id"],
                condition=models.Q(state="pending"),
                name="integrations_delivery_due",
            ),
            # The attempts in flight (the bounds of a claim count them).
            models.Index(
                fields=["webhook"],
                condition=models.Q(leased_until__isnull=False),
                name="integrations_delivery_leased",
            ),
        ]

    def __str__(self) -> str:
        return self.message_id


class DrainLease(models.Model):
    """Which drain job works the tenant's deliveries now (at most one row): the holder
    renews it at every claim, so one drain per tenant holds a worker slot, and a drain of a
    killed worker is replaced once `until` has passed."""

    holder = models.CharField(max_length=32)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return self.holder
