"""Every request the worker's Stripe adapter makes, and every answer it reads, fits Stripe's spec.

The real `StripeGateway` (real stripe SDK over HTTP) drives the billing emulator in contract
mode (tests/support/stripe_contract.py): each request's operation, parameter names and types
(form-encoded v1 bodies and query strings, JSON v2 bodies) and each answer (required fields,
nullability, enums, types, no invented fields) are checked against the trimmed copy of Stripe's
OpenAPI spec. EXERCISES must name every public method of StripeGateway: a new method fails
`test_every_public_gateway_method_is_exercised` until it is exercised here.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe

from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from meterbridge_local.stripe_emulator.contract import ContractRecorder
from tests.support.stripe_contract import assert_conforms, enable
from tests.support.stripe_objects import new_meter, new_metered_price

DAY = 86_400
API_KEY = "sk_test_gateway_contract"


@dataclass
class World:
    """Stripe objects as the worker meets them: a renewal draft with a metered line."""

    emulator: StripeEmulator
    recorder: ContractRecorder
    client: stripe.StripeClient
    gateway: StripeGateway
    stream_gateway: StripeGateway
    meter: Any
    price: Any
    customer: Any
    clock: Any
    subscription: Any
    draft: Any
    period: tuple[int, int]
    event_id: str
    thin_event_id: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with StripeEmulator(EmulatorConfig()).start() as emu:
        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emu.url, "meter_events": emu.url}
        )
        start = int(time.time()) - 32 * DAY
        start -= start % 60
        meter = new_meter(client, event_name="api_calls")
        price = new_metered_price(client, meter.id, unit_amount=5)
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
        customer = client.v1.customers.create({"name": "Acme", "test_clock": clock.id})
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id}]}
        )
        period_end = subscription["items"].data[0].current_period_end
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_end + 60})
        emu.wait_idle()
        draft = next(
            i
            for i in client.v1.invoices.list({"subscription": subscription.id}).data
            if i.billing_reason == "subscription_cycle"
        )
        [created] = [
            e
            for e in client.v1.events.list({"type": "invoice.created"}).data
            if e.data.object["id"] == draft.id
        ]
        # An event for a customer Stripe does not know: rejected later, in a thin error event.
        client.v1.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "payload": {"stripe_customer_id": "cus_unknown", "value": "1"},
                "identifier": "unknown-customer",
            }
        )
        [thin] = client.v2.core.events.list().data
        gateway = StripeGateway(API_KEY, api_base=emu.url, max_network_retries=0)
        stream_gateway = StripeGateway(
            API_KEY, api_base=emu.url, max_network_retries=0, meter_event_api="v2"
        )
        recorder = enable(emu)  # from here on, every exchange is checked
        yield World(
            emu,
            recorder,
            client,
            gateway,
            stream_gateway,
            meter,
            price,
            customer,
            clock,
            subscription,
            draft,
            (start, period_end),
            created.id,
            thin.id,
        )


def _lines(world: World) -> None:
    lines = list(world.gateway.invoice_lines(world.draft.id, None))
    assert [line["invoice"] for line in lines] == [world.draft.id]
    assert list(world.gateway.invoice_lines(world.draft.id, lines[0]["id"])) == []


def _thin_event(world: World) -> None:
    stored = world.emulator.store.find("v2.core.event", world.thin_event_id) or {}
    notification = json.dumps({k: v for k, v in stored.items() if k != "data"})
    by_notification = world.gateway.thin_event(notification, world.thin_event_id)
    by_id = world.gateway.thin_event(None, world.thin_event_id)
    assert by_notification["id"] == by_id["id"] == world.thin_event_id
    assert by_id["type"] == "v1.billing.meter.error_report_triggered"


def _meter_event(world: World) -> None:
    _start, end = world.period
    sent: dict[str, Any] = {
        "event_name": "api_calls",
        "payload": {"stripe_customer_id": world.customer.id, "value": "12.5"},
        "identifier": "contract-report-1",
        "timestamp": end - 1,
    }
    assert not world.gateway.create_meter_event(**sent).duplicate
    assert not world.gateway.create_meter_event(**sent).duplicate  # same key: answer replayed
    # The key used before with other parameters: the identifier's own check decides.
    changed = {**sent, "payload": {**sent["payload"], "value": "13"}}
    assert world.gateway.create_meter_event(**changed).duplicate


def _stream(world: World) -> None:
    """METER_EVENT_API=v2: the same method sends through a session and the event stream."""
    _start, end = world.period
    receipt = world.stream_gateway.create_meter_event(
        event_name="api_calls",
        payload={"stripe_customer_id": world.customer.id, "value": "3"},
        identifier="contract-stream-2",
        timestamp=end - 3,
    )
    assert receipt.request_id is None
    streamed = {operation for operation in world.recorder.operations() if "v2" in operation}
    assert streamed, "no v2 request was made"


def _meter_events(world: World) -> None:
    _meter_event(world)
    _stream(world)


def _subscriptions(world: World) -> None:
    """A sweep's listing: test-clock subscriptions only with their clock (S-LIST-3), the
    customer expanded for its tenant metadata, one page at a time."""
    assert world.gateway.subscriptions().data == []
    page = world.gateway.subscriptions(test_clock=world.clock.id, expand_customers=True, limit=1)
    [listed] = page.data
    assert listed["id"] == world.subscription.id
    assert listed["customer"]["id"] == world.customer.id
    item = listed["items"]["data"][0]
    assert item["price"]["recurring"]["meter"] == world.meter.id
    assert item["current_period_end"] > item["current_period_start"]
    after = world.gateway.subscriptions(starting_after=listed["id"], test_clock=world.clock.id)
    assert (after.data, after.has_more) == ([], False)


def _hold_resume_finalize(world: World, method: str) -> None:
    # Order matters (finalizing ends the draft): hold → resume → finalize, each on its turn.
    if method == "hold_invoice":
        assert world.gateway.hold_invoice(world.draft.id)["auto_advance"] is False
    elif method == "resume_invoice":
        assert world.gateway.resume_invoice(world.draft.id)["auto_advance"] is True
    else:
        assert world.gateway.finalize_invoice(world.draft.id)["status"] == "open"


EXERCISES: dict[str, Callable[[World], None]] = {
    "event": lambda w: assert_equal(w.gateway.event(w.event_id)["id"], w.event_id),
    "invoice_lines": _lines,
    "customer": lambda w: assert_equal(w.gateway.customer(w.customer.id)["id"], w.customer.id),
    "subscriptions": _subscriptions,
    "price": lambda w: assert_equal(w.gateway.price(w.price.id)["recurring"]["meter"], w.meter.id),
    "meter": lambda w: assert_equal(w.gateway.meter(w.meter.id)["event_name"], "api_calls"),
    "invoice": lambda w: assert_equal(w.gateway.invoice(w.draft.id)["status"], "draft"),
    "test_clock_time": lambda w: assert_equal(
        w.gateway.test_clock_time(w.clock.id), w.period[1] + 60
    ),
    "meter_usage": lambda w: assert_equal(
        str(w.gateway.meter_usage(w.meter.id, w.customer.id, *w.period)), "0"
    ),
    "thin_event": _thin_event,
    "create_meter_event": _meter_events,
    "hold_invoice": lambda w: _hold_resume_finalize(w, "hold_invoice"),
    "resume_invoice": lambda w: _hold_resume_finalize(w, "resume_invoice"),
    "finalize_invoice": lambda w: _hold_resume_finalize(w, "finalize_invoice"),
}


def assert_equal(actual: object, expected: object) -> None:
    assert actual == expected


def public_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(StripeGateway, inspect.isfunction)
        if not name.startswith("_")
    }


def test_every_public_gateway_method_is_exercised() -> None:
    """A method StripeGateway gains (or loses) must be added to (or removed from) EXERCISES."""
    assert public_methods() == set(EXERCISES)


@pytest.mark.parametrize("method", list(EXERCISES))
def test_gateway_requests_and_answers_conform_to_stripes_spec(world: World, method: str) -> None:
    world.recorder.clear()
    EXERCISES[method](world)
    assert world.recorder.operations(), f"{method} made no Stripe request"
    assert_conforms(world.recorder)
