"""`?token=` JWT auth, the hand-written middleware of many tutorials (PyJWT, same key)."""

from urllib.parse import parse_qs

import jwt
from channels.middleware import BaseMiddleware
from django.conf import settings


class JWTAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        token = parse_qs(scope["query_string"].decode()).get("token", [None])[0]
        scope["username"] = None
        if token:
            try:
                payload = jwt.decode(token, settings.SECRET_KEY, algorithms=["HS256"])
                if payload.get("token_type") == "access":
                    scope["username"] = payload.get("username")
            except jwt.PyJWTError:
                pass
        return await super().__call__(scope, receive, send)
