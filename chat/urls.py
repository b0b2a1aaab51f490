from django.urls import path

from chat.api import (
    RoomDetailView,
    RoomListCreateView,
    RoomMemberDetailView,
    RoomMembersView,
    RoomMessagesView,
)

urlpatterns = [
    path("api/rooms/", RoomListCreateView.as_view(), name="rooms"),
    path("api/rooms/<str:slug>/", RoomDetailView.as_view(), name="room-detail"),
    path("api/rooms/<str:slug>/messages/", RoomMessagesView.as_view(), name="room-messages"),
    path("api/rooms/<str:slug>/members/", RoomMembersView.as_view(), name="room-members"),
    path(
        "api/rooms/<str:slug>/members/<int:user_id>/",
        RoomMemberDetailView.as_view(),
        name="room-member-detail",
    ),
]
