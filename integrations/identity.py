"""Users of the tenant's own backend: found (or created on first use) by their external id,
from a server token request or from a token the tenant's backend signed with its own key.

Everything here runs inside the tenant's schema (a request thread, or `in_schema`)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from django import db
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django_tenants.utils import get_public_schema_name
from rest_framework_simplejwt.exceptions import TokenError

from accounts.tokens import TokenUser
from chat.budgets import user_create_budget_spend
from integrations import webhooks
from integrations.models import EXTERNAL_ID_MAX, ExternalIdentity, SigningKey
from tenants.context import current_schema

# A tenant-signed token lives at most this long (`exp` - `iat`), and may not be issued in the
# future past a small clock skew (else a far `iat` would stretch its life).
TENANT_TOKEN_MAX_LIFETIME = 24 * 3600
CLOCK_SKEW = 60


class IdentityError(Exception):
    """A refused external user: `field` names the request field it comes from."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


def clean_external_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= EXTERNAL_ID_MAX or "\x00" in value:
        raise IdentityError("user", f"must be a string of 1 to {EXTERNAL_ID_MAX} characters.")
    return value


def _clean_username(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 150:
        raise IdentityError("username", "must be a string of 1 to 150 characters.")
    try:
        UnicodeUsernameValidator()(value)
    except ValidationError as exc:
        raise IdentityError("username", " ".join(exc.messages)) from exc
    return value


def external_user(
    *, external_id: str, username: str | None = None, is_admin: bool | None = None
) -> tuple[Any, bool]:
    """The active user with this external id, created on first use (username defaults to the
    external id; a username that an unrelated user holds is refused, never taken over).
    Given `username` / `is_admin` are applied to an existing user. Returns (user, created).

    Many first uses at once (a first login over REST and WebSocket, on any pods) make one
    user: the losers of the INSERT find the winner's identity and use it."""
    found = _identity(external_id)
    if found is None:
        user_create_budget_spend(current_schema())  # USER_CREATE_RATE: 429 / 4429 when spent
        name = _clean_username(username if username is not None else external_id)
        user = _create_external_user(external_id, name, bool(is_admin))
        if user is not None:
            return user, True
        found = _identity(external_id)
        if found is None:  # the username is an unrelated user's, made at the same moment
            raise IdentityError("username", "A user with that username already exists.")
    return _update_external_user(found.user, username=username, is_admin=is_admin), False


def _identity(external_id: str) -> ExternalIdentity | None:
    return ExternalIdentity.objects.select_related("user").filter(external_id=external_id).first()


def _create_external_user(external_id: str, name: str, is_admin: bool) -> Any | None:
    """The new user with its identity and `user.created` event, or None when a concurrent
    first use (or an unrelated user) got the external id or the username first.

    The INSERT of a UNIQUE value that another transaction is inserting waits for it to end,
    and fails only once that one committed: so after the IntegrityError the winner's rows
    are visible to the next statement (READ COMMITTED). The savepoint keeps a caller's
    transaction usable."""
    User = get_user_model()
    if User.objects.filter(username=name).exists():
        return None
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=name, password=None, is_staff=is_admin)
            ExternalIdentity.objects.create(user=user, external_id=external_id)
            webhooks.record("user.created", lambda: webhooks.user_data(user))
    except db.IntegrityError:
        return None
    return user


def _update_external_user(user: Any, *, username: str | None, is_admin: bool | None) -> Any:
    if not user.is_active:
        raise IdentityError("user", "This user is deactivated.")
    changed = []
    if username is not None and username != user.get_username():
        user.username = _clean_username(username)
        changed.append("username")
    if is_admin is not None and is_admin != user.is_staff:
        user.is_staff = is_admin
        changed.append("is_staff")
    if not changed:
        return user
    taken = IdentityError("username", "A user with that username already exists.")
    User = get_user_model()
    if "username" in changed and User.objects.filter(username=user.username).exists():
        raise taken
    try:
        with transaction.atomic():  # another user renamed to the same name at this moment
            user.save(update_fields=changed)
    except db.IntegrityError:
        raise taken from None
    return user


# --- tokens signed by the tenant's backend -----------------------------------------------


def is_tenant_signed(raw: str) -> bool:
    """A token whose header names a `kid`: our own tokens carry none (simplejwt, HS256)."""
    try:
        return "kid" in jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        return False


def tenant_token_user(raw: str) -> TokenUser:
    """(user, exp, signing key id) of a token the tenant's backend signed with one of its
    signing keys, the user created on first use. Runs in the tenant's schema, so a `kid` of
    another tenant is simply unknown; the public schema (the platform host) has no signing
    keys at all. The algorithm is the key's own (pinned at registration): `none`, HMAC or
    any other than the key's is refused. Raises TokenError (401 / 4401)."""
    if current_schema() == get_public_schema_name():
        # Not a query: the platform's schema has no signing-key table (a 500 before).
        raise TokenError("Unknown signing key.")
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError as exc:
        raise TokenError("Malformed token.") from exc
    kid = header.get("kid")
    key = SigningKey.objects.filter(kid=kid).first() if isinstance(kid, str) else None
    if key is None:
        raise TokenError("Unknown signing key.")
    if header.get("alg") != key.alg:
        raise TokenError("Algorithm does not match the signing key.")
    try:
        claims = jwt.decode(
            raw,
            jwt.PyJWK(key.jwk, algorithm=key.alg).key,
            algorithms=[key.alg],
            options={"require": ["exp", "iat", "sub"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        # PyJWT's int() of `exp`/`iat` lets OverflowError out (`1e400` is infinity).
        raise TokenError("Invalid token.") from exc
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
        raise TokenError("`exp` and `iat` must be numbers.")
    if exp - iat > TENANT_TOKEN_MAX_LIFETIME or iat > time.time() + CLOCK_SKEW:
        raise TokenError("Token lives longer than 24 hours.")
    is_admin = claims.get("is_admin")
    username = claims.get("username")
    if (is_admin is not None and not isinstance(is_admin, bool)) or (
        username is not None and not isinstance(username, str)
    ):
        raise TokenError("`is_admin` must be a boolean and `username` a string.")
    try:
        user, _ = external_user(
            external_id=clean_external_id(claims["sub"]), username=username, is_admin=is_admin
        )
    except IdentityError as exc:
        raise TokenError(f"`{exc.field}`: {exc.detail}") from exc
    return TokenUser(user, int(exp), key.pk)
