"""Stripe's billing rules the emulator follows (docs/stripe.md): what each invoice line bills.

Customer-level aggregation on every line of a meter, the formulas, pre-aggregation windows and
the integer quantity (truncated), each through the real stripe SDK.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator

from .conftest import EmulatorFactory, MeteredPlan, WebhookSink, client_for, metered_plan


def report(client: stripe.StripeClient, plan: MeteredPlan, value: str, at: int, key: str) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": plan.meter.event_name,
            "payload": {"stripe_customer_id": plan.customer.id, "value": value},
            "timestamp": at,
            "identifier": key,
        }
    )


def second_price(client: stripe.StripeClient, plan: MeteredPlan, unit_amount: int = 2) -> Any:
    """Another metered price on the same meter (Stripe refuses one price twice in a
    subscription, not two prices of one meter)."""
    return client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": unit_amount,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": plan.meter.id},
            "product_data": {"name": "API (second line)"},
        }
    )


def renew(client: stripe.StripeClient, emu: StripeEmulator, plan: MeteredPlan, end: int) -> None:
    """Past the renewal and its grace period: the renewal invoice is finalized."""
    advance(client, emu, plan, end + 3600)


def advance(client: stripe.StripeClient, emu: StripeEmulator, plan: MeteredPlan, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": to})
    emu.wait_idle()


def near_end(client: stripe.StripeClient, emu: StripeEmulator, plan: MeteredPlan) -> int:
    """Subscribe, then move the clock to 10 minutes before the period ends (meter event
    timestamps may lead the clock by 5 minutes at most); returns the period end."""
    end = client.v1.subscriptions.list({"customer": plan.customer.id}).data[0]
    period_end: int = end["items"].data[0].current_period_end
    advance(client, emu, plan, period_end - 600)
    return period_end


def cycle_invoices(client: stripe.StripeClient, customer: str) -> list[Any]:
    return [
        i
        for i in client.v1.invoices.list({"customer": customer}).data
        if i.billing_reason == "subscription_cycle"
    ]


def test_two_items_on_one_meter_each_bill_the_customers_whole_usage(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client, unit_amount=5)
    other = second_price(client, plan, unit_amount=2)
    client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}, {"price": other.id}]}
    )
    end = near_end(client, emu, plan)
    report(client, plan, "12000", end - 700, "once")
    renew(client, emu, plan, end)
    [invoice] = cycle_invoices(client, plan.customer.id)
    assert [str(line.quantity_decimal) for line in invoice.lines.data] == ["12000", "12000"]
    assert [line.amount for line in invoice.lines.data] == [60000, 24000]
    assert invoice.total == 84000


def test_two_subscriptions_on_one_meter_each_bill_the_customers_whole_usage(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client)
    other = second_price(client, plan)
    first = client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    client.v1.subscriptions.create({"customer": plan.customer.id, "items": [{"price": other.id}]})
    end = near_end(client, emu, plan)
    assert end == first["items"].data[0].current_period_end
    report(client, plan, "700", end - 700, "once")
    renew(client, emu, plan, end)
    invoices = cycle_invoices(client, plan.customer.id)
    assert len(invoices) == 2
    assert [i.lines.data[0].quantity for i in invoices] == [700, 700]


def test_one_price_twice_in_a_subscription_is_refused(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create(
            {"customer": plan.customer.id, "items": [{"price": plan.price.id}] * 2}
        )


@pytest.mark.parametrize(("formula", "billed"), [("sum", 12010), ("count", 2), ("last", 10)])
def test_formulas_decide_what_the_invoice_line_bills(
    client: stripe.StripeClient, emu: StripeEmulator, formula: str, billed: int
) -> None:
    plan = metered_plan(client, formula=formula)
    client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    end = near_end(client, emu, plan)
    report(client, plan, "12000", end - 720, "big")
    report(client, plan, "10", end - 660, "small")
    renew(client, emu, plan, end)
    [invoice] = cycle_invoices(client, plan.customer.id)
    assert invoice.lines.data[0].quantity == billed


def test_hourly_window_keeps_only_the_newest_event_received_in_each_hour(
    make_emulator: EmulatorFactory,
) -> None:
    client = client_for(make_emulator(timestamp_reference="wall"))  # past hours are in window
    event_name = "windowed"
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Seats",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "event_time_window": "hour",
        }
    )
    assert meter.event_time_window == "hour"
    plan = metered_plan(client)
    hour = plan.start - plan.start % 3600 + 3600  # an hour boundary after the clock's start
    customer = plan.customer.id

    def send(value: str, at: int, key: str) -> None:
        client.v1.billing.meter_events.create(
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": customer, "value": value},
                "timestamp": at,
                "identifier": key,
            },
        )

    send("5", hour + 100, "h1-first")
    send("7", hour + 50, "h1-second")  # received later, earlier timestamp: it still replaces
    send("3", hour + 3600, "h2")
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer, "start_time": hour, "end_time": hour + 7200}
    )
    assert float(summary.data[0].aggregated_value) == 10


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"default_aggregation": {"formula": "max"}}, "default_aggregation[formula]"),
        (
            {"default_aggregation": {"formula": "sum"}, "event_time_window": "week"},
            "event_time_window",
        ),
    ],
)
def test_meter_creation_takes_the_specs_values_only(
    client: stripe.StripeClient, params: dict[str, Any], param: str
) -> None:
    meter: Any = {"display_name": "x", "event_name": "x", **params}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.create(meter)
    assert raised.value.param == param


def test_integer_quantity_is_the_decimal_truncated(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client, unit_amount=1)
    client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    end = near_end(client, emu, plan)
    report(client, plan, "4310.9", end - 700, "fraction")
    renew(client, emu, plan, end)
    [invoice] = cycle_invoices(client, plan.customer.id)
    [line] = invoice.lines.data
    assert (str(line.quantity_decimal), line.quantity) == ("4310.9", 4310)
    # Before 2026-03-25.dahlia lines show only the integer (docs/stripe.md#S-QTY-2).
    old = client_for(emu, stripe_version="2025-09-30.clover")
    old_line = old.v1.invoices.retrieve(invoice.id).lines.data[0].to_dict()
    assert "quantity_decimal" not in old_line
    assert old_line["quantity"] == 4310


def test_render_api_version_pins_every_answer_and_webhook(
    make_emulator: EmulatorFactory, sink: WebhookSink
) -> None:
    emu = make_emulator(render_api_version="2025-03-31.basil")
    client = client_for(emu)
    client.v1.webhook_endpoints.create({"url": sink.url, "enabled_events": ["invoice.created"]})
    plan = metered_plan(client)
    subscription = client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    invoice = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert "quantity_decimal" not in invoice.lines.data[0].to_dict()
    emu.wait_idle()
    [body] = sink.bodies()
    event = json.loads(body)
    assert event["api_version"] == "2025-03-31.basil"
    assert "quantity_decimal" not in event["data"]["object"]["lines"]["data"][0]


def test_webhooks_follow_their_endpoints_api_version(
    client: stripe.StripeClient, emu: StripeEmulator, sink: WebhookSink
) -> None:
    old: Any = "2025-09-30.clover"
    client.v1.webhook_endpoints.create(
        {"url": sink.url, "enabled_events": ["invoice.created"], "api_version": old}
    )
    plan = metered_plan(client)
    client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    emu.wait_idle()
    [body] = sink.bodies()
    event = json.loads(body)
    assert event["api_version"] == old
    assert "quantity_decimal" not in event["data"]["object"]["lines"]["data"][0]
    # The stored event keeps the account's version (what GET /v1/events serves).
    [stored] = client.v1.events.list({"type": "invoice.created"}).data
    assert stored.api_version == stripe.api_version
    assert str(stored.data.object["lines"]["data"][0]["quantity_decimal"]) == "0"
