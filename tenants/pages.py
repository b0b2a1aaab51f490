"""The platform host's `/`: where the operator finds the API docs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def platform_home(request: HttpRequest) -> HttpResponse:
    """A page linking `/api/docs/` (and naming the demo tenant's host)."""
    return render(request, "tenants/home.html", {"host": request.get_host()})
