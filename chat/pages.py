"""The demo page of a tenant host (`/`): HTML that loads the browser client; no data in it."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def demo_page(request: HttpRequest) -> HttpResponse:
    """Sign in, rooms, chat: everything after the HTML goes through /static/chat/client.js."""
    return render(request, "chat/demo.html", {"tenant_name": request.tenant.name})  # type: ignore[attr-defined]
