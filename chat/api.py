"""REST transport for rooms and messages: thin views over selectors and services."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView, ListCreateAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsTenantAdmin
from chat import selectors
from chat.api_errors import api_exception
from chat.attachments import AttachmentRefused
from chat.models import Room
from chat.protocol import ErrorCode
from chat.serializers import (
    ChatMessageFrameSerializer,
    ChatReactionFrameSerializer,
    DmInSerializer,
    HistoryQuerySerializer,
    MemberAddSerializer,
    MemberSerializer,
    MessageInSerializer,
    ReactionInSerializer,
    ReactionQuerySerializer,
    RepliesQuerySerializer,
    RoomSerializer,
    RoomUpdateSerializer,
)
from chat.services import (
    Actor,
    ChatError,
    RoomRef,
    dm_open,
    message_send,
    reaction_set,
    room_create,
    room_delete,
    room_member_add,
    room_member_remove,
    room_update,
)
from tenants.context import current_schema


def _room_or_404(slug: str) -> Room:
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise Http404("No such room.")
    return room


def _visible_room_or_404(request: Request, slug: str) -> Room:
    room = selectors.visible_room(Actor.of(request.user), slug)
    if room is None:
        raise Http404("No such room.")
    return room


class RoomListCreateView(ListCreateAPIView):
    serializer_class = RoomSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.visible_rooms(Actor.of(self.request.user))

    def perform_create(self, serializer: RoomSerializer) -> None:  # type: ignore[override]
        data = serializer.validated_data
        if data.get("is_private") and not self.request.user.is_staff:
            raise PermissionDenied("Only a tenant admin may create a private room.")
        # The room budget's ChatError (rate_limited) is answered 429 by chat.api_errors.
        room = room_create(
            schema_name=current_schema(),
            actor=Actor.of(self.request.user),
            slug=data["slug"],
            name=data.get("name", ""),
            is_private=data.get("is_private", False),
        )
        room.unread_count = 0  # type: ignore[attr-defined]
        serializer.instance = room


class RoomDetailView(APIView):
    def get_permissions(self) -> list[Any]:
        if self.request.method in ("PATCH", "DELETE"):
            return [IsAuthenticated(), IsTenantAdmin()]
        return [IsAuthenticated()]

    @extend_schema(responses=RoomSerializer)
    def get(self, request: Request, slug: str) -> Response:
        return Response(RoomSerializer(_visible_room_or_404(request, slug)).data)

    @extend_schema(request=RoomUpdateSerializer, responses=RoomSerializer)
    def patch(self, request: Request, slug: str) -> Response:
        room = _room_or_404(slug)
        payload = RoomUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        room = room_update(
            schema_name=current_schema(),
            room=room,
            name=payload.validated_data.get("name"),
            is_private=payload.validated_data.get("is_private"),
        )
        # An admin need not be a member of the (now) private room: fall back to the room
        # itself (unread_count 0) rather than answering 404 for a change that was applied.
        shown = selectors.visible_room(Actor.of(request.user), room.slug) or room
        return Response(RoomSerializer(shown).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        room_delete(schema_name=current_schema(), room=_room_or_404(slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomMembersView(ListAPIView):
    """Members of a room (they matter for private rooms); admins only."""

    permission_classes = [IsAuthenticated, IsTenantAdmin]
    serializer_class = MemberSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        room = _room_or_404(self.kwargs["slug"])
        return room.memberships.select_related("user").order_by("user_id")

    @extend_schema(request=MemberAddSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = _room_or_404(slug)
        payload = MemberAddSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            membership, created = room_member_add(
                schema_name=current_schema(), room=room, user_id=payload.validated_data["user_id"]
            )
        except ChatError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise api_exception(exc) from exc
            # The missing thing is the user the body names, not the resource: a field error.
            raise ValidationError({"user_id": [exc.detail]}) from exc
        return Response(
            MemberSerializer(membership).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class RoomMemberDetailView(APIView):
    permission_classes = [IsAuthenticated, IsTenantAdmin]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str, user_id: int) -> Response:
        room = _room_or_404(slug)
        if not room_member_remove(schema_name=current_schema(), room=room, user_id=user_id):
            raise Http404("This user is not a member of this room.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomMessagesView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "before", int, description="Messages with a smaller seq, newest first"
            ),
            OpenApiParameter("after", int, description="Messages with a larger seq, oldest first"),
            OpenApiParameter("limit", int, description="Default 50, at most 200"),
        ],
        responses=ChatMessageFrameSerializer(many=True),
    )
    def get(self, request: Request, slug: str) -> Response:
        room = _visible_room_or_404(request, slug)
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        frames = selectors.room_history(
            room=room,
            before=query.validated_data.get("before"),
            after=query.validated_data.get("after"),
            limit=query.validated_data.get("limit", settings.CHAT_HISTORY_DEFAULT_LIMIT),
        )
        return Response(frames)

    @extend_schema(
        request=MessageInSerializer,
        responses={201: ChatMessageFrameSerializer, 200: ChatMessageFrameSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        room = _visible_room_or_404(request, slug)
        payload = MessageInSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            frame, created = async_to_sync(message_send)(
                schema_name=current_schema(),
                room=RoomRef(id=room.pk, slug=room.slug, is_private=room.is_private),
                actor=Actor.of(request.user),
                body=payload.validated_data["message"],
                client_id=payload.validated_data.get("client_id"),
                parent_id=payload.validated_data.get("parent_id"),
                attachments=payload.validated_data.get("attachments"),
            )
        except AttachmentRefused as exc:  # not_found too: the ids named in the body are at fault
            raise ValidationError({"attachments": [exc.detail]}, code=str(exc.code)) from exc
        except ChatError as exc:  # e.g. not_found: the room was deleted during the send
            if exc.field is not None and exc.code == ErrorCode.NOT_FOUND:
                # The missing thing is what a body field names (a parent), not the room.
                raise ValidationError({exc.field: [exc.detail]}) from exc
            raise api_exception(exc, field=exc.field or "message") from exc
        return Response(frame, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ThreadRepliesView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Replies with a larger seq"),
            OpenApiParameter("limit", int, description="Default 50, at most 200"),
        ],
        responses=ChatMessageFrameSerializer(many=True),
    )
    def get(self, request: Request, slug: str, message_id: int) -> Response:
        """The replies of a thread (not its root), oldest first."""
        room = _visible_room_or_404(request, slug)
        query = RepliesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        frames = selectors.thread_replies(
            room=room,
            root_id=message_id,
            after=query.validated_data.get("after"),
            limit=query.validated_data.get("limit", settings.CHAT_HISTORY_DEFAULT_LIMIT),
        )
        if frames is None:
            raise Http404("No such top-level message in this room.")
        return Response(frames)


class MessageReactionsView(APIView):
    """Reactions over REST, the same service as the `react` / `unreact` frames."""

    def _set(self, request: Request, slug: str, message_id: int, emoji: str, add: bool) -> Response:
        room = _visible_room_or_404(request, slug)
        try:
            frame, changed = async_to_sync(reaction_set)(
                schema_name=current_schema(),
                room=RoomRef(id=room.pk, slug=room.slug, is_private=room.is_private),
                actor=Actor.of(request.user),
                message_id=message_id,
                emoji=emoji,
                add=add,
            )
        except ChatError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise Http404(exc.detail) from exc
            raise api_exception(exc, field=exc.field) from exc
        created = add and changed
        return Response(frame, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        request=ReactionInSerializer,
        responses={201: ChatReactionFrameSerializer, 200: ChatReactionFrameSerializer},
    )
    def post(self, request: Request, slug: str, message_id: int) -> Response:
        """Add the caller's emoji (201; 200 when it was there already)."""
        payload = ReactionInSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return self._set(request, slug, message_id, payload.validated_data["emoji"], True)

    @extend_schema(
        parameters=[OpenApiParameter("emoji", str, required=True)],
        responses={200: ChatReactionFrameSerializer},
    )
    def delete(self, request: Request, slug: str, message_id: int) -> Response:
        """Remove the caller's emoji (200 with the counts, also when it was not there)."""
        query = ReactionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return self._set(request, slug, message_id, query.validated_data["emoji"], False)


class DmView(APIView):
    @extend_schema(request=DmInSerializer, responses={201: RoomSerializer, 200: RoomSerializer})
    def post(self, request: Request) -> Response:
        """The caller's direct message with another user: created the first time (201),
        the same room after (200)."""
        payload = DmInSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            room, created = dm_open(
                schema_name=current_schema(),
                actor=Actor.of(request.user),
                user_id=payload.validated_data.get("user_id"),
                username=payload.validated_data.get("username"),
            )
        except ChatError as exc:
            if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_FRAME) and exc.field:
                raise ValidationError({exc.field: [exc.detail]}) from exc
            raise api_exception(exc) from exc
        return Response(room, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
