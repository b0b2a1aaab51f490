"""Token endpoints and `/api/me/` on tenant hosts (and the platform host for token obtain)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts.serializers import LogoutSerializer, MeSerializer
from accounts.throttling import LoginIPRateThrottle, LoginRateThrottle
from accounts.tokens import check_tenant_claim
from tenants.context import current_schema


class TokenObtainView(TokenObtainPairView):
    """`{username, password}` -> `{access, refresh}`, both carrying the tenant claim."""

    throttle_classes = [LoginRateThrottle, LoginIPRateThrottle]


class LogoutView(APIView):
    """Blacklists the given refresh token (access tokens expire on their own)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=LogoutSerializer, responses={205: None})
    def post(self, request: Request) -> Response:
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(serializer.validated_data["refresh"])
            check_tenant_claim(refresh, current_schema())
            if str(refresh.payload.get("user_id")) != str(request.user.pk):
                raise TokenError("Refresh token belongs to another user.")
            refresh.blacklist()
        except TokenError as exc:
            raise InvalidToken({"refresh": [str(exc)]}) from exc
        return Response(status=status.HTTP_205_RESET_CONTENT)


class MeView(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
