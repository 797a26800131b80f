"""Mid-period changes, cancellations, thresholds and previews: what Stripe bills, and when
(docs/stripe.md#S-CHANGE-*, S-CANCEL-*, S-THRESH-1, S-PREVIEW-1, S-LIST-1).

Every exchange here is valid, so the whole module runs in contract mode: each answer, event
and new line shape is checked against Stripe's spec as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.stripe_contract import contract_checked

from .conftest import EmulatorFactory, MeteredPlan, client_for, metered_plan


@dataclass
class Setup:
    emu: StripeEmulator
    client: stripe.StripeClient
    plan: MeteredPlan
    subscription: Any
    item: Any  # the metered item on plan.meter
    end: int  # the first period's end

    def advance(self, to: int) -> None:
        self.client.v1.test_helpers.test_clocks.advance(self.plan.clock.id, {"frozen_time": to})
        self.emu.wait_idle()

    def report(self, value: str, at: int, key: str) -> None:
        self.client.v1.billing.meter_events.create(
            {
                "event_name": self.plan.meter.event_name,
                "payload": {"stripe_customer_id": self.plan.customer.id, "value": value},
                "timestamp": at,
                "identifier": key,
            }
        )

    def invoices(self, reason: str | None = None) -> list[Any]:
        found = self.client.v1.invoices.list({"customer": self.plan.customer.id}).data
        return [i for i in found if reason is None or i.billing_reason == reason]

    def pending(self) -> list[Any]:
        params: Any = {"customer": self.plan.customer.id, "pending": True}
        return list(self.client.v1.invoice_items.list(params).data)

    def events(self, kind: str) -> list[Any]:
        return list(self.client.v1.events.list({"type": kind}).data)


@pytest.fixture
def contract_emulator(make_emulator: EmulatorFactory) -> Iterator[Any]:
    def make(**config: Any) -> StripeEmulator:
        emu = make_emulator(**config)
        stack.append(contract_checked(emu))
        stack[-1].__enter__()
        return emu

    stack: list[Any] = []
    yield make
    for checked in stack:
        checked.__exit__(None, None, None)


def start(make: Any, *, mode: str | None = None, **config: Any) -> Setup:
    """A metered subscription (plus a licensed seat) with usage 40 at a third of the period,
    the clock at half of it."""
    emu = make(**config)
    client = client_for(emu)
    plan = metered_plan(client, unit_amount=5)
    seat = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Seat"},
        }
    )
    params: Any = {
        "customer": plan.customer.id,
        "items": [{"price": plan.price.id}, {"price": seat.id, "quantity": 2}],
    }
    if mode:
        params["billing_mode"] = {"type": mode}
    subscription = client.v1.subscriptions.create(params)
    item = next(i for i in subscription["items"].data if i.price.id == plan.price.id)
    end = item.current_period_end
    setup = Setup(emu, client, plan, subscription, item, end)
    third = plan.start + (end - plan.start) // 3
    setup.advance(third)
    setup.report("40", third - 60, "first-third")
    setup.advance(plan.start + (end - plan.start) // 2)
    return setup


def now_of(setup: Setup) -> int:
    return int(setup.client.v1.test_helpers.test_clocks.retrieve(setup.plan.clock.id).frozen_time)


def test_flexible_is_the_default_billing_mode(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    assert setup.subscription.billing_mode.type == "flexible"
    classic = start(contract_emulator, mode="classic")
    assert classic.subscription.billing_mode.type == "classic"


def test_removing_a_metered_item_bills_its_usage_so_far_on_the_next_invoice(
    contract_emulator: Any,
) -> None:
    setup = start(contract_emulator)
    removed_at = now_of(setup)
    deleted = setup.client.v1.subscription_items.delete(setup.item.id)
    assert deleted.deleted is True
    [pending] = setup.pending()
    assert (pending.quantity, pending.amount) == (40, 200)
    assert pending.period is not None
    assert (pending.period.start, pending.period.end) == (setup.plan.start, removed_at)
    assert pending.parent is not None
    assert pending.parent.subscription_details is not None
    assert pending.parent.subscription_details.subscription_item == setup.item.id
    [updated] = setup.events("customer.subscription.updated")
    assert updated.data.previous_attributes is not None
    assert len(updated.data.previous_attributes["items"]["data"]) == 2
    assert len(updated.data.object["items"]["data"]) == 1

    setup.report("7", removed_at + 60, "after-removal")  # billed by nothing any more
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    usage_line = next(
        line for line in renewal.lines.data if line.parent.type == "invoice_item_details"
    )
    assert usage_line.parent.invoice_item_details.invoice_item == pending.id
    assert usage_line.parent.subscription_item_details is None  # no subscription item
    assert usage_line.pricing.price_details.price == setup.plan.price.id
    assert (usage_line.quantity, usage_line.amount) == (40, 200)
    assert renewal.total == 200 + 2000  # the usage and two seats for the next period
    assert setup.pending() == []


def test_the_removed_usage_line_can_name_the_removed_item(contract_emulator: Any) -> None:
    setup = start(contract_emulator, removed_usage_line_parent="subscription_item_details")
    setup.client.v1.subscription_items.delete(setup.item.id)
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    line = next(line for line in renewal.lines.data if line.amount == 200)
    assert line.parent.type == "subscription_item_details"
    assert line.parent.subscription_item_details.subscription_item == setup.item.id
    assert line.parent.subscription_item_details.invoice_item is not None


def test_removal_with_proration_behavior_none_bills_nothing(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    setup.client.v1.subscription_items.delete(setup.item.id, {"proration_behavior": "none"})
    assert setup.pending() == []


def test_classic_mode_never_bills_the_usage_of_a_removed_item(contract_emulator: Any) -> None:
    setup = start(contract_emulator, mode="classic")
    setup.client.v1.subscriptions.update(
        setup.subscription.id, {"items": [{"id": setup.item.id, "deleted": True}]}
    )
    assert setup.pending() == []
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    assert renewal.total == 2000  # the seats only


def test_a_price_switch_bills_the_old_price_to_now_and_the_new_one_from_now(
    contract_emulator: Any,
) -> None:
    setup = start(contract_emulator)
    client = setup.client
    cheaper = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1,
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": setup.plan.meter.id,
            },
            "product_data": {"name": "API (cheaper)"},
        }
    )
    switched_at = now_of(setup)
    client.v1.subscriptions.update(
        setup.subscription.id, {"items": [{"id": setup.item.id, "price": cheaper.id}]}
    )
    [pending] = setup.pending()
    assert (pending.quantity, pending.amount) == (40, 200)
    setup.report("10", switched_at + 60, "after-switch")
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    metered = next(
        line
        for line in renewal.lines.data
        if line.parent.type == "subscription_item_details"
        and line.pricing.price_details.price == cheaper.id
    )
    assert (metered.period.start, metered.period.end) == (switched_at, setup.end)
    assert (metered.quantity, metered.amount) == (10, 10)
    assert metered.parent.subscription_item_details.subscription_item == setup.item.id


def test_always_invoice_bills_the_removed_usage_at_once(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    setup.client.v1.subscriptions.update(
        setup.subscription.id,
        {
            "items": [{"id": setup.item.id, "deleted": True}],
            "proration_behavior": "always_invoice",
        },
    )
    [invoice] = setup.invoices("subscription_update")
    assert invoice.status == "open"
    assert invoice.total == 200
    assert setup.pending() == []


def test_cancel_with_invoice_now_bills_the_usage_so_far_on_a_final_invoice(
    contract_emulator: Any,
) -> None:
    setup = start(contract_emulator)
    canceled_at = now_of(setup)
    canceled = setup.client.v1.subscriptions.cancel(setup.subscription.id, {"invoice_now": True})
    assert canceled.status == "canceled"
    assert canceled.ended_at == canceled_at
    [final] = setup.invoices("subscription_update")
    assert final.status == "open"
    [line] = final.lines.data
    assert (line.period.start, line.period.end) == (setup.plan.start, canceled_at)
    assert (line.quantity, line.amount) == (40, 200)
    [deleted] = setup.events("customer.subscription.deleted")
    assert deleted.data.object["id"] == setup.subscription.id
    setup.advance(setup.end + 3600)
    assert setup.invoices("subscription_cycle") == []  # no renewal after cancellation


def test_the_final_invoice_of_invoice_now_can_stay_a_draft(contract_emulator: Any) -> None:
    setup = start(contract_emulator, invoice_now_finalizes=False)
    setup.client.v1.subscriptions.cancel(setup.subscription.id, {"invoice_now": True})
    [final] = setup.invoices("subscription_update")
    assert final.status == "draft"
    assert final.automatically_finalizes_at == now_of(setup) + 3600


def test_cancel_without_invoice_now_discards_the_usage(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    setup.client.v1.subscriptions.cancel(setup.subscription.id)
    assert [i.billing_reason for i in setup.invoices()] == ["subscription_create"]


def test_cancel_at_period_end_bills_the_last_period_on_a_final_invoice(
    contract_emulator: Any,
) -> None:
    setup = start(contract_emulator)
    updated = setup.client.v1.subscriptions.update(
        setup.subscription.id, {"cancel_at_period_end": True}
    )
    assert updated.cancel_at == setup.end
    [event] = setup.events("customer.subscription.updated")
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes.to_dict() == {
        "cancel_at_period_end": False,
        "cancel_at": None,
    }
    setup.advance(setup.end + 3600)
    [final] = setup.invoices("subscription_cycle")
    [line] = final.lines.data  # the metered usage only: no seats for a period to come
    assert (line.quantity, line.period.end) == (40, setup.end)
    assert final.status == "open"
    ended = setup.client.v1.subscriptions.retrieve(setup.subscription.id)
    assert (ended.status, ended.ended_at) == ("canceled", setup.end)
    assert len(setup.events("customer.subscription.deleted")) == 1


def test_a_threshold_invoice_bills_usage_so_far_and_the_renewal_the_rest(
    contract_emulator: Any,
) -> None:
    setup = start(contract_emulator)
    setup.client.v1.subscriptions.update(
        setup.subscription.id, {"billing_thresholds": {"amount_gte": 150}}
    )
    checked_at = now_of(setup)
    setup.advance(checked_at + 3600)  # Stripe evaluates thresholds as time passes
    [threshold] = setup.invoices("subscription_threshold")
    assert threshold.threshold_reason is not None
    assert threshold.threshold_reason.amount_gte == 150
    [line] = threshold.lines.data
    assert (line.quantity, line.amount) == (40, 200)
    setup.report("4", checked_at + 600, "after-threshold")
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    metered = next(line for line in renewal.lines.data if line.amount != 2000)
    assert metered.quantity == 4  # the period's 44 less the 40 already billed


def test_preview_shows_the_usage_aggregated_so_far(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    preview = setup.client.v1.invoices.create_preview(
        {"customer": setup.plan.customer.id, "subscription": setup.subscription.id}
    )
    assert preview.billing_reason == "upcoming"
    lines: list[Any] = preview.lines.data
    metered = next(line for line in lines if line.quantity == 40)
    assert metered.pricing.price_details.price == setup.plan.price.id
    assert (metered.period.start, metered.period.end) == (setup.plan.start, setup.end)
    assert metered.quantity == 40
    assert preview.total == 200 + 2000
    with pytest.raises(stripe.InvalidRequestError):
        setup.client.v1.invoices.retrieve(str(preview.id))


def test_listing_subscriptions_by_status_with_paging_and_expansion(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    client = setup.client
    customer = setup.plan.customer.id
    other = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": setup.plan.price.id}]}
    )
    third = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": setup.plan.price.id}]}
    )
    client.v1.subscriptions.cancel(other.id)

    def ids(**params: Any) -> list[str]:
        listed: Any = {"customer": customer, **params}
        return [s.id for s in client.v1.subscriptions.list(listed).auto_paging_iter()]

    assert ids() == [third.id, setup.subscription.id]  # not canceled, newest first
    assert ids(status="canceled") == ids(status="ended") == [other.id]
    assert ids(status="all", limit=1) == [third.id, other.id, setup.subscription.id]
    page = client.v1.subscriptions.list(
        {"customer": customer, "limit": 1, "expand": ["data.latest_invoice"]}
    )
    assert page.has_more is True
    assert page.data[0].latest_invoice is not None
    assert not isinstance(page.data[0].latest_invoice, str)
    assert page.data[0].latest_invoice.billing_reason == "subscription_create"


def test_a_renewal_announces_the_items_new_periods(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    first_invoice = setup.subscription.latest_invoice
    setup.advance(setup.end + 60)
    [renewed] = setup.events("customer.subscription.updated")
    previous = renewed.data.previous_attributes
    assert previous is not None
    assert previous["latest_invoice"] == first_invoice
    assert previous["items"]["data"][0]["current_period_end"] == setup.end
    assert renewed.data.object["items"]["data"][0]["current_period_start"] == setup.end


def test_an_item_added_mid_period_bills_the_meters_usage_from_then(contract_emulator: Any) -> None:
    setup = start(contract_emulator)
    client = setup.client
    other = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 2,
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": setup.plan.meter.id,
            },
            "product_data": {"name": "API (second line)"},
        }
    )
    added_at = now_of(setup)
    added = client.v1.subscription_items.create(
        {"subscription": setup.subscription.id, "price": other.id}
    )
    setup.report("5", added_at + 60, "after-add")
    setup.advance(setup.end + 3600)
    [renewal] = setup.invoices("subscription_cycle")
    by_item = {
        line.parent.subscription_item_details.subscription_item: line
        for line in renewal.lines.data
        if line.parent.type == "subscription_item_details"
    }
    # The customer's whole usage on the meter, each line over its own period (S-AGG-1).
    assert by_item[setup.item.id].quantity == 45
    assert by_item[added.id].quantity == 5
    assert by_item[added.id].period.start == added_at
