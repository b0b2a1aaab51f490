"""Every chat operation that writes or has a side effect. REST views and consumers both call
these; there is no second way to send a message. Each validates, persists, then publishes."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Exists, F
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from chat import events
from chat.budgets import room_create_bucket
from chat.models import (
    DM_SLUG_PREFIX,
    MAX_REACTION_KINDS,
    ROOM_SLUG_PATTERN,
    Membership,
    Message,
    Reaction,
    ReadMarker,
    Room,
)
from chat.protocol import CloseCode, ErrorCode, ServerFrame
from chat.ratelimit import round_wait
from infra.metrics import MESSAGES_PERSISTED
from integrations import webhooks
from integrations.models import SigningKey, Webhook
from tenants.context import current_schema, in_schema, run_in_schema
from tenants.models import Tenant

_SLUG = re.compile(ROOM_SLUG_PATTERN)


class ChatError(Exception):
    """A request the contract answers with an error frame (or a 4xx over REST)."""

    def __init__(
        self, code: ErrorCode, detail: str, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field  # the request field at fault, named by a REST 400
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
    # fullmatch: `^...$` also accepts a trailing newline (`general\n`), a room no URL reaches.
    return bool(_SLUG.fullmatch(slug))


def clean_message_body(body: Any, *, allow_empty: bool = False) -> str:
    """`allow_empty`: a message with attachments may have no text (absent or blank)."""
    if body is None and allow_empty:
        return ""
    if not isinstance(body, str):
        raise ChatError(ErrorCode.INVALID_FRAME, "`message` must be a string.")
    if "\x00" in body:  # PostgreSQL text cannot hold NUL
        raise ChatError(ErrorCode.INVALID_FRAME, "`message` must not contain NUL characters.")
    if not body.strip() and not allow_empty:
        raise ChatError(ErrorCode.EMPTY_MESSAGE, "`message` is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(body) > limit:
        raise ChatError(ErrorCode.MESSAGE_TOO_LONG, f"`message` is over {limit} characters.")
    return body


def clean_client_id(client_id: Any) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 64 or "\x00" in client_id:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "`client_id` must be a string of 1 to 64 characters."
        )
    return client_id


def _check_active(schema_name: str, actor: Actor) -> None:
    # Checked again here, after the socket joined its groups, so that a deactivation that
    # raced with the handshake is either seen now or reaches the socket as a kick.
    if not Tenant.objects.filter(schema_name=schema_name, is_active=True).exists():
        raise ChatError(ErrorCode.UNAUTHORIZED, "Tenant is deactivated.")
    if not get_user_model().objects.filter(pk=actor.id, is_active=True).exists():
        raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated.")


async def access_check(*, schema_name: str, actor: Actor) -> None:
    """Raise ChatError UNAUTHORIZED unless both the tenant and the user are still active."""
    await in_schema(schema_name, _check_active, schema_name, actor)


def _join(schema_name: str, slug: str, actor: Actor, create: bool = True) -> RoomRef | None:
    _check_active(schema_name, actor)
    if create:
        with transaction.atomic():  # a room made by a join is reported like any other
            room, made = Room.objects.get_or_create(
                slug=slug, defaults={"name": slug, "created_by_id": actor.id}
            )
            if made:
                webhooks.record(
                    "room.created", lambda: webhooks.room_data(Room.objects.get(pk=room.pk))
                )
    else:
        found = Room.objects.filter(slug=slug).first()
        if found is None:
            return None
        room = found
    if room.is_private and not Membership.objects.filter(room=room, user_id=actor.id).exists():
        raise ChatError(ErrorCode.FORBIDDEN, "This room is private.")
    return RoomRef(id=room.pk, slug=room.slug, is_private=room.is_private)


def _admit(
    schema_name: str, user_id: Any, slug: str | None, signing_key_id: int | None = None
) -> tuple[Actor, RoomRef | None]:
    """ONE query for a handshake: the tenant active, the user active (and who they are), the
    signing key that verified the token still registered (if any), the room by slug and, if
    private, the user's membership."""
    quote = connection.ops.quote_name
    user_model = get_user_model()
    users = quote(user_model._meta.db_table)
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    username = quote(getattr(field, "column", user_model.USERNAME_FIELD))
    tenants = f"{quote(get_public_schema_name())}.{quote(Tenant._meta.db_table)}"
    rooms, members = quote(Room._meta.db_table), quote(Membership._meta.db_table)
    keys = quote(SigningKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT EXISTS (SELECT 1 FROM {tenants} WHERE schema_name = %s AND is_active),
                   u.id, u.{username}, u.is_staff, r.id, r.slug, r.is_private,
                   r.is_private AND EXISTS (
                       SELECT 1 FROM {members} m WHERE m.room_id = r.id AND m.user_id = u.id),
                   EXISTS (SELECT 1 FROM {keys} k WHERE k.id = %s)
              FROM (SELECT 1) AS one
              LEFT JOIN {users} u ON u.id = %s AND u.is_active
              LEFT JOIN {rooms} r ON r.slug = %s
            """,  # table names come from the models; values are parameters
            [schema_name, signing_key_id, user_id, slug],
        )
        row = cursor.fetchone()
    assert row is not None
    tenant_active, uid, name, staff, room_id, room_slug, private, member, key_kept = row
    if not tenant_active:
        raise ChatError(ErrorCode.UNAUTHORIZED, "Tenant is deactivated.")
    if uid is None:
        raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated or unknown.")
    if signing_key_id is not None and not key_kept:
        # Revoked after the middleware verified the token, before this socket could hear
        # the revocation's kick.
        raise ChatError(ErrorCode.UNAUTHORIZED, "The token's signing key was revoked.")
    actor = Actor(id=uid, username=name, is_admin=bool(staff))
    if room_id is None:
        return actor, None
    if private and not member:
        raise ChatError(ErrorCode.FORBIDDEN, "This room is private.")
    return actor, RoomRef(id=room_id, slug=room_slug, is_private=private)


async def socket_admit(
    *, schema_name: str, user_id: Any, slug: str | None = None, signing_key_id: int | None = None
) -> tuple[Actor, RoomRef | None]:
    """Who a socket's token names, checked after the socket joined its groups (so a
    deactivation, removal or privacy change that races with the handshake is either seen
    here or reaches the socket as a kick), with the room it joins: one query in the common
    case. A missing room is created as a public room (see `room_join`).

    Raises ChatError UNAUTHORIZED (user unknown or deactivated, tenant deactivated, the
    token's signing key revoked), FORBIDDEN (a private room without membership) or
    RATE_LIMITED (room budget spent)."""
    actor, room = await in_schema(schema_name, _admit, schema_name, user_id, slug, signing_key_id)
    if slug is not None and room is None:
        room = await room_join(schema_name=schema_name, slug=slug, actor=actor)
    return actor, room


def _refuse_if_room_budget_spent(wait: float) -> None:
    """`wait` from the user's room budget (ROOM_CREATE_RATE): 0 lets the room be created."""
    if wait:
        raise ChatError(
            ErrorCode.RATE_LIMITED, "Too many rooms created.", retry_after=round_wait(wait)
        )


async def room_join(*, schema_name: str, slug: str, actor: Actor) -> RoomRef:
    """The room a socket joins: created as a public room if missing; private needs membership.

    Creating takes a token of the user's room budget (ROOM_CREATE_RATE, shared by all
    processes); joining an existing room costs nothing.
    Raises ChatError FORBIDDEN (not a member), UNAUTHORIZED (user or tenant deactivated) or
    RATE_LIMITED (the room is missing and the budget is spent: nothing created).
    """
    room = await in_schema(schema_name, _join, schema_name, slug, actor, False)
    if room is None and is_dm_slug(slug):
        # DM slugs are made by POST /api/dms/ only; a join never creates one (and the answer
        # is the same as for another pair's DM: no oracle).
        raise ChatError(ErrorCode.FORBIDDEN, "This room is private.")
    if room is None:
        _refuse_if_room_budget_spent(await room_create_bucket(schema_name, actor.id).atake())
        room = await in_schema(schema_name, _join, schema_name, slug, actor, True)
    assert room is not None
    return room


def room_create(*, schema_name: str, actor: Actor, slug: str, name: str, is_private: bool) -> Room:
    """Create a room; the creator of a private room becomes its first member.

    Takes a token of the user's room budget (as a join that creates does); raises
    ChatError RATE_LIMITED (with `retry_after`) when it is spent."""
    _refuse_if_room_budget_spent(room_create_bucket(schema_name, actor.id).take())

    def create() -> Room:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug, name=name or slug, is_private=is_private, created_by_id=actor.id
            )
            if is_private:
                Membership.objects.create(room=room, user_id=actor.id)
            webhooks.record(
                "room.created", lambda: webhooks.room_data(Room.objects.get(pk=room.pk))
            )
        return Room.objects.get(pk=room.pk)  # read back db defaults (created_at)

    return run_in_schema(schema_name, create)


def room_update(
    *, schema_name: str, room: Room, name: str | None = None, is_private: bool | None = None
) -> Room:
    """Rename a room or change its visibility; made private, its sockets of non-members
    close with 4403 on every process."""

    was_private = room.is_private
    if room.kind == Room.KIND_DM and is_private is False:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "A direct message stays private.", field="is_private"
        )

    def update() -> Room:
        if name is not None:
            room.name = name
        if is_private is not None:
            room.is_private = is_private
        with transaction.atomic():
            room.save(update_fields=["name", "is_private"])
            webhooks.record("room.updated", lambda: webhooks.room_data(room))
        return room

    updated = run_in_schema(schema_name, update)
    if updated.is_private and not was_private:
        # Its open sockets of non-members must go (4403): each process re-checks its sockets
        # of this room with one membership query (chat/authz.py).
        async_to_sync(events.recheck_room)(schema_name, room.slug)
    return updated


def room_delete(*, schema_name: str, room: Room) -> None:
    """Delete a room with its messages; its open sockets on every process close with 4403."""

    def delete() -> None:
        from chat import attachments  # imports this module

        with transaction.atomic():
            webhooks.record("room.deleted", webhooks.room_data(room))
            attachments.room_attachments_remove(room.pk)  # files go after the commit
            room.delete()

    run_in_schema(schema_name, delete)
    async_to_sync(events.close_group)(
        events.room_group_name(schema_name, room.slug), CloseCode.FORBIDDEN
    )


def _refuse_dm_membership_change(room: Room) -> None:
    if room.kind == Room.KIND_DM:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "Nobody can be added to or removed from a direct message."
        )


def room_member_add(*, schema_name: str, room: Room, user_id: int) -> tuple[Membership, bool]:
    """Give a user access to a room; a new member hears `room.added` on notification sockets."""

    _refuse_dm_membership_change(room)

    def add() -> tuple[Membership, bool, int]:
        if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
            raise ChatError(ErrorCode.NOT_FOUND, "No active user with this id.")
        with transaction.atomic():
            membership, created = Membership.objects.get_or_create(room=room, user_id=user_id)
            if created:
                webhooks.record("member.added", lambda: webhooks.member_data(room, user_id))
        return membership, created, _unread_count(room.pk, user_id)

    membership, created, unread = run_in_schema(schema_name, add)
    if created:
        frame = {"type": "room.added", "room": room_object(room, unread_count=unread)}
        async_to_sync(events.notify_user)(schema_name, user_id, frame)
    return membership, created


def room_member_remove(*, schema_name: str, room: Room, user_id: int) -> bool:
    """Take a user out of a room: their sockets in it, on every process, close with 4403,
    and their notification sockets hear `room.removed`."""

    _refuse_dm_membership_change(room)

    def remove() -> tuple[int, Any]:
        with transaction.atomic():
            deleted = Membership.objects.filter(room=room, user_id=user_id).delete()
            if deleted[0]:
                webhooks.record("member.removed", lambda: webhooks.member_data(room, user_id))
            return deleted

    deleted, _ = run_in_schema(schema_name, remove)
    async_to_sync(events.kick_from_room)(schema_name, user_id, room.slug, CloseCode.FORBIDDEN)
    if deleted:
        frame = {"type": "room.removed", "room": room.slug}
        async_to_sync(events.notify_user)(schema_name, user_id, frame)
    return bool(deleted)


def room_object(room: Room, *, unread_count: int = 0) -> dict[str, Any]:
    """The room object of the contract's section 2."""
    return {
        "slug": room.slug,
        "name": room.name,
        "is_private": room.is_private,
        "created_at": events.iso(room.created_at),
        "unread_count": unread_count,
        "kind": room.kind,
    }


# --- messages -------------------------------------------------------------------------------

_MENTION = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")
MAX_MENTIONS = 20


def _mentioned_readers(room_id: int, author_id: int, body: str) -> list[int]:
    """Ids of active users named `@username` in `body` who can read the room (not the author)."""
    names = {name.rstrip(".") for name in _MENTION.findall(body)}
    if not names:
        return []
    users = (
        get_user_model()
        .objects.filter(username__in=list(names)[:MAX_MENTIONS], is_active=True)
        .exclude(pk=author_id)
    )
    room = Room.objects.only("is_private").filter(pk=room_id).first()
    if room is None:  # deleted right after the message went in: nobody left to notify
        return []
    if room.is_private:
        users = users.filter(pk__in=Membership.objects.filter(room_id=room_id).values("user_id"))
    return list(users.values_list("pk", flat=True))


def _insert_if_active(
    room_id: int,
    user_id: int,
    body: str,
    client_id: str | None,
    parent_id: int | None,
    *,
    unless_hooked: bool,
) -> Message | None:
    """INSERT the message only if its author and tenant are active, in the same statement
    (no extra round trip): a deactivated user cannot send, whatever the transport and
    whatever the socket still believes. Raises ChatError UNAUTHORIZED otherwise.

    With `unless_hooked`, the same statement also inserts nothing, and answers None, when
    the tenant has an active webhook for `message.created`: the caller then stores the
    message again in a transaction with its webhook event. A tenant without such a webhook
    pays one autocommit statement per message, and holds the room's row lock (the seq
    trigger's) for that statement only. A parent that is not a live message of the room is
    refused by the trigger (P0002): ChatError NOT_FOUND naming `parent_id`."""
    quote = connection.ops.quote_name
    users = quote(get_user_model()._meta.db_table)
    tenants = f"{quote(get_public_schema_name())}.{quote(Tenant._meta.db_table)}"
    hooks = quote(Webhook._meta.db_table)
    wanted = json.dumps(["message.created"])
    sql = f"""
        WITH hooked AS (
            SELECT %s AND EXISTS (
                SELECT 1 FROM {hooks} WHERE is_active
                   AND (events @> %s::jsonb OR events @> '["*"]'::jsonb)) AS yes
        ), stored AS (
            INSERT INTO {quote(Message._meta.db_table)}
                   (room_id, user_id, body, client_id, parent_id)
            SELECT %s, %s, %s, %s, %s
             WHERE EXISTS (SELECT 1 FROM {users} WHERE id = %s AND is_active)
               AND EXISTS (SELECT 1 FROM {tenants} WHERE schema_name = %s AND is_active)
               AND NOT (SELECT yes FROM hooked)
            RETURNING id, seq, created_at, parent_id
        )
        SELECT stored.id, stored.seq, stored.created_at, stored.parent_id, hooked.yes
          FROM hooked LEFT JOIN stored ON true
        """  # table names come from the models; values are parameters
    params: list[Any] = [
        unless_hooked,
        wanted,
        room_id,
        user_id,
        body,
        client_id,
        parent_id,
        user_id,
    ]
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, current_schema()])
            row = cursor.fetchone()
    except DatabaseError as exc:  # psycopg files P0002 under ProgrammingError
        if getattr(exc.__cause__, "sqlstate", None) != "P0002":
            raise
        raise ChatError(
            ErrorCode.NOT_FOUND, "No such message in this room to reply to.", field="parent_id"
        ) from None
    assert row is not None
    if row[4]:
        return None
    if row[0] is None:
        raise ChatError(ErrorCode.UNAUTHORIZED, "User or tenant is deactivated.")
    message = Message(
        pk=row[0],
        room_id=room_id,
        user_id=user_id,
        body=body,
        client_id=client_id,
        seq=row[1],
        created_at=row[2],
        parent_id=row[3],
        reply_count=0,
        reactions={},
    )
    message._state.adding = False
    message._state.db = connection.alias
    return message


def _persist_message(
    room_id: int,
    user_id: int,
    body: str,
    client_id: str | None,
    parent_id: int | None = None,
    attachment_ids: list[int] | None = None,
) -> tuple[Message, bool, list[int]]:
    """One INSERT ... RETURNING (the trigger assigns `seq` in the same statement, and the
    statement itself refuses an inactive author). A message with attachments, or of a tenant
    with a `message.created` webhook, is stored in a transaction instead: with the UPDATE
    that links its uploads (refused: the INSERT rolls back with it) and its webhook event.
    A message naming `@someone` costs one more query, for the mentioned readers."""
    from chat import attachments  # imports this module

    try:
        stored = None
        if not attachment_ids:
            stored = _insert_if_active(
                room_id, user_id, body, client_id, parent_id, unless_hooked=True
            )
        if stored is None:
            with transaction.atomic():  # the message, its files and its event commit together
                stored = _insert_if_active(
                    room_id, user_id, body, client_id, parent_id, unless_hooked=False
                )
                assert stored is not None
                message_id = stored.pk
                attachments.attachments_link(
                    message_id=message_id,
                    room_id=room_id,
                    user_id=user_id,
                    ids=attachment_ids or [],
                )
                webhooks.record("message.created", lambda: webhooks.message_data(message_id))
        message = stored
    except IntegrityError:
        # The room was deleted since the sender joined it (the seq trigger finds no room row,
        # a foreign-key violation): the contract's not_found, not a 500.
        if not Room.objects.filter(pk=room_id).exists():
            raise ChatError(ErrorCode.NOT_FOUND, "No such room.") from None
        # Same client_id from the same user in the same room: the failed statement rolled
        # back its seq increment too, and the sender gets the original message back.
        if client_id is None:
            raise
        original = Message.objects.filter(
            room_id=room_id, user_id=user_id, client_id=client_id
        ).first()
        if original is None:  # deleted with its room between the INSERT and this read
            raise ChatError(ErrorCode.NOT_FOUND, "No such room.") from None
        return original, False, []
    mentioned = _mentioned_readers(room_id, user_id, body) if "@" in body else []
    return message, True, mentioned


def clean_parent_id(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "`parent_id` must be a positive integer.", field="parent_id"
        )
    return value


async def message_send(
    *,
    schema_name: str,
    room: RoomRef,
    actor: Actor,
    body: Any,
    client_id: Any = None,
    parent_id: Any = None,
    skip: Any = None,
    attachments: Any = None,
) -> tuple[dict[str, Any], bool]:
    """Persist a message, then broadcast it to the room on every process.

    Returns the `chat.message` frame and whether it is new. A resend with a known
    `client_id` returns the original frame, and broadcasts it again (but to `skip`, the
    sender's socket, which gets it as its answer): if its first publish was lost (Redis
    away, its process killed), the room gets it now; where it was delivered, the fan-out
    drops the copy by its seq. Raises ChatError UNAUTHORIZED if the user or the tenant is
    no longer active (read from the database).

    `parent_id` makes it a reply (threads): the parent must be a live message of the room
    (else NOT_FOUND); a reply to a reply is attached to that reply's root.
    `attachments`: ids of the sender's own unlinked uploads in the room (chat/attachments.py;
    AttachmentRefused otherwise, nothing stored); with some, the text may be empty.
    """
    from chat import attachments as files  # imports this module

    ids = files.clean_attachment_ids(attachments)
    text = clean_message_body(body, allow_empty=bool(ids))
    cid = clean_client_id(client_id)
    parent = clean_parent_id(parent_id)
    message, created, mentioned = await in_schema(
        schema_name, _persist_message, room.id, actor.id, text, cid, parent, ids
    )
    # Only a message known to have none (new, none asked for) skips reading them back.
    objects = (
        await in_schema(schema_name, files.objects_of_message, message.pk)
        if ids or not created
        else []
    )
    frame = events.chat_message(message, room=room.slug, user=actor.username, attachments=objects)
    # The row is committed (autocommit) before any socket can see the frame.
    group = events.room_group_name(schema_name, room.slug)
    if not created:
        await events.broadcast(group, frame, seq=message.seq, skip=skip)
    else:
        MESSAGES_PERSISTED.labels(schema_name).inc()
        await events.broadcast(group, frame, seq=message.seq)
        for user_id in mentioned:
            mention = {"type": "mention", "room": room.slug, "message": frame}
            await events.notify_user(schema_name, user_id, mention)
    return frame, created


def room_key_lock(room_id: int) -> bool:
    """Take the room row's FOR KEY SHARE lock until the transaction ends; False if the room
    is gone. It waits only for a room delete (FOR UPDATE), never for a send (the seq
    trigger's UPDATE of `last_seq` is FOR NO KEY UPDATE) nor another holder, and a path
    that takes it first cannot close a lock cycle with a room delete, which locks the room
    before anything else of it. A foreign key's own check takes the same lock only at the
    commit (Django's constraints are DEFERRABLE INITIALLY DEFERRED): too late for that."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM chat_room WHERE id = %s FOR KEY SHARE",
            [room_id],
        )
        return cursor.fetchone() is not None


def _change_message(
    room_id: int, message_id: Any, actor: Actor, body: str | None
) -> tuple[Message, str]:
    """Edit (body) or delete (None) a message of the room; author or tenant admin only.

    "Admin" and "active" are read from the database in the same query as the message, not
    from the `Actor` (a socket's copy of its handshake): a demoted admin loses the right at
    once, and a deactivated user edits nothing.

    Concurrent changes of one message (two deletes, an edit racing a delete, from any
    sockets or pods) are decided by PostgreSQL: the message row is read FOR UPDATE in the
    transaction that changes it, so the second change waits for the first to commit, and
    PostgreSQL then re-checks `deleted_at IS NULL` on the row as the first left it. A
    message is deleted once (one frame, one `message.deleted` event, the root's
    `reply_count` lowered once) and never edited after its deletion: the loser gets
    not_found. Reactions take the same lock (`_react`), and a reply's trigger takes the
    root's (chat/migrations/0003), so neither lands on a message deleted before it.

    The room's key lock comes first (`room_key_lock`): a room delete locks the room, then
    the attachment rows, then deletes the messages, so a delete that locked its message
    first and then waited for that message's attachment rows closed a cycle with it
    (PostgreSQL ended one of the two: `unavailable` or a 503)."""
    actor_row = get_user_model().objects.filter(pk=actor.id, is_active=True)
    with transaction.atomic():
        if not room_key_lock(room_id):
            raise ChatError(ErrorCode.NOT_FOUND, "No such message in this room.")
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(pk=message_id, room_id=room_id, deleted_at__isnull=True)
            .annotate(
                actor_active=Exists(actor_row),
                actor_admin=Exists(actor_row.filter(is_staff=True)),
            )
            .first()
        )
        if message is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such message in this room.")
        if not message.actor_active:  # type: ignore[attr-defined]
            raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated.")
        if message.user_id != actor.id and not message.actor_admin:  # type: ignore[attr-defined]
            raise ChatError(ErrorCode.FORBIDDEN, "Only the author or a tenant admin may do this.")
        if body is None:
            from chat import attachments  # imports this module

            message.deleted_at = timezone.now()
            message.save(update_fields=["deleted_at"])
            if message.parent_id is not None:  # the root counts live replies only
                Message.objects.filter(pk=message.parent_id).update(
                    reply_count=F("reply_count") - 1
                )
            attachments.message_attachments_remove(message.pk)  # files go after the commit
            webhooks.record("message.deleted", webhooks.message_deleted_data(message))
        else:
            message.body = body
            message.edited_at = timezone.now()
            message.save(update_fields=["body", "edited_at"])
            webhooks.record("message.edited", lambda: webhooks.message_data(message.pk))
    return message, message.user.get_username()


def _message_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ChatError(ErrorCode.INVALID_FRAME, "`id` must be a positive integer.")
    return value


async def message_edit(
    *, schema_name: str, room: RoomRef, actor: Actor, message_id: Any, body: Any
) -> dict[str, Any]:
    """Change a message's text; the room gets `chat.message.edited` with the new fields
    (its attachments included: one more query)."""
    from chat import attachments  # imports this module

    text = clean_message_body(body)
    message, author = await in_schema(
        schema_name, _change_message, room.id, _message_id(message_id), actor, text
    )
    objects = await in_schema(schema_name, attachments.objects_of_message, message.pk)
    frame = events.chat_message(
        message,
        room=room.slug,
        user=author,
        frame_type=ServerFrame.CHAT_MESSAGE_EDITED,
        attachments=objects,
    )
    await events.broadcast(events.room_group_name(schema_name, room.slug), frame)
    return frame


async def message_delete(
    *, schema_name: str, room: RoomRef, actor: Actor, message_id: Any
) -> dict[str, Any]:
    """Delete a message (kept as a tombstone so `seq` stays gap-free in the table); the room
    gets `chat.message.deleted`."""
    message, _ = await in_schema(
        schema_name, _change_message, room.id, _message_id(message_id), actor, None
    )
    frame = events.message_deleted(
        message_id=message.pk, seq=message.seq, room=room.slug, parent_id=message.parent_id
    )
    await events.broadcast(events.room_group_name(schema_name, room.slug), frame)
    return frame


# --- typing and read markers ----------------------------------------------------------------


async def typing_announce(*, schema_name: str, room: RoomRef, actor: Actor, skip: Any) -> None:
    """Tell the room's other sockets that the user is typing (nothing is stored); `skip` is
    the typist's socket."""
    frame = events.user_event(ServerFrame.USER_TYPING, actor.username)
    await events.broadcast(events.room_group_name(schema_name, room.slug), frame, skip=skip)


def _move_marker(room_id: int, user_id: int, seq: int) -> tuple[int, bool]:
    """Upsert the marker to max(old, seq), capped at the room's last seq, in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH target AS (SELECT LEAST(%s, last_seq) AS seq FROM chat_room WHERE id = %s),
            old AS (SELECT seq FROM chat_readmarker WHERE room_id = %s AND user_id = %s)
            INSERT INTO chat_readmarker (room_id, user_id, seq)
            SELECT %s, %s, target.seq FROM target
            ON CONFLICT (room_id, user_id)
            DO UPDATE SET seq = GREATEST(chat_readmarker.seq, EXCLUDED.seq)
            RETURNING seq, seq > COALESCE((SELECT seq FROM old), -1)
            """,
            [seq, room_id, room_id, user_id, room_id, user_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
    return int(row[0]), bool(row[1])


async def read_marker_move(
    *, schema_name: str, room: RoomRef, actor: Actor, seq: Any
) -> tuple[dict[str, Any], bool]:
    """Move the user's read marker forward (never back). Returns the `message.read` frame and
    whether it moved; only a move is broadcast to the room."""
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ChatError(ErrorCode.INVALID_FRAME, "`seq` must be a non-negative integer.")
    marker, moved = await in_schema(schema_name, _move_marker, room.id, actor.id, seq)
    frame = events.user_event(ServerFrame.MESSAGE_READ, actor.username, seq=marker)
    if moved:
        await events.broadcast(events.room_group_name(schema_name, room.slug), frame)
    return frame, moved


# --- reactions ------------------------------------------------------------------------------


def clean_emoji(value: Any) -> str:
    """An emoji (or a short code like `+1`): a string of 1 to 32 characters, no control
    characters, not only spaces."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 32
        or not value.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise ChatError(
            ErrorCode.INVALID_FRAME,
            "`emoji` must be a string of 1 to 32 characters without control characters.",
            field="emoji",
        )
    return value


def _react(
    room: RoomRef, message_id: int, actor: Actor, emoji: str, add: bool
) -> tuple[int, dict[str, int], bool]:
    """Add or remove the user's emoji on a live message of the room, under the message row's
    lock (so `reactions` stays exact under concurrent reactions, on any process). Returns
    the message's seq, the counts after it, and whether anything changed (reacting twice,
    or removing what is not there, changes nothing).

    The room's key lock comes first (`room_key_lock`): a room delete deletes the reactions
    of its messages before the messages, so a reaction inserted under the message's lock
    meanwhile was still there when the room delete's commit checked the foreign key (a 500)."""
    with transaction.atomic():
        if not room_key_lock(room.id):
            raise ChatError(ErrorCode.NOT_FOUND, "No such message in this room.", field="id")
        row = (
            Message.objects.select_for_update(of=("self",))
            .filter(pk=message_id, room_id=room.id, deleted_at__isnull=True)
            .annotate(
                actor_active=Exists(get_user_model().objects.filter(pk=actor.id, is_active=True))
            )
            .values_list("seq", "reactions", "actor_active")
            .first()
        )
        if row is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such message in this room.", field="id")
        seq, counts, active = row
        counts = dict(counts or {})
        if not active:
            raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated.")
        if add:
            if emoji not in counts and len(counts) >= MAX_REACTION_KINDS:
                raise ChatError(
                    ErrorCode.INVALID_FRAME,
                    f"A message has at most {MAX_REACTION_KINDS} distinct emoji.",
                    field="emoji",
                )
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {connection.ops.quote_name(Reaction._meta.db_table)}
                           (message_id, user_id, emoji)
                    VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING id
                    """,  # the table name comes from the model; values are parameters
                    [message_id, actor.id, emoji],
                )
                changed = cursor.fetchone() is not None
            if changed:
                counts[emoji] = counts.get(emoji, 0) + 1
        else:
            deleted, _ = Reaction.objects.filter(
                message_id=message_id, user_id=actor.id, emoji=emoji
            ).delete()
            changed = bool(deleted)
            if changed:
                left = counts.get(emoji, 1) - 1
                if left > 0:
                    counts[emoji] = left
                else:
                    counts.pop(emoji, None)
        if changed:
            Message.objects.filter(pk=message_id).update(reactions=counts)
            webhooks.record(
                "reaction.added" if add else "reaction.removed",
                {
                    "room": room.slug,
                    "message_id": message_id,
                    "user": actor.username,
                    "emoji": emoji,
                    "counts": counts,
                },
            )
    return seq, counts, changed


async def reaction_set(
    *, schema_name: str, room: RoomRef, actor: Actor, message_id: Any, emoji: Any, add: bool
) -> tuple[dict[str, Any], bool]:
    """React (`add`) or unreact to a message of the room. Returns the `chat.reaction` frame
    and whether it changed anything; only a change is broadcast to the room (a no-op is
    answered to the caller alone, with the current counts).

    Raises ChatError INVALID_FRAME (bad id or emoji, or a 21st distinct emoji), NOT_FOUND
    (no live message of that id in the room) or UNAUTHORIZED (user deactivated)."""
    target = _message_id(message_id)
    mark = clean_emoji(emoji)
    seq, counts, changed = await in_schema(schema_name, _react, room, target, actor, mark, add)
    frame = events.reaction(
        message_id=target,
        seq=seq,
        room=room.slug,
        user=actor.username,
        emoji=mark,
        added=add,
        counts=counts,
    )
    if changed:
        await events.broadcast(events.room_group_name(schema_name, room.slug), frame)
    return frame, changed


# --- direct messages ------------------------------------------------------------------------


def is_dm_slug(slug: str) -> bool:
    return slug.startswith(DM_SLUG_PREFIX)


def _dm_open(actor: Actor, other_id: int | None, other_username: str | None) -> tuple[Room, bool]:
    users = get_user_model().objects.filter(is_active=True)
    other = (
        users.filter(pk=other_id) if other_id is not None else users.filter(username=other_username)
    ).first()
    field = "user_id" if other_id is not None else "username"
    if other is None:
        raise ChatError(ErrorCode.NOT_FOUND, "No active user with this id.", field=field)
    if other.pk == actor.id:
        raise ChatError(
            ErrorCode.INVALID_FRAME, "A direct message needs another user.", field=field
        )
    if not users.filter(pk=actor.id).exists():
        raise ChatError(ErrorCode.UNAUTHORIZED, "User is deactivated.")
    low, high = sorted((actor.id, other.pk))
    key = f"{low}:{high}"
    found = Room.objects.filter(dm_key=key).first()
    if found is not None:
        return found, False
    names = {actor.id: actor.username, other.pk: other.get_username()}
    name = f"{names[low]}, {names[high]}"[:200]
    slug = f"{DM_SLUG_PREFIX}{low}-{high}"
    for attempt in range(3):
        try:
            with transaction.atomic():
                room = Room.objects.create(
                    slug=slug if attempt == 0 else f"{slug}-{secrets.token_hex(4)}",
                    name=name,
                    is_private=True,
                    kind=Room.KIND_DM,
                    dm_key=key,
                    created_by_id=actor.id,
                )
                Membership.objects.bulk_create(
                    [Membership(room=room, user_id=low), Membership(room=room, user_id=high)]
                )
                room = Room.objects.get(pk=room.pk)  # with its db defaults (created_at)
                webhooks.record("room.created", partial(webhooks.room_data, room))
            return room, True
        except IntegrityError:
            # The pair's UNIQUE key: someone opened it at the same moment (it exists now).
            # Otherwise the slug was taken by a room made before DMs existed: try another.
            found = Room.objects.filter(dm_key=key).first()
            if found is not None:
                return found, False
    raise ChatError(ErrorCode.UNAVAILABLE, "Could not open the direct message.", retry_after=1)


def dm_open(
    *, schema_name: str, actor: Actor, user_id: int | None = None, username: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The one private two-person room of the caller and another active user, created on
    the first call (201) and returned after (200). UNIQUE `dm_key` makes two concurrent
    first calls, from either user, on any processes, create one room. The other user's
    notification sockets hear `room.added` when it is created."""

    def open_() -> tuple[Room, bool, int]:
        room, created = _dm_open(actor, user_id, username)
        shown = _unread_count(room.pk, actor.id)
        return room, created, shown

    room, created, unread = run_in_schema(schema_name, open_)
    if created:
        other = next(int(p) for p in (room.dm_key or "").split(":") if int(p) != actor.id)
        frame = {"type": "room.added", "room": room_object(room, unread_count=0)}
        async_to_sync(events.notify_user)(schema_name, other, frame)
    return room_object(room, unread_count=unread), created


def _unread_count(room_id: int, user_id: int) -> int:
    marker = ReadMarker.objects.filter(room_id=room_id, user_id=user_id).values("seq").first()
    last_seq = Room.objects.values_list("last_seq", flat=True).get(pk=room_id)
    return max(last_seq - (marker["seq"] if marker else 0), 0)
