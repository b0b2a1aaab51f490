"""Which way a message is stored: one autocommit statement for a tenant with no active
`message.created` webhook, a transaction with its delivery rows otherwise (chat/services.py
`_persist_message`). The at-least-once promise of section 5 rests on the second; the first must
never be taken when a webhook wants the event. Real PostgreSQL, in the tenant's schema.
"""

from __future__ import annotations

import json

from tests.conftest import make_user_in, unique
from tests.realtime_helpers import in_tenant


def _send_and_count(tenant, user, room_id: int) -> tuple[int, list[dict]]:
    from chat import services
    from chat.models import Message
    from integrations.models import Delivery

    def go() -> tuple[int, list[dict]]:
        before = Delivery.objects.count()
        message, created, _ = services._persist_message(room_id, user.id, unique("m-"), None)
        assert created and Message.objects.filter(pk=message.pk, seq=message.seq).exists()
        bodies = [
            json.loads(b)
            for b in Delivery.objects.order_by("pk").values_list("body", flat=True)[before:]
        ]
        return message.pk, bodies

    return in_tenant(tenant, go)


def test_a_message_records_its_event_exactly_when_an_active_webhook_wants_it(make_tenant):
    from chat.models import Room
    from integrations.models import Webhook

    tenant = make_tenant()
    user = make_user_in(tenant)
    room_id = in_tenant(tenant, lambda: Room.objects.create(slug=unique("hp_")).pk)

    def hook(events: list[str], active: bool = True) -> int:
        return in_tenant(
            tenant,
            lambda: (
                Webhook.objects.create(
                    url="https://hooks.example.com/h", events=events, secret="s", is_active=active
                ).pk
            ),
        )

    # No webhook at all, one for other events, an inactive one: nothing recorded.
    assert _send_and_count(tenant, user, room_id)[1] == []
    hook(["room.created", "reaction.added"])
    assert _send_and_count(tenant, user, room_id)[1] == []
    inactive = hook(["message.created"], active=False)
    assert _send_and_count(tenant, user, room_id)[1] == []

    # An active one for the event, by name or by "*": one delivery each, with the message.
    named = hook(["message.created"])
    message_id, bodies = _send_and_count(tenant, user, room_id)
    assert [(b["type"], b["data"]["message"]["id"]) for b in bodies] == [
        ("message.created", message_id)
    ]
    hook(["*"])
    message_id, bodies = _send_and_count(tenant, user, room_id)
    assert [(b["type"], b["data"]["message"]["id"]) for b in bodies] == [
        ("message.created", message_id)
    ] * 2

    # Switched off again: back to none.
    in_tenant(
        tenant,
        lambda: (
            Webhook.objects.filter(pk__in=[named, inactive]).update(is_active=False)
            + Webhook.objects.filter(events=["*"]).delete()[0]
        ),
    )
    assert _send_and_count(tenant, user, room_id)[1] == []
    from chat.models import Message

    seqs = in_tenant(
        tenant,
        lambda: list(
            Message.objects.filter(room_id=room_id).order_by("seq").values_list("seq", flat=True)
        ),
    )
    assert seqs == list(range(1, 7))  # gap-free whichever way each one went


def test_finished_deliveries_leave_the_log_after_the_retention_and_pending_ones_stay(
    make_tenant,
):
    import asyncio
    from datetime import timedelta

    from django.utils import timezone

    from integrations.models import Delivery, Webhook
    from integrations.tasks import remove_old_deliveries
    from tests.conftest import blocking

    tenant = make_tenant()

    def seed() -> dict[str, int]:
        hook = Webhook.objects.create(url="https://hooks.example.com/r", events=["*"], secret="s")
        made = {}
        for name, state, days in [
            ("old_delivered", "delivered", 40),
            ("old_failed", "failed", 31),
            ("old_pending", "pending", 40),
            ("new_delivered", "delivered", 2),
        ]:
            row = Delivery.objects.create(
                webhook=hook,
                event="message.created",
                message_id=unique("msg_"),
                body="{}",
                state=state,
            )
            Delivery.objects.filter(pk=row.pk).update(
                created_at=timezone.now() - timedelta(days=days)
            )
            made[name] = row.pk
        return made

    made = in_tenant(tenant, seed)
    removed = blocking(lambda: asyncio.run(remove_old_deliveries.func(timestamp=0)))
    assert removed >= 2
    left = in_tenant(
        tenant,
        lambda: set(Delivery.objects.filter(pk__in=made.values()).values_list("pk", flat=True)),
    )
    assert left == {made["old_pending"], made["new_delivered"]}
