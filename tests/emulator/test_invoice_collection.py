"""Finalizing and collecting: what `auto_advance` leaves on the invoice (docs/stripe.md#S-FIN-1,
S-FIN-2, S-FIN-4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.stripe_contract import contract_checked

from .conftest import MeteredPlan, metered_plan


@pytest.fixture(autouse=True)
def conforming(emu: StripeEmulator) -> Iterator[None]:
    """Every request here is valid: check them and the answers against Stripe's spec."""
    with contract_checked(emu):
        yield


def held_renewal(client: stripe.StripeClient, emu: StripeEmulator) -> tuple[MeteredPlan, Any, int]:
    """A renewal draft with usage 9, held (auto_advance=false) the moment it appeared."""
    plan = metered_plan(client)
    subscription = client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    end = subscription["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": end - 600})
    emu.wait_idle()
    client.v1.billing.meter_events.create(
        {
            "event_name": plan.meter.event_name,
            "payload": {"stripe_customer_id": plan.customer.id, "value": "9"},
            "timestamp": end - 700,
            "identifier": "usage",
        }
    )
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": end + 1})
    emu.wait_idle()
    [draft] = [
        i
        for i in client.v1.invoices.list({"subscription": subscription.id}).data
        if i.billing_reason == "subscription_cycle"
    ]
    held = client.v1.invoices.update(draft.id, {"auto_advance": False})
    assert held.automatically_finalizes_at is None
    return plan, held, end


def test_finalizing_a_held_draft_without_auto_advance_leaves_it_uncollected(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    _, held, _ = held_renewal(client, emu)
    final = client.v1.invoices.finalize_invoice(held.id)
    assert final.status == "open"
    assert final.auto_advance is False
    assert final.next_payment_attempt is None  # Stripe will not charge it
    assert final.amount_due == 45


def test_finalizing_with_auto_advance_true_leaves_it_collectable(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    _, held, _ = held_renewal(client, emu)
    final = client.v1.invoices.finalize_invoice(held.id, {"auto_advance": True})
    assert final.status == "open"
    assert final.auto_advance is True
    assert final.status_transitions is not None
    assert final.next_payment_attempt == final.status_transitions.finalized_at


def test_re_enabling_auto_advance_schedules_finalization_one_grace_period_from_now(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan, held, end = held_renewal(client, emu)
    later = end + 5 * 3600  # well past the draft's original finalization time
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": later})
    emu.wait_idle()
    assert client.v1.invoices.retrieve(held.id).status == "draft"

    resumed = client.v1.invoices.update(held.id, {"auto_advance": True})
    assert resumed.automatically_finalizes_at == later + emu.config.grace_period_seconds
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": later + 3599})
    emu.wait_idle()
    assert client.v1.invoices.retrieve(held.id).status == "draft"
    client.v1.test_helpers.test_clocks.advance(plan.clock.id, {"frozen_time": later + 3600})
    emu.wait_idle()
    final = client.v1.invoices.retrieve(held.id)
    assert final.status == "open"
    assert final.auto_advance is True
    assert final.lines.data[0].quantity == 9


def test_an_explicit_finalization_time_is_kept(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    _, held, end = held_renewal(client, emu)
    resumed = client.v1.invoices.update(
        held.id, {"auto_advance": True, "automatically_finalizes_at": end + 7200}
    )
    assert resumed.automatically_finalizes_at == end + 7200
    events = client.v1.events.list({"type": "invoice.updated"}).data
    assert events[0].data.previous_attributes is not None
    assert events[0].data.previous_attributes["auto_advance"] is False


def test_auto_advance_false_on_an_open_invoice_stops_its_collection(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    """docs/stripe.md#S-FIN-4: on an open invoice auto_advance is automatic collection."""
    _, held, _ = held_renewal(client, emu)
    final = client.v1.invoices.finalize_invoice(held.id, {"auto_advance": True})
    assert final.next_payment_attempt is not None
    stopped = client.v1.invoices.update(final.id, {"auto_advance": False})
    assert stopped.status == "open"
    assert stopped.next_payment_attempt is None
    resumed = client.v1.invoices.update(final.id, {"auto_advance": True})
    assert resumed.next_payment_attempt is not None
