"""Process-wide background tasks, started outside any connection's context.

A task copies the context variables of the code that creates it. Our background tasks (the
presence heartbeat, the channel layer's receive loop, the authorization re-check) are made
lazily, inside the first socket's task, so they would log forever under that socket's tenant
and request id (config/logging.py). They start in an empty context instead.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_background(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run `coro` as a task of the running loop with no inherited context variables."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
