"""`Authorization: Api-Key <key>`: the tenant's backend, acting as the admin who made the key.

The key is looked up in the request's tenant schema (djangorestframework-api-key's prefix
lookup and hash check), so a key of tenant A is unknown on tenant B's host: 401. Nothing is
cached: a revoked key fails on the very next request, on every process."""

from __future__ import annotations

from typing import Any

from django_tenants.utils import get_public_schema_name
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework_api_key.permissions import KeyParser

from integrations.models import ApiKey
from tenants.context import current_schema

KEYWORD = KeyParser.keyword  # "Api-Key"


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates as the key's user; 401 for an unknown, revoked or foreign key, or a key
    whose user was deactivated."""

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        key = KeyParser().get_from_authorization(request)  # type: ignore[arg-type]
        if key is None:
            return None
        if current_schema() == get_public_schema_name():
            raise AuthenticationFailed("API keys work on their tenant's host only.")
        try:
            api_key = ApiKey.objects.get_from_key(key.strip())
        except ApiKey.DoesNotExist:
            raise AuthenticationFailed("Invalid API key.") from None
        if api_key.has_expired or not api_key.user.is_active:
            raise AuthenticationFailed("Invalid API key.")
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD
