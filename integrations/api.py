"""REST of PROTOCOL section 5 on tenant hosts: `/api/keys/`, `/api/server/tokens/`,
`/api/signing-keys/`, `/api/webhooks/` (tenant admins; also with `Api-Key`)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsTenantAdmin
from integrations import services, webhooks
from integrations.models import EXTERNAL_ID_MAX, ApiKey, Delivery, SigningKey, Webhook
from integrations.services import IntegrationError
from tenants.context import current_schema


def _refusal(exc: IntegrationError) -> exceptions.APIException:
    if exc.not_found:
        return exceptions.NotFound(exc.detail)
    return exceptions.ValidationError({exc.field: [exc.detail]})


class HasApiKey(BasePermission):
    """The request came with `Authorization: Api-Key` (the tenant's backend itself)."""

    message = "This endpoint needs `Authorization: Api-Key <key>`."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey) and bool(request.user.is_staff)


# --- API keys -------------------------------------------------------------------------------


class ApiKeySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="prefix", read_only=True)
    name = serializers.CharField(max_length=50)
    created_at = serializers.DateTimeField(source="created", read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at"]
        read_only_fields = ["prefix"]


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown only in this answer.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyListCreateView(generics.ListAPIView):
    """Server API keys of this tenant (revoked ones are not listed)."""

    permission_classes = [IsTenantAdmin]
    serializer_class = ApiKeySerializer

    def get_queryset(self) -> Any:
        return ApiKey.objects.filter(revoked=False).order_by("-created")

    @extend_schema(request=ApiKeySerializer, responses={201: NewApiKeySerializer})
    def post(self, request: Request) -> Response:
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, key = services.api_key_create(
            schema_name=current_schema(), user=request.user, name=serializer.validated_data["name"]
        )
        api_key.key = key  # type: ignore[attr-defined]
        return Response(NewApiKeySerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, key_id: str) -> Response:
        """Revoke the key: the next request with it is a 401, on every process."""
        if not services.api_key_revoke(schema_name=current_schema(), key_id=key_id):
            raise exceptions.NotFound("No such API key.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- server tokens --------------------------------------------------------------------------


class ServerTokenSerializer(serializers.Serializer):
    user = serializers.CharField(
        max_length=EXTERNAL_ID_MAX, trim_whitespace=False, help_text="The external id"
    )
    username = serializers.CharField(max_length=150, required=False, trim_whitespace=False)
    is_admin = serializers.BooleanField(required=False)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class ServerTokenView(APIView):
    """`{access, refresh}` for the tenant backend's user, created on first use."""

    permission_classes = [HasApiKey]
    # Not the per-user write bucket: the backend mints tokens for all its users at their
    # logins, through one key (whose user's bucket would answer 429 after a burst of 20).
    throttle_classes: list[Any] = []

    @extend_schema(request=ServerTokenSerializer, responses={200: TokenPairSerializer})
    def post(self, request: Request) -> Response:
        serializer = ServerTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            tokens = services.server_tokens_issue(
                schema_name=current_schema(),
                external_id=data["user"],
                username=data.get("username"),
                is_admin=data.get("is_admin"),
            )
        except IntegrationError as exc:
            raise _refusal(exc) from exc
        return Response(tokens)


# --- signing keys ---------------------------------------------------------------------------


class SigningKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningKey
        fields = ["kid", "kty", "alg", "created_at"]
        read_only_fields = fields


class SigningKeyCreateSerializer(serializers.Serializer):
    jwk = serializers.JSONField(help_text="A public JWK: RSA >= 2048 bits, EC P-256 or Ed25519")


class SigningKeyListCreateView(generics.ListAPIView):
    permission_classes = [IsTenantAdmin]
    serializer_class = SigningKeySerializer
    queryset = SigningKey.objects.order_by("-created_at")

    @extend_schema(request=SigningKeyCreateSerializer, responses={201: SigningKeySerializer})
    def post(self, request: Request) -> Response:
        serializer = SigningKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            key = services.signing_key_add(
                schema_name=current_schema(), jwk=serializer.validated_data["jwk"]
            )
        except IntegrationError as exc:
            raise _refusal(exc) from exc
        return Response(SigningKeySerializer(key).data, status=status.HTTP_201_CREATED)


class SigningKeyDetailView(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, kid: str) -> Response:
        """Revoke: tokens signed with this key are refused from the next request on."""
        if not services.signing_key_remove(schema_name=current_schema(), kid=kid):
            raise exceptions.NotFound("No such signing key.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- webhooks -------------------------------------------------------------------------------


class WebhookSerializer(serializers.ModelSerializer):
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(
        child=serializers.CharField(max_length=32), min_length=1, max_length=len(webhooks.EVENTS)
    )

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "is_active"]
        read_only_fields = ["id"]

    def validate_events(self, value: list[str]) -> list[str]:
        allowed = {*webhooks.EVENTS, webhooks.ALL_EVENTS}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise serializers.ValidationError(f"Unknown events: {', '.join(unknown)}.")
        if webhooks.ALL_EVENTS in value and len(value) > 1:
            raise serializers.ValidationError('"*" stands alone.')
        return sorted(set(value))


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_...; shown only here")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookListCreateView(generics.ListAPIView):
    permission_classes = [IsTenantAdmin]
    serializer_class = WebhookSerializer
    queryset = Webhook.objects.order_by("id")

    @extend_schema(request=WebhookSerializer, responses={201: NewWebhookSerializer})
    def post(self, request: Request) -> Response:
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            hook = services.webhook_create(
                schema_name=current_schema(),
                url=data["url"],
                events=data["events"],
                is_active=data.get("is_active", True),
            )
        except IntegrationError as exc:
            raise _refusal(exc) from exc
        return Response(NewWebhookSerializer(hook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(generics.RetrieveDestroyAPIView):
    permission_classes = [IsTenantAdmin]
    serializer_class = WebhookSerializer
    queryset = Webhook.objects.all()

    @extend_schema(request=WebhookSerializer, responses={200: WebhookSerializer})
    def patch(self, request: Request, pk: int) -> Response:
        hook = self.get_object()
        serializer = WebhookSerializer(hook, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            services.webhook_update(
                schema_name=current_schema(), webhook=hook, changes=dict(serializer.validated_data)
            )
        except IntegrationError as exc:
            raise _refusal(exc) from exc
        return Response(WebhookSerializer(hook).data)


class DeliverySerializer(serializers.ModelSerializer):
    class AttemptSerializer(serializers.Serializer):
        at = serializers.CharField()
        status_code = serializers.IntegerField(allow_null=True)
        error = serializers.CharField(allow_null=True)

    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "event", "state", "created_at", "attempts"]
        read_only_fields = fields


class DeliveryListView(generics.ListAPIView):
    """Every delivery of the webhook, newest first."""

    permission_classes = [IsTenantAdmin]
    serializer_class = DeliverySerializer

    def get_queryset(self) -> Any:
        hook = generics.get_object_or_404(Webhook.objects.all(), pk=self.kwargs["pk"])
        return Delivery.objects.filter(webhook=hook).order_by("-id")


class DeliveryRetryView(APIView):
    permission_classes = [IsTenantAdmin]

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request: Request, pk: int, delivery_id: int) -> Response:
        """One more attempt now, with the same `webhook-id`."""
        delivery = generics.get_object_or_404(
            Delivery.objects.select_related("webhook"), pk=delivery_id, webhook_id=pk
        )
        if not delivery.webhook.is_active:
            # Its job would find the webhook inactive and send nothing.
            raise exceptions.ValidationError({"webhook": ["This webhook is inactive."]})
        delivery = services.delivery_retry(schema_name=current_schema(), delivery=delivery)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
