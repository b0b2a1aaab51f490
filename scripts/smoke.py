#!/usr/bin/env python3
"""Smoke test of a running server: readiness, a token for a demo user, one chat round trip.

    .venv/bin/python scripts/smoke.py http://127.0.0.1:8000

1. waits (up to --ready-timeout, 120 s) for GET {base}/readyz to answer 200;
2. POST {base}/api/auth/token/ with Host: acme.localhost as alice (password from DEMO_PASSWORD,
   default alice-password) and takes `access`;
3. GET {base}/ and {base}/static/chat/client.js with Host: acme.localhost: the demo page that
   `make run` tells newcomers to open, and the browser client it loads;
4. opens the room socket /ws/chat/smoke/?token=... on the same address with Host: acme.localhost,
   sends {"type": "message", "message": "smoke <uuid>"} and waits (up to 10 s) for the
   `chat.message` frame carrying that text, skipping other frames (presence, user.joined ...).

Prints OK and exits 0, or says what failed and exits 1. The token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect


class SmokeError(Exception):
    pass


def say(message: str) -> None:
    print(f"smoke: {message}", flush=True)


def wait_ready(client: httpx.Client, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = client.get(f"{base}/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise SmokeError(f"{base}/readyz did not answer 200 within {timeout:.0f} s ({last})")
        time.sleep(1)


def get_access_token(client: httpx.Client, base: str, host: str, user: str, password: str) -> str:
    response = client.post(
        f"{base}/api/auth/token/",
        headers={"Host": host},
        json={"username": user, "password": password},
        timeout=30,
    )
    if response.status_code != 200:
        raise SmokeError(
            f"POST /api/auth/token/ (Host: {host}, user {user}) answered "
            f"HTTP {response.status_code}: {response.text[:300]}"
        )
    try:
        access = response.json()["access"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SmokeError("POST /api/auth/token/ answered 200 without an `access` token") from exc
    if not isinstance(access, str) or not access:
        raise SmokeError("POST /api/auth/token/ answered an empty `access` token")
    return access


def check_demo_page(client: httpx.Client, base: str, host: str) -> None:
    page = client.get(f"{base}/", headers={"Host": host}, timeout=30)
    if page.status_code != 200 or "/static/chat/demo/demo.js" not in page.text:
        raise SmokeError(f"GET / (Host: {host}) is not the demo page: HTTP {page.status_code}")
    module = client.get(f"{base}/static/chat/client.js", headers={"Host": host}, timeout=30)
    if module.status_code != 200 or "export class TenantChat" not in module.text:
        raise SmokeError(f"GET /static/chat/client.js (Host: {host}): HTTP {module.status_code}")


async def chat_round_trip(base: str, host: str, room: str, token: str, timeout: float) -> None:
    parts = urlsplit(base)
    secure = parts.scheme == "https"
    address = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    # The URI names the tenant host, so that the Host header is exactly `host`; the TCP
    # connection goes to the base address (the tenant name need not resolve).
    uri = f"{'wss' if secure else 'ws'}://{host}/ws/chat/{room}/?token={token}"
    text = f"smoke {uuid.uuid4()}"
    try:
        async with connect(
            uri, host=address, port=port, proxy=None, open_timeout=15, close_timeout=5
        ) as ws:
            await ws.send(json.dumps({"type": "message", "message": text}))
            deadline = time.monotonic() + timeout
            skipped: list[str] = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SmokeError(
                        f"no chat.message with our text within {timeout:.0f} s "
                        f"(frames seen: {', '.join(skipped) or 'none'})"
                    )
                try:
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                except TimeoutError:
                    continue
                try:
                    frame = json.loads(raw)
                except ValueError:
                    skipped.append("non-JSON")
                    continue
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "chat.message" and frame.get("message") == text:
                    say(f"got chat.message seq={frame.get('seq')} in room {frame.get('room')}")
                    return
                if kind == "error":
                    raise SmokeError(f"server answered an error frame: {frame}")
                skipped.append(str(kind))
    except SmokeError:
        raise
    except Exception as exc:
        # Exception texts may quote the URI; it carries the token.
        detail = f"{type(exc).__name__}: {exc}".replace(token, "***")
        raise SmokeError(f"WebSocket /ws/chat/{room}/ (Host: {host}) failed: {detail}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="server address, e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="acme.localhost", help="tenant Host header")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--room", default="smoke")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--message-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    base = args.base.rstrip("/")
    password = os.environ.get("DEMO_PASSWORD", "alice-password")

    started = time.monotonic()
    try:
        with httpx.Client(trust_env=False) as client:
            wait_ready(client, base, args.ready_timeout)
            say(f"{base}/readyz is 200 after {time.monotonic() - started:.1f} s")
            token = get_access_token(client, base, args.host, args.user, password)
            say(f"got an access token for {args.user} on {args.host}")
            check_demo_page(client, base, args.host)
            say(f"the demo page and /static/chat/client.js answer on {args.host}")
        asyncio.run(chat_round_trip(base, args.host, args.room, token, args.message_timeout))
    except SmokeError as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"OK ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
