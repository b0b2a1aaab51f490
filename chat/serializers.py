"""Request validation and response shapes of the chat REST API."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from chat.models import DM_SLUG_PREFIX, ROOM_SLUG_PATTERN, Room


class RoomSerializer(serializers.ModelSerializer):
    # \A...\Z, not ^...$ (which takes a trailing newline), and no trimming: a slug outside
    # the pattern is a 400, never silently another room's name.
    slug = serializers.RegexField(rf"\A{ROOM_SLUG_PATTERN}\Z", max_length=64, trim_whitespace=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    is_private = serializers.BooleanField(required=False, default=False)
    unread_count = serializers.IntegerField(read_only=True, default=0)
    kind = serializers.ChoiceField(choices=["room", "dm"], read_only=True)

    class Meta:
        model = Room
        fields = ["slug", "name", "is_private", "created_at", "unread_count", "kind"]
        read_only_fields = ["created_at", "kind"]

    def validate_slug(self, value: str) -> str:
        if value.startswith(DM_SLUG_PREFIX):
            raise serializers.ValidationError(
                f"Slugs starting with `{DM_SLUG_PREFIX}` are reserved for direct messages."
            )
        if Room.objects.filter(slug=value).exists():
            raise serializers.ValidationError("A room with this slug already exists.")
        return value


class RoomUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    is_private = serializers.BooleanField(required=False)


class MemberSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    created_at = serializers.DateTimeField()


class MemberAddSerializer(serializers.Serializer):
    user_id = serializers.IntegerField(min_value=1)


class HistoryQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(required=False, min_value=0)
    after = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1)

    def validate_limit(self, value: int) -> int:
        # More than the maximum is not an error: the client gets the maximum (like DRF's
        # LimitOffsetPagination), and pages on with `before`/`after`.
        return min(value, settings.CHAT_HISTORY_MAX_LIMIT)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text, as
    the WebSocket side does (`invalid_frame`)."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses strings, floats and booleans (as the WebSocket side does)."""

    def to_internal_value(self, data: object) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class MessageInSerializer(serializers.Serializer):
    message = StrictCharField(trim_whitespace=False, allow_blank=True)
    client_id = StrictCharField(required=False, max_length=64, trim_whitespace=False)
    parent_id = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**63 - 1,
        help_text="A message of the same room: this one is a reply in its thread",
    )
    # Ids of the sender's own uploads in this room not yet attached (POST .../attachments/);
    # with some, `message` may be "".
    attachments = serializers.ListField(
        child=StrictIntegerField(min_value=1),
        required=False,
        max_length=settings.ATTACHMENT_MAX_PER_MESSAGE,
    )


class DmInSerializer(serializers.Serializer):
    """`{user_id}` (the contract) or `{username}` (for clients that know only names)."""

    user_id = StrictIntegerField(required=False, min_value=1, max_value=2**63 - 1)
    username = StrictCharField(required=False, max_length=150, trim_whitespace=False)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if ("user_id" in attrs) == ("username" in attrs):
            raise serializers.ValidationError(
                {"user_id": ["Give exactly one of `user_id` and `username`."]}
            )
        return attrs


class ReactionInSerializer(serializers.Serializer):
    emoji = StrictCharField(max_length=32, trim_whitespace=False)


class ReactionQuerySerializer(serializers.Serializer):
    emoji = serializers.CharField(max_length=32, trim_whitespace=False)


class RepliesQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1)
    limit = serializers.IntegerField(required=False, min_value=1)

    def validate_limit(self, value: int) -> int:
        return min(value, settings.CHAT_HISTORY_MAX_LIMIT)


class ChatReactionFrameSerializer(serializers.Serializer):
    """The `chat.reaction` frame (for the OpenAPI document)."""

    type = serializers.CharField()
    id = serializers.IntegerField()
    seq = serializers.IntegerField()
    room = serializers.CharField()
    user = serializers.CharField()
    emoji = serializers.CharField()
    op = serializers.ChoiceField(choices=["add", "remove"])
    counts = serializers.DictField(child=serializers.IntegerField())


class AttachmentSerializer(serializers.Serializer):
    """An attachment object: in the upload's answer and in `chat.message` frames."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    size = serializers.IntegerField()
    content_type = serializers.CharField()
    url = serializers.CharField(help_text="A signed link; expires after ATTACHMENT_URL_TTL s")


class ChatMessageFrameSerializer(serializers.Serializer):
    """The `chat.message` frame of the contract (for the OpenAPI document)."""

    type = serializers.CharField()
    id = serializers.IntegerField()
    seq = serializers.IntegerField()
    room = serializers.CharField()
    user = serializers.CharField()
    message = serializers.CharField()
    client_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    edited_at = serializers.DateTimeField(allow_null=True)
    parent_id = serializers.IntegerField(allow_null=True)
    reply_count = serializers.IntegerField(required=False, help_text="Top-level messages only")
    reactions = serializers.DictField(child=serializers.IntegerField())
    attachments = AttachmentSerializer(many=True)
