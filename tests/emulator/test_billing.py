"""Subscriptions, test clocks and invoices: the month-end sequence meterbridge exists for."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator

from .conftest import EmulatorFactory, MeteredPlan, WebhookSink, client_for, metered_plan


def subscribe(client: stripe.StripeClient, plan: MeteredPlan) -> Any:
    return client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )


def report(client: stripe.StripeClient, plan: MeteredPlan, value: str, at: int, key: str) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": plan.meter.event_name,
            "payload": {"stripe_customer_id": plan.customer.id, "value": value},
            "timestamp": at,
            "identifier": key,
        }
    )


def advance(client: stripe.StripeClient, emu: StripeEmulator, plan: MeteredPlan, to: int) -> None:
    clock = client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": to})
    assert clock.status in ("advancing", "ready")
    emu.wait_idle()
    assert client.v1.test_helpers.test_clocks.retrieve(plan.clock.id).status == "ready"


def renewal(client: stripe.StripeClient, subscription_id: str) -> Any:
    invoices = client.v1.invoices.list({"subscription": subscription_id}).data
    return next(i for i in invoices if i.billing_reason == "subscription_cycle")


def test_first_invoice_finalizes_immediately_with_zero_usage(
    client: stripe.StripeClient,
) -> None:
    plan = metered_plan(client)
    subscription = subscribe(client, plan)
    first = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert first.billing_reason == "subscription_create"
    assert first.status == "open"
    assert first.parent is not None
    assert first.parent.subscription_details is not None
    assert first.parent.subscription_details.subscription == subscription.id
    [line] = first.lines.data
    assert line.quantity == 0
    assert line.pricing is not None
    assert line.pricing.price_details is not None
    assert line.pricing.price_details.price == plan.price.id


def test_renewal_draft_then_finalization_with_aggregated_usage(
    client: stripe.StripeClient, emu: StripeEmulator, sink: WebhookSink
) -> None:
    endpoint = client.v1.webhook_endpoints.create({"url": sink.url, "enabled_events": ["*"]})
    plan = metered_plan(client, unit_amount=3)
    subscription = subscribe(client, plan)
    item = subscription["items"].data[0]
    period_end = item.current_period_end
    # The clock still stands at the period start: timestamps may lead it by 5 minutes at most.
    report(client, plan, "40", plan.start + 60, "early")
    report(client, plan, "2", plan.start + 300, "later")

    advance(client, emu, plan, period_end + 60)
    draft = renewal(client, subscription.id)
    assert draft.status == "draft"
    assert draft.created == period_end
    assert draft.automatically_finalizes_at == period_end + 3600
    [line] = draft.lines.data
    assert (line.period.start, line.period.end) == (plan.start, period_end)
    assert line.parent is not None
    assert line.parent.subscription_item_details is not None
    assert line.parent.subscription_item_details.subscription_item == item.id

    created = [
        stripe.Webhook.construct_event(r.body, r.signature, endpoint.secret or "")
        for r in sink.received
        if b'"invoice.created"' in r.body
    ]
    # Deliveries overlap: the first invoice's may still arrive after the renewal's.
    assert draft.id in [e.data.object.id for e in created]
    stripe.WebhookSignature.verify_header(
        sink.received[0].body.decode(), sink.received[0].signature, endpoint.secret or ""
    )

    # Usage reported during the grace period for the previous period still counts.
    report(client, plan, "8", period_end - 1, "grace")
    advance(client, emu, plan, period_end + 3600)
    final = client.v1.invoices.retrieve(draft.id)
    assert final.status == "open"
    assert final.lines.data[0].quantity == 50
    assert final.amount_due == 150
    types = [json.loads(b)["type"] for b in sink.bodies()]
    assert types.count("invoice.finalized") == 2
    assert "test_helpers.test_clock.ready" in types


def test_usage_not_yet_aggregated_misses_the_invoice(make_emulator: EmulatorFactory) -> None:
    """The naive integration: report, advance past grace at once, the usage is not billed."""
    emu = make_emulator(aggregation_lag_seconds=0.5)
    client = client_for(emu)
    plan = metered_plan(client)
    subscription = subscribe(client, plan)
    period_end = subscription["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": period_end + 1})
    emu.wait_idle()
    report(client, plan, "12", period_end - 60, "naive")
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": period_end + 3601})
    emu.wait_idle()
    invoice = renewal(client, subscription.id)
    assert invoice.status == "open"
    assert invoice.lines.data[0].quantity == 0
    summary = client.v1.billing.meters.event_summaries.list(
        plan.meter.id,
        {"customer": plan.customer.id, "start_time": plan.start, "end_time": period_end},
    )
    assert float(summary.data[0].aggregated_value) == 12


def test_auto_advance_false_waits_for_explicit_finalize(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client)
    subscription = subscribe(client, plan)
    period_end = subscription["items"].data[0].current_period_end
    advance(client, emu, plan, period_end + 1)
    draft = renewal(client, subscription.id)
    held = client.v1.invoices.update(draft.id, {"auto_advance": False, "metadata": {"k": "v"}})
    assert held.auto_advance is False
    assert held.automatically_finalizes_at is None
    report(client, plan, "9", period_end - 5, "late")
    advance(client, emu, plan, period_end + 2 * 86400)
    assert client.v1.invoices.retrieve(draft.id).status == "draft"
    final = client.v1.invoices.finalize_invoice(draft.id)
    assert final.status == "open"
    assert final.lines.data[0].quantity == 9
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.finalize_invoice(draft.id)


def test_one_advance_over_several_periods_bills_each_in_order(
    make_emulator: EmulatorFactory,
) -> None:
    emu = make_emulator(timestamp_reference="wall")  # lets usage lead the clock
    client = client_for(emu)
    plan = metered_plan(client, days_ago=33)
    subscription = subscribe(client, plan)
    first_end = subscription["items"].data[0].current_period_end
    report(client, plan, "5", first_end - 10, "p1")
    advance(client, emu, plan, first_end + 40 * 86400)
    cycles = [
        i
        for i in client.v1.invoices.list({"customer": plan.customer.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert len(cycles) == 2
    oldest, newest = sorted(cycles, key=lambda i: i.created)
    assert oldest.created == first_end
    assert oldest.lines.data[0].quantity == 5
    assert newest.lines.data[0].quantity == 0
    assert all(i.status == "open" for i in cycles)


def test_clock_cannot_go_backwards(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": plan.start - 1})


def test_seeded_old_shape_invoice_with_more_lines_than_embedded(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    lines = [
        {"object": "line_item", "amount": i, "period": {"start": 0, "end": 1}, "quantity": i}
        for i in range(12)
    ]
    seeded = emu.seed(
        "invoice",
        {"customer": "cus_old", "subscription": "sub_old", "lines": {"data": lines}},
    )
    fetched = client.v1.invoices.retrieve(seeded["id"])
    assert fetched.to_dict()["subscription"] == "sub_old"
    assert fetched.lines.has_more
    assert len(fetched.lines.data) == 10
    every = list(client.v1.invoices.line_items.list(seeded["id"], {"limit": 5}).auto_paging_iter())
    assert [line.quantity for line in every] == list(range(12))
    assert [i.id for i in client.v1.invoices.list({"subscription": "sub_old"}).data] == [
        seeded["id"]
    ]


def test_events_are_listed_and_retrievable_with_snapshots(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    subscription = subscribe(client, plan)
    created = client.v1.events.list({"type": "invoice.created"}).data
    assert [e.data.object["id"] for e in created] == [subscription.latest_invoice]
    event = client.v1.events.retrieve(created[0].id)
    assert event.api_version == stripe.api_version
    assert event.data.object["object"] == "invoice"
