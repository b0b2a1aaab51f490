"""Rooms and messages, in each tenant's own schema."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

ROOM_SLUG_PATTERN = r"[A-Za-z0-9_-]{1,64}"
# Slugs of direct messages (`dm-<low id>-<high id>`); no room of another kind may take one.
DM_SLUG_PREFIX = "dm-"
MAX_REACTION_KINDS = 20  # distinct emoji on one message


class Room(models.Model):
    KIND_ROOM = "room"
    KIND_DM = "dm"

    slug = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_private = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The last `seq` handed out in this room. Only the database trigger of migration 0002
    # moves it, in the same statement that inserts the message (gap-free, see Message.seq).
    last_seq = models.BigIntegerField(default=0)
    kind = models.CharField(
        max_length=8,
        choices=[(KIND_ROOM, "room"), (KIND_DM, "direct message")],
        default=KIND_ROOM,
        db_default=KIND_ROOM,
    )
    # A DM's pair, `<low user id>:<high user id>`: UNIQUE, so concurrent "open the DM of
    # alice and bob" requests, on any number of processes, create exactly one room.
    dm_key = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="room", dm_key__isnull=True)
                | Q(kind="dm", dm_key__isnull=False, is_private=True),
                name="room_dm_key_iff_dm",
            )
        ]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """Who may read and write a private room (public rooms need no membership)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id}"


class ReadMarker(models.Model):
    """How far a user has read in a room; only ever moves forward."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="readmarker_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.room_id} to {self.seq}"


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Assigned by a BEFORE INSERT trigger that increments the room's `last_seq` in the same
    # statement: one round trip, serialised per room by the row lock, and rolled back with
    # a failed insert, so `seq` has no gaps even with many processes writing. The default
    # only makes Django send DEFAULT and read the real value back with RETURNING.
    seq = models.BigIntegerField(db_default=0)
    body = models.TextField()
    # NULL (not "") when absent: the idempotency constraint only covers messages that have one.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(db_default=Now())
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Threads: a reply's root (always a top-level message of the same room; the seq trigger
    # resolves a reply to a reply to its root, refuses a parent of another room or a deleted
    # one, and counts the reply on the root in the same statement).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    reply_count = models.IntegerField(default=0, db_default=0)  # live replies of a root
    # {emoji: count}, kept under the message row's lock with the Reaction rows (exact).
    reactions = models.JSONField(default=dict, db_default=models.Value({}, models.JSONField()))

    class Meta:
        indexes = [
            models.Index(
                fields=["parent", "seq"],
                name="message_thread_idx",
                condition=Q(parent__isnull=False),
            )
        ]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            models.UniqueConstraint(
                fields=["room", "user", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"


class Reaction(models.Model):
    """One user's emoji on one message (idempotent: unique per message, user and emoji)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=32)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="reaction_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.emoji} {self.message_id}"


class Attachment(models.Model):
    """A file uploaded into a room; linked to one message of its uploader (NULL until then).

    The bytes live in the "attachments" storage (chat/attachments.py) under `storage_key`,
    which starts with the tenant's schema name."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    name = models.CharField(max_length=255)  # the original file name, sanitized
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=255)  # sniffed from the bytes, never the client's
    storage_key = models.CharField(max_length=512, unique=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            # The sweep of uploads never linked to a message (manage.py attachments_sweep).
            models.Index(
                fields=["created_at"],
                condition=Q(message__isnull=True),
                name="attachment_unlinked_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.room_id}/{self.pk} {self.name}"
