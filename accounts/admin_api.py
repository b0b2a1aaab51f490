"""Tenant admin API: `/api/users/` (list, create, show, change, deactivate)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import services
from accounts.permissions import IsTenantAdmin
from tenants.context import current_schema

User = get_user_model()


def _username_taken() -> ValidationError:
    # The words of the serializer's own uniqueness check, which lost a race to this one.
    return ValidationError({"username": ["A user with that username already exists."]})


class UserSerializer(serializers.ModelSerializer):
    is_admin = serializers.BooleanField(source="is_staff", required=False)
    password = serializers.CharField(
        write_only=True, min_length=8, max_length=128, style={"input_type": "password"}
    )

    class Meta:
        model = User
        fields = ["id", "username", "password", "is_admin", "is_active", "date_joined"]
        read_only_fields = ["id", "date_joined"]

    def validate_password(self, value: str) -> str:
        validate_password(value)
        return value


class UserUpdateSerializer(UserSerializer):
    password = serializers.CharField(write_only=True, min_length=8, max_length=128, required=False)

    class Meta(UserSerializer.Meta):
        extra_kwargs = {"username": {"required": False}}


@extend_schema_view(
    list=extend_schema(summary="List the tenant's users"),
    create=extend_schema(summary="Create a user"),
    retrieve=extend_schema(summary="Show a user"),
    partial_update=extend_schema(summary="Change a user (is_active=false deactivates)"),
    destroy=extend_schema(
        summary="Deactivate a user: tokens stop working, open sockets close with 4401",
        responses={204: None},
    ),
)
class UserViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    permission_classes = [IsTenantAdmin]
    queryset = User.objects.order_by("id")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return UserUpdateSerializer if self.action == "partial_update" else UserSerializer

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        try:
            serializer.instance = services.user_create(
                schema_name=current_schema(),
                username=data["username"],
                password=data["password"],
                is_admin=data.get("is_staff", False),
            )
        except services.UsernameTaken as exc:
            raise _username_taken() from exc

    def perform_update(self, serializer: Any) -> None:
        data = serializer.validated_data
        if data.get("is_active") is False and serializer.instance.pk == self.request.user.pk:
            raise ValidationError({"is_active": ["You cannot deactivate yourself."]})
        try:
            serializer.instance = services.user_update(
                schema_name=current_schema(),
                user=serializer.instance,
                username=data.get("username"),
                password=data.get("password"),
                is_admin=data.get("is_staff"),
                is_active=data.get("is_active"),
            )
        except services.UsernameTaken as exc:
            raise _username_taken() from exc

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        user = self.get_object()
        if user.pk == request.user.pk:
            return Response(
                {"detail": "You cannot deactivate yourself."}, status=status.HTTP_400_BAD_REQUEST
            )
        services.user_deactivate(schema_name=current_schema(), user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)
