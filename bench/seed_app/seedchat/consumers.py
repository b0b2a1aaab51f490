"""The Channels tutorial's chat consumer, persisting each message (the cheatsheet pattern)."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer

from seedchat.models import Message


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        if not self.scope.get("username"):
            await self.accept()
            await self.close(code=4401)
            return
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        if hasattr(self, "room_group_name"):
            await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]
        msg = await Message.objects.acreate(
            room=self.room_name, user=self.scope["username"], body=message
        )
        await self.channel_layer.group_send(
            self.room_group_name,
            {
                "type": "chat.message",
                "id": msg.id,
                "user": msg.user,
                "message": message,
                "created_at": msg.created_at.isoformat(),
            },
        )

    async def chat_message(self, event):
        await self.send(
            text_data=json.dumps(
                {
                    "type": "chat.message",
                    "id": event["id"],
                    "room": self.room_name,
                    "user": event["user"],
                    "message": event["message"],
                    "created_at": event["created_at"],
                }
            )
        )
