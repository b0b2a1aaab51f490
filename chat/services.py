"""Every chat operation that writes or has a side effect. REST views and consumers both call
these; there is no second way to send a message. Each validates, persists, then publishes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from chat import events
from chat.models import ROOM_SLUG_PATTERN, Membership, Message, Room
from chat.protocol import CloseCode, ErrorCode
from config.metrics import MESSAGES_PERSISTED
from tenants.context import in_schema, run_in_schema
from tenants.models import Tenant

_SLUG = re.compile(rf"^{ROOM_SLUG_PATTERN}$")


class ChatError(Exception):
    """A request the contract answers with an error frame (or a 4xx over REST)."""

    def __init__(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra

    def frame(self) -> dict[str, Any]:
        return events.error(self.code, self.detail, **self.extra)


@dataclass(frozen=True, slots=True)
class Actor:
    """The user a service acts for, as the transport already knows it (no query needed)."""

    id: int
    username: str
    is_admin: bool

    @classmethod
    def of(cls, user: Any) -> Actor:
        return cls(id=user.pk, username=user.get_username(), is_admin=bool(user.is_staff))


@dataclass(frozen=True, slots=True)
class RoomRef:
    id: int
    slug: str
    is_private: bool


def is_valid_room_slug(slug: str) -> bool:
    return bool(_SLUG.match(slug))


def clean_message_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ChatError(ErrorCode.INVALID_FRAME, "`message` must be a string.")
    if not body.strip():
        raise ChatError(ErrorCode.EMPTY_MESSAGE, "`message` is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(body) > limit:
        raise ChatError(ErrorCode.MESSAGE_TOO_LONG, f"`message` is over {limit} characters.")
    return body


def clean_client_id(client_id: Any) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 64:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "`client_id` must be a string of 1 to 64 characters."
        )
    return client_id


def _join(schema_name: str, slug: str, actor: Actor) -> RoomRef:
    # Checked again here, after the socket joined its groups, so that a deactivation that
    # raced with the handshake is either seen now or reaches the socket as a kick.
    if not Tenant.objects.filter(schema_name=schema_name, is_active=True).exists():
        raise ChatError(ErrorCode.UNAUTHORIZED, "Tenant is deactivated.")
    if not get_user_model().objects.filter(pk=actor.id, is_active=True).exists():
        raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated.")
    room, _ = Room.objects.get_or_create(
        slug=slug, defaults={"name": slug, "created_by_id": actor.id}
    )
    if room.is_private and not Membership.objects.filter(room=room, user_id=actor.id).exists():
        raise ChatError(ErrorCode.FORBIDDEN, "This room is private.")
    return RoomRef(id=room.pk, slug=room.slug, is_private=room.is_private)


async def room_join(*, schema_name: str, slug: str, actor: Actor) -> RoomRef:
    """The room a socket joins: created as a public room if missing; private needs membership.

    Raises ChatError FORBIDDEN (not a member) or UNAUTHORIZED (user or tenant deactivated).
    """
    return await in_schema(schema_name, _join, schema_name, slug, actor)


def room_create(*, schema_name: str, actor: Actor, slug: str, name: str, is_private: bool) -> Room:
    """Create a room; the creator of a private room becomes its first member."""

    def create() -> Room:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug, name=name or slug, is_private=is_private, created_by_id=actor.id
            )
            if is_private:
                Membership.objects.create(room=room, user_id=actor.id)
        return Room.objects.get(pk=room.pk)  # read back db defaults (created_at)

    return run_in_schema(schema_name, create)


def room_update(
    *, schema_name: str, room: Room, name: str | None = None, is_private: bool | None = None
) -> Room:
    """Rename a room or change its visibility."""

    def update() -> Room:
        if name is not None:
            room.name = name
        if is_private is not None:
            room.is_private = is_private
        room.save(update_fields=["name", "is_private"])
        return room

    return run_in_schema(schema_name, update)


def room_delete(*, schema_name: str, room: Room) -> None:
    """Delete a room with its messages; its open sockets on every process close with 4403."""
    run_in_schema(schema_name, room.delete)
    async_to_sync(events.close_group)(
        events.room_group_name(schema_name, room.slug), CloseCode.FORBIDDEN
    )


def room_member_add(*, schema_name: str, room: Room, user_id: int) -> tuple[Membership, bool]:
    """Give a user access to a (private) room; returns the membership and whether it is new."""

    def add() -> tuple[Membership, bool]:
        if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
            raise ChatError(ErrorCode.NOT_FOUND, "No active user with this id.")
        return Membership.objects.get_or_create(room=room, user_id=user_id)

    return run_in_schema(schema_name, add)


def room_member_remove(*, schema_name: str, room: Room, user_id: int) -> bool:
    """Take a user out of a room: their sockets in it, on every process, close with 4403."""
    deleted, _ = run_in_schema(
        schema_name, Membership.objects.filter(room=room, user_id=user_id).delete
    )
    async_to_sync(events.kick_from_room)(schema_name, user_id, room.slug, CloseCode.FORBIDDEN)
    return bool(deleted)


def _persist_message(
    room_id: int, user_id: int, body: str, client_id: str | None
) -> tuple[Message, bool]:
    """One INSERT ... RETURNING (the trigger assigns `seq` in the same statement)."""
    try:
        return (
            Message.objects.create(
                room_id=room_id, user_id=user_id, body=body, client_id=client_id
            ),
            True,
        )
    except IntegrityError:
        # Same client_id from the same user in the same room: the failed statement rolled
        # back its seq increment too, and the sender gets the original message back.
        if client_id is None:
            raise
        original = Message.objects.get(room_id=room_id, user_id=user_id, client_id=client_id)
        return original, False


async def message_send(
    *, schema_name: str, room: RoomRef, actor: Actor, body: Any, client_id: Any = None
) -> tuple[dict[str, Any], bool]:
    """Persist a message, then broadcast it to the room on every process.

    Returns the `chat.message` frame and whether it is new; a resend with a known
    `client_id` returns the original frame and broadcasts nothing.
    """
    text = clean_message_body(body)
    cid = clean_client_id(client_id)
    message, created = await in_schema(schema_name, _persist_message, room.id, actor.id, text, cid)
    frame = events.chat_message(
        message_id=message.pk,
        seq=message.seq,
        room=room.slug,
        user=actor.username,
        body=message.body,
        client_id=message.client_id,
        created_at=message.created_at,
        edited_at=message.edited_at,
    )
    if created:
        MESSAGES_PERSISTED.labels(schema_name).inc()
        # The row is committed (autocommit) before any socket can see the frame.
        await events.broadcast(events.room_group_name(schema_name, room.slug), events.encode(frame))
    return frame, created
