"""The webhook worker's HTTP client stack (httpx on httpcore) as the worker runs it."""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import httpx

from tests.integrations.conftest import Receiver


class _Spy(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.searched.append(fullname)
        return None


def test_requests_search_for_no_module(receiver_factory: Any) -> None:
    """httpcore imports `sniffio` for every lock, event and cancellation shield it sets up
    (several a request). Without sniffio installed (anyio 4.16 no longer brings it), each
    one was a failed import, a search of sys.path: a fifth of the webhook worker's time
    under a burst. The project depends on sniffio for it."""
    receiver: Receiver = receiver_factory(keep_alive=True)
    spy = _Spy()

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(receiver.url, content=b"{}")).raise_for_status()  # warm
            sys.meta_path.insert(0, spy)
            try:
                for _ in range(5):
                    (await client.post(receiver.url, content=b"{}")).raise_for_status()
            finally:
                sys.meta_path.remove(spy)

    asyncio.run(run())
    assert spy.searched == [], sorted(set(spy.searched))
