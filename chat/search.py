"""Full-text search of a tenant's messages (PROTOCOL.md section 6): query builder and view.

`GET /api/search/?q=<words>[&room=<slug>][&limit=n]` answers `chat.message` frames of the
rooms the caller can read, best first. The words are split by PostgreSQL's own 'simple'
parser (the one that filled `chat_message.search_vector`, migration 0005_message_search),
so a query word is cut exactly as the same word in a message was; every word must match,
each as a prefix (`deploy` finds "deployment"). Queries run on the request's tenant
connection, whose search path is that tenant's schema only: there is no other tenant's
table to scan.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQueryField, SearchVectorField
from django.db import OperationalError, connection, transaction
from django.db.models import BooleanField, Expression, Func, Value
from django.db.models.functions import Cast
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import events, selectors
from chat.budgets import search_bucket
from chat.models import ROOM_SLUG_PATTERN, Message, Room
from chat.serializers import ChatMessageFrameSerializer
from chat.services import Actor
from tenants.context import current_schema

SEARCH_CONFIG = "simple"
QUERY_MAX_CHARS = 200


class _SearchVector(Expression):
    """`chat_message.search_vector`: the generated column lives in the table only, not in the
    model (see the migration's docstring for why), so the query names it itself."""

    output_field = SearchVectorField()

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        table = compiler.quote_name_unless_alias(Message._meta.db_table)
        return f"{table}.search_vector", []


_VECTOR = _SearchVector()


class _Matches(Func):
    """`vector @@ query`: the operator the GIN index answers."""

    arg_joiner = " @@ "
    template = "(%(expressions)s)"
    output_field = BooleanField()


def search_terms(text: str) -> list[str]:
    """The distinct lexemes that 'simple' makes of `text`: lowercased words, numbers, e-mail
    addresses, host names... exactly as the messages were indexed. Punctuation alone gives
    none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lexeme FROM unnest(to_tsvector(%s::regconfig, %s))", [SEARCH_CONFIG, text]
        )
        return [row[0] for row in cursor.fetchall()]


def prefix_tsquery(terms: list[str]) -> str:
    """`'t1':* & 't2':*`: every term, quoted (a lexeme may hold `:`, `&`, `'` or `\\`), as a
    prefix."""
    quoted = ("'" + t.replace("\\", "\\\\").replace("'", "''") + "':*" for t in terms)
    return " & ".join(quoted)


def search_sql(
    *, actor: Actor, terms: list[str], room: Room | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """The search query (SQL and parameters): ids of the messages matching every term as a
    prefix, in `room` or else in every room `actor` can read, never deleted ones; best first
    (ts_rank), ties newest first.

    With CHAT_SEARCH_RANK_WINDOW > 0 only the newest that many matches are ranked: a word in
    half of a million messages is then found by reading the newest rows backwards until the
    window is full, instead of reading and ranking every match (bench/SEARCH_RESULTS.md).
    """
    tsquery = Cast(Value(prefix_tsquery(terms)), output_field=SearchQueryField())
    matches = Message.objects.filter(_Matches(_VECTOR, tsquery), deleted_at__isnull=True)
    if room is not None:
        matches = matches.filter(room_id=room.pk)
    else:
        matches = matches.filter(room_id__in=selectors.visible_rooms(actor).values("pk"))
    candidates = matches.annotate(vector=_VECTOR).values("id", "vector")
    window = settings.CHAT_SEARCH_RANK_WINDOW
    candidates = candidates.order_by("-id")[:window] if window > 0 else candidates.order_by()
    inner, params = candidates.query.sql_with_params()
    sql = (
        # `inner` is the ORM's SQL; every value in it and here is a parameter.
        f"SELECT c.id FROM ({inner}) AS c "
        "ORDER BY ts_rank(c.vector, %s::tsquery) DESC, c.id DESC LIMIT %s"
    )
    return sql, (*params, prefix_tsquery(terms), limit)


def search_messages(
    *, actor: Actor, terms: list[str], room: Room | None, limit: int
) -> list[Message]:
    """The messages `search_sql` finds, in its order, with their user and room. PostgreSQL
    cancels the query after SEARCH_TIMEOUT_MS (SearchTimeout): one broad search never holds
    a connection and a core for long."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # SET LOCAL: for this transaction only, so the pooled connection goes back as it was.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)",
                [f"{settings.SEARCH_TIMEOUT_MS}ms"],
            )
            cursor.execute(*search_sql(actor=actor, terms=terms, room=room, limit=limit))
            ids = [row[0] for row in cursor.fetchall()]
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "57014":  # query_canceled
            raise
        raise SearchTimeout() from None
    # Deleted since the first query: still not found.
    found = (
        Message.objects.filter(deleted_at__isnull=True).select_related("user", "room").in_bulk(ids)
    )
    return [found[i] for i in ids if i in found]


def search_frames(messages: list[Message]) -> list[dict[str, Any]]:
    """The hits as `chat.message` frames, each with its room, and its attachments' fresh
    links (one more query; the caller can read every room found)."""
    from chat import attachments

    files = attachments.objects_by_message(m.pk for m in messages)
    return [
        events.chat_message(
            m, room=m.room.slug, user=m.user.get_username(), attachments=files.get(m.pk, [])
        )
        for m in messages
    ]


class SearchQuerySerializer(serializers.Serializer):
    # DRF's CharField refuses NUL bytes and lone surrogates (400), which PostgreSQL would
    # refuse with an error (500). Blank after trimming is "may not be blank".
    q = serializers.CharField(max_length=QUERY_MAX_CHARS)
    room = serializers.RegexField(
        rf"\A{ROOM_SLUG_PATTERN}\Z", required=False, max_length=64, trim_whitespace=False
    )
    limit = serializers.IntegerField(required=False, min_value=1)

    def validate_limit(self, value: int) -> int:
        # Like history's `limit`: more than the maximum is the maximum, not an error.
        return min(value, settings.CHAT_SEARCH_MAX_LIMIT)


class SearchTimeout(APIException):
    status_code = 503
    default_code = "search_timeout"
    default_detail = "The search took too long; add words or name a room."

    def __init__(self) -> None:
        super().__init__()
        self.wait = 1  # DRF's handler turns it into Retry-After


class SearchView(APIView):
    """Any signed-in user of the tenant, within the user's search budget (SEARCH_RATE,
    shared by all pods: 429 with Retry-After past it)."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "q",
                str,
                required=True,
                description="Words, each matched as a prefix (all must match); "
                f"at most {QUERY_MAX_CHARS} characters",
            ),
            OpenApiParameter("room", str, description="Only this room (a room you can read)"),
            OpenApiParameter("limit", int, description="Default 20, at most 100"),
        ],
        responses=ChatMessageFrameSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        # A plain dict, not the QueryDict: DRF reads an empty optional form value as absent,
        # but `room=` is outside the slug pattern and `limit=` is no number (400s).
        query = SearchQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        wait = search_bucket(current_schema(), request.user.pk).take()
        if wait:  # after validation: a malformed query costs nothing
            raise Throttled(wait=math.ceil(wait), detail="Too many searches.")
        terms = search_terms(query.validated_data["q"])
        if not terms:
            raise ValidationError({"q": ["No searchable word (letters or digits) in the query."]})
        room = None
        if "room" in query.validated_data:
            # A private room of others and a missing room get the same answer: no oracle.
            room = selectors.visible_room(Actor.of(request.user), query.validated_data["room"])
            if room is None:
                raise Http404("No such room.")
        messages = search_messages(
            actor=Actor.of(request.user),
            terms=terms,
            room=room,
            limit=query.validated_data.get("limit", settings.CHAT_SEARCH_DEFAULT_LIMIT),
        )
        return Response(search_frames(messages))
