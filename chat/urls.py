from django.urls import path, register_converter

from chat.api import (
    DmView,
    MessageReactionsView,
    RoomDetailView,
    RoomListCreateView,
    RoomMemberDetailView,
    RoomMembersView,
    RoomMessagesView,
    ThreadRepliesView,
)
from chat.attachments_api import RoomAttachmentsView, attachment_download
from chat.models import ROOM_SLUG_PATTERN
from chat.pages import demo_page
from chat.search import SearchView


class RoomSlugConverter:
    """Room slugs as the contract defines them; anything else is a 404 before any query."""

    regex = ROOM_SLUG_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(RoomSlugConverter, "room")

urlpatterns = [
    path("", demo_page, name="demo"),
    path("api/rooms/", RoomListCreateView.as_view(), name="rooms"),
    path("api/rooms/<room:slug>/", RoomDetailView.as_view(), name="room-detail"),
    path("api/rooms/<room:slug>/messages/", RoomMessagesView.as_view(), name="room-messages"),
    path(
        "api/rooms/<room:slug>/messages/<int:message_id>/replies/",
        ThreadRepliesView.as_view(),
        name="thread-replies",
    ),
    path(
        "api/rooms/<room:slug>/messages/<int:message_id>/reactions/",
        MessageReactionsView.as_view(),
        name="message-reactions",
    ),
    path("api/dms/", DmView.as_view(), name="dms"),
    path("api/rooms/<room:slug>/members/", RoomMembersView.as_view(), name="room-members"),
    path(
        "api/rooms/<room:slug>/attachments/",
        RoomAttachmentsView.as_view(),
        name="room-attachments",
    ),
    path("api/attachments/<int:attachment_id>/", attachment_download, name="attachment-download"),
    path(
        "api/rooms/<room:slug>/members/<int:user_id>/",
        RoomMemberDetailView.as_view(),
        name="room-member-detail",
    ),
    path("api/search/", SearchView.as_view(), name="search"),
]
