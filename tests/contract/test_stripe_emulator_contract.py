"""The emulator's objects carry every top-level field of Stripe's example object for the resource.

Reference: tests/fixtures/stripe_fixtures.json, a trimmed copy of stripe/openapi's
`openapi/fixtures3.json` (MIT) made by scripts/trim_stripe_fixtures.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

FIXTURES = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "stripe_fixtures.json").read_text()
)


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, dict[str, Any]]]:
    """One object of each resource, fetched from the emulator over HTTP as raw JSON."""
    with StripeEmulator(EmulatorConfig()).start() as emu:
        client = stripe.StripeClient(
            api_key="sk_test_contract", base_addresses={"api": emu.url, "meter_events": emu.url}
        )

        def raw(method: str, path: str, **params: Any) -> dict[str, Any]:
            response = client.raw_request(method, path, **params)
            body: dict[str, Any] = json.loads(response.body)
            return body

        start = int(time.time()) - 32 * 86400
        start -= start % 60
        meter = raw(
            "post",
            "/v1/billing/meters",
            display_name="API calls",
            event_name="api_calls",
            default_aggregation={"formula": "sum"},
        )
        product = raw("post", "/v1/products", name="API")
        price = raw(
            "post",
            "/v1/prices",
            currency="usd",
            unit_amount=5,
            product=product["id"],
            recurring={"interval": "month", "usage_type": "metered", "meter": meter["id"]},
        )
        clock = raw("post", "/v1/test_helpers/test_clocks", frozen_time=start)
        customer = raw("post", "/v1/customers", name="Acme", test_clock=clock["id"])
        endpoint = raw(
            "post", "/v1/webhook_endpoints", url="http://127.0.0.1:9/x", enabled_events=["*"]
        )
        meter_event = raw(
            "post",
            "/v1/billing/meter_events",
            event_name="api_calls",
            payload={"stripe_customer_id": customer["id"], "value": "3"},
            timestamp=start,
            identifier="contract-1",
        )
        adjustment = raw(
            "post",
            "/v1/billing/meter_event_adjustments",
            event_name="api_calls",
            type="cancel",
            cancel={"identifier": "contract-1"},
        )
        summaries = raw(
            "get",
            f"/v1/billing/meters/{meter['id']}/event_summaries",
            customer=customer["id"],
            start_time=start,
            end_time=start + 60,
        )
        subscription = raw(
            "post", "/v1/subscriptions", customer=customer["id"], items=[{"price": price["id"]}]
        )
        invoice = raw("get", f"/v1/invoices/{subscription['latest_invoice']}")
        events = raw("get", "/v1/events", type="invoice.created")
        yield {
            "billing.meter": meter,
            "billing.meter_event": meter_event,
            "billing.meter_event_adjustment": adjustment,
            "billing.meter_event_summary": summaries["data"][0],
            "customer": customer,
            "event": events["data"][0],
            "invoice": invoice,
            "line_item": invoice["lines"]["data"][0],
            "plan": subscription["items"]["data"][0]["plan"],
            "price": price,
            "product": product,
            "subscription": subscription,
            "subscription_item": subscription["items"]["data"][0],
            "test_helpers.test_clock": clock,
            "webhook_endpoint": endpoint,
        }


RESOURCES = [
    "billing.meter",
    "billing.meter_event",
    "billing.meter_event_adjustment",
    "billing.meter_event_summary",
    "customer",
    "event",
    "invoice",
    "line_item",
    "plan",
    "price",
    "product",
    "subscription",
    "subscription_item",
    "test_helpers.test_clock",
    "webhook_endpoint",
]


# The fixture's subscription item is licensed; a metered one has no `quantity` (the spec makes
# it optional and never null).
ABSENT_WHEN_METERED = {"subscription_item": {"quantity"}}


@pytest.mark.parametrize("resource", RESOURCES)
def test_every_fixture_field_is_served(resource: str, served: dict[str, dict[str, Any]]) -> None:
    expected = set(FIXTURES[resource]) - ABSENT_WHEN_METERED.get(resource, set())
    missing = sorted(expected - set(served[resource]))
    assert missing == [], f"{resource} lacks Stripe fields {missing}"
    assert served[resource].get("object", FIXTURES[resource].get("object")) == FIXTURES[
        resource
    ].get("object")


def test_invoice_lines_follow_the_fixture_line_shape(served: dict[str, dict[str, Any]]) -> None:
    fixture_line = FIXTURES["invoice"]["lines"]["data"][0]
    line = served["invoice"]["lines"]["data"][0]
    assert sorted(set(fixture_line) - set(line)) == []
    assert set(fixture_line["period"]) <= set(line["period"])
    assert set(fixture_line["pricing"]) <= set(line["pricing"])
    # Beyond the fixture (which omits optional parts): where consumers find price and item.
    assert line["pricing"]["price_details"]["price"] == served["price"]["id"]
    item_details = line["parent"]["subscription_item_details"]
    assert set(fixture_line["parent"]["subscription_item_details"]) <= set(item_details)
    assert item_details["subscription_item"] == served["subscription_item"]["id"]
    assert set(FIXTURES["invoice"]["lines"]) <= set(served["invoice"]["lines"])


def test_every_served_resource_is_covered_by_the_fixture_copy() -> None:
    assert set(RESOURCES) <= set(FIXTURES)
    assert "openapi/fixtures3.json" in FIXTURES["_origin"]["source"]
