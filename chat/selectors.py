"""Read queries for chat. No writes."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from chat import attachments, events
from chat.models import Membership, Message, ReadMarker, Room
from chat.services import Actor


def visible_rooms(actor: Actor) -> QuerySet[Room]:
    """Public rooms and the private rooms the user belongs to, with `unread_count`."""
    member = Membership.objects.filter(room=OuterRef("pk"), user_id=actor.id)
    read_seq = ReadMarker.objects.filter(room=OuterRef("pk"), user_id=actor.id).values("seq")[:1]
    return (
        Room.objects.filter(Q(is_private=False) | Exists(member))
        .annotate(
            unread_count=Greatest(F("last_seq") - Coalesce(Subquery(read_seq), Value(0)), Value(0))
        )
        .order_by("slug")
    )


def visible_room(actor: Actor, slug: str) -> Room | None:
    return visible_rooms(actor).filter(slug=slug).first()


def room_history(
    *, room: Room, before: int | None, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """`chat.message` frames: newest first, or oldest first when `after` is given."""
    return _frames(room.pk, room.slug, before=before, after=after, limit=limit)


def replay_frames(
    *, room_id: int, slug: str, since: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """What `since=<seq>` replays: messages after `since`, oldest first, at most `limit`;
    and the room's last seq, read after them (so it is at least the last one replayed)."""
    frames = _frames(room_id, slug, before=None, after=since, limit=limit)
    last_seq = Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first() or 0
    return frames, last_seq


def repair_frames(
    *, room_id: int, slug: str, since: int, limit: int
) -> tuple[list[dict[str, Any]] | None, int | None]:
    """What a gap repair delivers: the room's last seq first (every seq up to it is committed:
    the trigger raises it in the inserting transaction), then the messages after `since` up
    to it, oldest first. None instead of the frames when more than `limit` are missing, or
    the room is gone (last seq None)."""
    last_seq = Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first()
    if last_seq is None or last_seq - since > limit:
        return None, last_seq
    messages = (
        Message.objects.filter(
            room_id=room_id, seq__gt=since, seq__lte=last_seq, deleted_at__isnull=True
        )
        .select_related("user")
        .order_by("seq")
    )
    return _with_attachments(list(messages), slug), last_seq


def rooms_last_seq(room_ids: list[int]) -> dict[int, int]:
    """The last seq of each room (one query, for the fan-out's check after a reconnect)."""
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


def _frames(
    room_id: int, slug: str, *, before: int | None, after: int | None, limit: int
) -> list[dict[str, Any]]:
    messages = Message.objects.filter(room_id=room_id, deleted_at__isnull=True).select_related(
        "user"
    )
    if before is not None:
        messages = messages.filter(seq__lt=before)
    if after is not None:
        messages = messages.filter(seq__gt=after)
    messages = messages.order_by("seq" if after is not None else "-seq")[:limit]
    return _with_attachments(list(messages), slug)


def thread_replies(
    *, room: Room, root_id: int, after: int | None, limit: int
) -> list[dict[str, Any]] | None:
    """The live replies of a top-level message of the room, oldest first (None when the
    room has no such top-level message). A deleted root keeps its thread readable, as
    its replies stay in the room's history."""
    if not Message.objects.filter(pk=root_id, room_id=room.pk, parent__isnull=True).exists():
        return None
    replies = Message.objects.filter(
        parent_id=root_id, room_id=room.pk, deleted_at__isnull=True
    ).select_related("user")
    if after is not None:
        replies = replies.filter(seq__gt=after)
    replies = replies.order_by("seq")[:limit]
    return _with_attachments(list(replies), room.slug)


def _with_attachments(messages: list[Message], slug: str) -> list[dict[str, Any]]:
    """The frames of a page of messages, with their attachments: one more query a page
    (none for an empty page), fresh links each time."""
    files = attachments.objects_by_message(m.pk for m in messages)
    return [
        events.chat_message(
            m, room=slug, user=m.user.get_username(), attachments=files.get(m.pk, [])
        )
        for m in messages
    ]
