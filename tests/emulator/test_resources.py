"""Object CRUD, Stripe's form encoding and list pagination, through the real SDK."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator
from meterbridge_local.stripe_emulator.wire import decode_form

from .conftest import client_for, metered_plan


def test_form_decoding_builds_nested_dicts_and_lists() -> None:
    raw = "items[0][price]=p1&items[1][price]=p2&items[1][metadata][k]=v&expand[]=a&expand[]=b&x="
    assert decode_form(raw) == {
        "items": [{"price": "p1"}, {"price": "p2", "metadata": {"k": "v"}}],
        "expand": ["a", "b"],
        "x": "",
    }


def test_customer_create_retrieve_update_list(client: stripe.StripeClient) -> None:
    created = client.v1.customers.create(
        {"name": "Acme", "email": "ops@acme.test", "metadata": {"tenant": "acme", "tier": "gold"}}
    )
    assert created.id.startswith("cus_")
    assert created.metadata is not None
    assert created.metadata.to_dict() == {"tenant": "acme", "tier": "gold"}

    updated = client.v1.customers.update(created.id, {"metadata": {"tier": "", "region": "eu"}})
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"tenant": "acme", "region": "eu"}
    assert client.v1.customers.retrieve(created.id).name == "Acme"

    others = [client.v1.customers.create({"name": f"c{i}"}) for i in range(3)]
    page = client.v1.customers.list({"limit": 2})
    assert [c.id for c in page.data] == [others[2].id, others[1].id]
    assert page.has_more
    every = [c.id for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()]
    assert every == [others[2].id, others[1].id, others[0].id, created.id]


def test_missing_object_is_a_stripe_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve("cus_nope")
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"


def test_missing_api_key_is_401(emu: StripeEmulator) -> None:
    response = requests.get(f"{emu.url}/v1/customers", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["Request-Id"].startswith("req_")
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            api_key="rk_live_x", base_addresses={"api": emu.url}
        ).v1.customers.list()


def test_prices_with_meter_and_lookup_keys(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    assert plan.price.recurring.usage_type == "metered"
    assert plan.price.recurring.meter == plan.meter.id
    decimal = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.5"),
            "product": plan.price.product,
            "recurring": {"interval": "day", "interval_count": 2},
            "lookup_key": "half-cent",
        }
    )
    found = client.v1.prices.list({"lookup_keys": ["half-cent"]})
    assert [p.id for p in found.data] == [decimal.id]
    assert str(found.data[0].unit_amount_decimal) == "0.5"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 1,
                "product": plan.price.product,
                "lookup_key": "half-cent",
            }
        )


def test_meter_create_retrieve_list_and_payload_keys(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "last"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "account"},
            "value_settings": {"event_payload_key": "tokens"},
        }
    )
    fetched = client.v1.billing.meters.retrieve(meter.id)
    assert fetched.customer_mapping.event_payload_key == "account"
    assert fetched.value_settings.event_payload_key == "tokens"
    assert fetched.default_aggregation.formula == "last"
    assert fetched.status == "active"
    assert meter.id in [m.id for m in client.v1.billing.meters.list().data]


def test_subscription_items_and_webhook_endpoints(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    subscription = client.v1.subscriptions.create(
        {"customer": plan.customer.id, "items": [{"price": plan.price.id}]}
    )
    item = subscription["items"].data[0]
    assert item.id.startswith("si_")
    assert item.current_period_start == plan.start
    assert item.current_period_end > plan.start + 27 * 86400
    listed = client.v1.subscription_items.list({"subscription": subscription.id})
    assert [i.id for i in listed.data] == [item.id]
    assert client.v1.subscriptions.retrieve(subscription.id).customer == plan.customer.id
    by_customer = client.v1.subscriptions.list({"customer": plan.customer.id})
    assert [s.id for s in by_customer.data] == [subscription.id]

    endpoint = client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]}
    )
    assert (endpoint.secret or "").startswith("whsec_")
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [endpoint.id]
    client.v1.webhook_endpoints.delete(endpoint.id)
    assert client.v1.webhook_endpoints.list().data == []


def test_expand_is_accepted(emu: StripeEmulator) -> None:
    client = client_for(emu)
    customer = client.v1.customers.create({"name": "x"})
    assert client.v1.customers.retrieve(customer.id, {"expand": ["test_clock"]}).id == customer.id
