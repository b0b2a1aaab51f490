"""Webhooks: the events of PROTOCOL section 5, recorded in the transaction of the change they
report, signed as Standard Webhooks says, and delivered by Procrastinate workers.

`record` is the one hook the write services call. It inserts one `Delivery` per matching
webhook in the transaction of the change, so the event and the change commit or roll back
together: no event for a rolled-back change, none lost for a committed one, whatever process
dies when. After the commit it wakes the tenant's drain (`integrations.tasks`) unless one is
working; a wake-up lost to a process dying right after the commit is made up by the periodic
`wake_due_deliveries`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from tenants.context import current_schema

EVENTS = (
    "message.created",
    "message.edited",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "room.created",
    "room.updated",
    "room.deleted",
    "member.added",
    "member.removed",
    "user.created",
    "user.deactivated",
)
ALL_EVENTS = "*"
SECRET_PREFIX = "whsec_"

Data = dict[str, Any] | Callable[[], dict[str, Any]]


# --- recording ------------------------------------------------------------------------------


def record(event: str, data: Data) -> None:
    """Record `event` for every active webhook of the current tenant that wants it.

    Call it inside the transaction of the change (it refuses to run outside one), in the
    tenant's schema. `data` may be a callable, built only when some webhook wants the event,
    so a tenant without webhooks pays one indexed query and nothing else."""
    from integrations.models import Delivery, Webhook
    from integrations.tasks import wake_after_commit

    assert event in EVENTS, event
    if not connection.in_atomic_block:
        raise RuntimeError("webhooks.record() must run in the transaction of the change")
    hooks = list(
        Webhook.objects.filter(is_active=True)
        .filter(Q(events__contains=[event]) | Q(events__contains=[ALL_EVENTS]))
        .values_list("pk", flat=True)
    )
    if not hooks:
        return
    payload = {
        "type": event,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "data": data() if callable(data) else data,
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    Delivery.objects.bulk_create(
        [
            Delivery(webhook_id=hook, event=event, message_id=f"msg_{uuid.uuid4().hex}", body=body)
            for hook in hooks
        ]
    )
    wake_after_commit(current_schema())


# --- payloads (section 5: `data` of each event) ---------------------------------------------


def user_data(user: Any) -> dict[str, Any]:
    return {
        "user": {"id": user.pk, "username": user.get_username(), "is_admin": bool(user.is_staff)}
    }


def room_data(room: Any) -> dict[str, Any]:
    from chat.services import room_object

    return {"room": room_object(room)}


def member_data(room: Any, user_id: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id).only("username").first()
    return {"room": room.slug, "user": {"id": user_id, "username": user and user.get_username()}}


def message_data(message_id: int, frame_type: str | None = None) -> dict[str, Any]:
    """`{room, message: <chat.message frame>}` of a stored message (read inside the change's
    transaction, so it is the state being committed)."""
    from chat import attachments, events
    from chat.models import Message

    message = Message.objects.select_related("room", "user").get(pk=message_id)
    kwargs = {"frame_type": frame_type} if frame_type else {}
    frame = events.chat_message(
        message,
        room=message.room.slug,
        user=message.user.get_username(),
        attachments=attachments.objects_of_message(message_id),
        **kwargs,
    )
    return {"room": message.room.slug, "message": frame}


def message_deleted_data(message: Any) -> dict[str, Any]:
    """`{room, message: {id, seq}}`: a deleted message's text is not sent anywhere."""
    from chat.models import Room

    slug = Room.objects.values_list("slug", flat=True).get(pk=message.room_id)
    return {"room": slug, "message": {"id": message.pk, "seq": message.seq}}


# --- signing (Standard Webhooks) ------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, keyed with the secret's bytes
    (the base64 after `whsec_`), as the Standard Webhooks specification says."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- where a webhook may point --------------------------------------------------------------


# NAT64 (RFC 6052) and 6to4 (RFC 3056) carry an IPv4 address inside an IPv6 one, and a gateway
# forwards to it: Python 3.11's `ipaddress` calls them global whatever they embed, so the
# embedded IPv4 is judged instead. The local-use NAT64 prefix (RFC 8215) may map to anything
# of the operator's: refused whole. Teredo (2001::/32) is already non-global (2001::/23).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, NAT64 or 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip.is_site_local:
            return False
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            return _public(embedded)
    elif ip in _SHARED:
        return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    )


def address_refused(address: str) -> bool:
    """The address rule of section 5: loopback, private, link-local, shared (100.64.0.0/10),
    unique-local, unspecified, multicast and reserved addresses, and IPv6 addresses that
    embed one, are refused unless WEBHOOK_ALLOW_PRIVATE; so is anything that does not parse."""
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone id (fe80::1%eth0) goes
    except ValueError:
        return True
    return not _public(ip)


def url_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL; ValueError if it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL.")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (blocking; the REST thread's check at save time)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def url_problem(url: str) -> str | None:
    """Why this URL may not be a webhook's target, or None (checked again at delivery time,
    against the addresses then resolved: DNS rebinding)."""
    try:
        _, host, port = url_target(url)
        # The HTTP client's own parser: what it refuses (a control character in the path,
        # which Django's URL validator lets through) could never be attempted.
        httpx.URL(url)
    except httpx.InvalidURL:
        return "is not a URL the HTTP client accepts (control characters?)."
    except ValueError as exc:
        return str(exc)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        return "The host does not resolve."
    if any(address_refused(a) for a in addresses):
        return "resolves to a loopback, private, link-local or otherwise non-public address."
    return None
