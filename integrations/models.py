"""Per-tenant rows of the integration API; the app is a TENANT_APP, so every table lives in
the tenant's own schema and a key, signing key or webhook of one tenant is unknown on another
tenant's host by construction."""

from __future__ import annotations

from django.conf import settings
from django.db import models
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
    """One event for one webhook, recorded in the transaction of the change it reports."""

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

    class Meta:
        indexes = [models.Index(fields=["webhook", "-id"])]

    def __str__(self) -> str:
        return self.message_id
