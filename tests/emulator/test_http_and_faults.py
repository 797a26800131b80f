"""Stripe's HTTP contract: idempotency keys, retry hints, injected faults and rate limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator

from .conftest import EmulatorFactory, WebhookSink, client_for, metered_plan

AUTH = {"Authorization": "Bearer sk_test_x"}


def test_same_idempotency_key_replays_the_stored_response(emu: StripeEmulator) -> None:
    headers = {**AUTH, "Idempotency-Key": "create-acme"}
    first = requests.post(
        f"{emu.url}/v1/customers", data={"name": "Acme"}, headers=headers, timeout=5
    )
    again = requests.post(
        f"{emu.url}/v1/customers", data={"name": "Acme"}, headers=headers, timeout=5
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    listed = client_for(emu).v1.customers.list()
    assert len(listed.data) == 1


def test_same_idempotency_key_with_other_params_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    client.v1.customers.create({"name": "Acme"}, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"name": "Other"}, {"idempotency_key": "k1"})


def test_injected_5xx_carries_should_retry_and_sdk_retries_succeed(
    make_emulator: EmulatorFactory,
) -> None:
    emu = make_emulator(error_rate_5xx=1.0)
    response = requests.get(f"{emu.url}/v1/customers", headers=AUTH, timeout=5)
    assert response.status_code == 500
    assert response.headers["Stripe-Should-Retry"] == "true"
    assert response.json()["error"]["type"] == "api_error"
    with pytest.raises(stripe.APIError):
        client_for(emu).v1.customers.list()

    # An injected failure happens before any state changes and is not stored under the
    # idempotency key, so the SDK's retry with the same key creates the object exactly once.
    headers = {**AUTH, "Idempotency-Key": "retry-me"}
    failed = requests.post(
        f"{emu.url}/v1/customers", data={"name": "A"}, headers=headers, timeout=5
    )
    assert failed.status_code == 500
    emu.set_faults(error_rate_5xx=0.0)
    retried = requests.post(
        f"{emu.url}/v1/customers", data={"name": "A"}, headers=headers, timeout=5
    )
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert [c.id for c in client_for(emu).v1.customers.list().data] == [retried.json()["id"]]


def test_injected_429_is_a_rate_limit_error(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator()
    client = client_for(emu)
    emu.config.error_rate_429 = 1.0
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.list()
    assert raised.value.http_status == 429
    body: Any = raised.value.json_body
    assert body["error"]["code"] == "rate_limit"


def test_faults_can_be_limited_to_some_paths(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator()
    client = client_for(emu)
    customer = client.v1.customers.create({})
    emu.set_faults(error_rate_5xx=1.0, fault_paths=("/v1/customers/",))
    with pytest.raises(stripe.APIError):
        client.v1.customers.retrieve(customer.id)
    assert client.v1.products.create({"name": "unaffected"}).name == "unaffected"


def test_meter_event_rate_limit(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator()
    client = client_for(emu)
    plan = metered_plan(client)
    emu.set_faults(meter_event_rate_limit=3)
    outcomes = []
    for i in range(6):
        try:
            client.v1.billing.meter_events.create(
                {
                    "event_name": plan.meter.event_name,
                    "payload": {"stripe_customer_id": plan.customer.id, "value": "1"},
                    "identifier": f"burst-{i}",
                }
            )
            outcomes.append("ok")
        except stripe.RateLimitError:
            outcomes.append("429")
    assert outcomes.count("ok") == 3
    assert outcomes.count("429") == 3
    client.v1.customers.list()  # other endpoints are not limited by it


def test_webhook_retried_after_500_until_2xx(
    client: stripe.StripeClient, emu: StripeEmulator, sink: WebhookSink
) -> None:
    client.v1.webhook_endpoints.create({"url": sink.url, "enabled_events": ["customer.created"]})
    sink.fail_first = 2
    customer = client.v1.customers.create({"name": "Acme"})
    emu.wait_idle()
    bodies = sink.bodies()
    assert len(bodies) == 3
    assert {json.loads(b)["data"]["object"]["id"] for b in bodies} == {customer.id}
    assert [d["status_code"] for d in emu.webhook_deliveries()] == [500, 500, 200]
    assert len({json.loads(b)["id"] for b in bodies}) == 1


def test_unreachable_endpoint_gives_up_after_the_configured_retries(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/closed", "enabled_events": ["customer.created"]}
    )
    client.v1.customers.create({"name": "Acme"})
    emu.wait_idle()
    deliveries = emu.webhook_deliveries()
    assert len(deliveries) == 1 + len(emu.config.webhook_retry_delays)
    assert all(d["status_code"] is None for d in deliveries)
