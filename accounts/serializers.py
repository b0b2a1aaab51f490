"""Token serializers that stamp and check the tenant claim, and the user's own view of itself."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.tokens import TENANT_CLAIM, check_tenant_claim
from tenants.context import current_schema


class TenantTokenObtainPairSerializer(TokenObtainPairSerializer):
    @classmethod
    def get_token(cls, user: Any) -> RefreshToken:
        token = super().get_token(user)
        # The request's tenant was selected from its Host by the tenant middleware.
        token[TENANT_CLAIM] = current_schema()
        token["username"] = user.get_username()
        return token  # type: ignore[return-value]


class TenantTokenRefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            check_tenant_claim(RefreshToken(attrs["refresh"]), current_schema())
        except TokenError as exc:
            raise InvalidToken(str(exc)) from exc
        try:
            return super().validate(attrs)
        except get_user_model().DoesNotExist as exc:
            raise InvalidToken("User not found.") from exc


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_admin = serializers.BooleanField(source="is_staff")
