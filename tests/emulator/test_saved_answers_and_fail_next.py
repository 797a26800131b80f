"""Saved idempotent answers (docs/stripe.md#S-IDEM-1) and the deterministic `fail_next` fault.

A v1 answer is saved under its Idempotency-Key once the endpoint began executing — a 500
included — and replayed to every retry with that key; the meter event identifier's own
duplicate check is separate. `fail_next` decides when a failing call fails, so a test can make
Stripe save a 500 for a meter event that was, or was not, counted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import stripe

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from meterbridge_local.stripe_emulator.config import FailRule
from tests.support.stripe_contract import enable

from .conftest import EmulatorFactory, MeteredPlan, client_for, metered_plan

AUTH = {"Authorization": "Bearer sk_test_saved"}


def meter_event(emu: StripeEmulator, plan: MeteredPlan, key: str, **fields: str) -> Any:
    """A raw v1 meter event (no SDK retries), answering the HTTP response."""
    data = {
        "event_name": plan.meter.event_name,
        "payload[stripe_customer_id]": plan.customer.id,
        "payload[value]": "5",
        "identifier": "report-1",
        "timestamp": str(plan.start),
        **fields,
    }
    return requests.post(
        f"{emu.url}/v1/billing/meter_events",
        data=data,
        headers={**AUTH, "Idempotency-Key": key},
        timeout=5,
    )


def accepted(emu: StripeEmulator) -> list[str]:
    return [e["identifier"] for e in emu.meter_events() if e["status"] == "accepted"]


def test_a_500_after_execution_is_saved_and_replayed_while_the_event_counts(
    emu: StripeEmulator,
) -> None:
    plan = metered_plan(client_for(emu))
    emu.fail_next("/v1/billing/meter_events", stage="after_execution")
    first = meter_event(emu, plan, "key-1")
    assert first.status_code == 500
    assert first.json()["error"]["type"] == "api_error"
    again = meter_event(emu, plan, "key-1")  # the fault is spent; the saved answer is not
    assert again.status_code == 500
    assert again.headers["Idempotent-Replayed"] == "true"
    assert accepted(emu) == ["report-1"]
    # Another key: the identifier's own check says the event exists.
    other = meter_event(emu, plan, "key-2")
    assert other.status_code == 400
    assert "An event already exists with identifier report-1" in other.json()["error"]["message"]


def test_a_500_during_execution_is_saved_though_nothing_was_counted(
    emu: StripeEmulator,
) -> None:
    plan = metered_plan(client_for(emu))
    emu.fail_next("/v1/billing/meter_events", stage="during_execution")
    assert meter_event(emu, plan, "key-1").status_code == 500
    assert meter_event(emu, plan, "key-1").status_code == 500  # locked out for this key
    assert accepted(emu) == []
    assert meter_event(emu, plan, "key-2").status_code == 200  # a fresh key gets through
    assert accepted(emu) == ["report-1"]


def test_a_failure_before_execution_is_not_saved(emu: StripeEmulator) -> None:
    plan = metered_plan(client_for(emu))
    emu.fail_next("/v1/billing/meter_events", count=1, status=503)
    assert meter_event(emu, plan, "key-1").status_code == 503
    retried = meter_event(emu, plan, "key-1")
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert accepted(emu) == ["report-1"]


def test_the_sdks_retries_meet_the_saved_500(emu: StripeEmulator) -> None:
    """The SDK reuses its Idempotency-Key on retries: each one gets the saved 500."""
    client = client_for(emu, max_network_retries=2)
    plan = metered_plan(client)
    emu.fail_next("/v1/billing/meter_events", stage="after_execution")
    with pytest.raises(stripe.APIError) as raised:
        client.v1.billing.meter_events.create(
            {
                "event_name": plan.meter.event_name,
                "payload": {"stripe_customer_id": plan.customer.id, "value": "5"},
                "identifier": "sdk-report",
            },
            {"idempotency_key": "sdk-key"},
        )
    assert raised.value.http_status == 500
    assert accepted(emu) == ["sdk-report"]


def test_a_key_reused_with_other_parameters_is_an_idempotency_error(emu: StripeEmulator) -> None:
    plan = metered_plan(client_for(emu))
    assert meter_event(emu, plan, "key-1").status_code == 200
    changed = meter_event(emu, plan, "key-1", **{"payload[value]": "6"})
    assert changed.status_code == 400
    assert changed.json()["error"]["type"] == "idempotency_error"


def test_validation_errors_are_not_saved(emu: StripeEmulator) -> None:
    plan = metered_plan(client_for(emu))
    missing = meter_event(emu, plan, "key-1", event_name="")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "parameter_missing"
    assert meter_event(emu, plan, "key-1").status_code == 200


def test_saved_answers_are_forgotten_after_the_memory(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(idempotency_memory_seconds=0)
    plan = metered_plan(client_for(emu))
    emu.fail_next("/v1/billing/meter_events", stage="during_execution")
    assert meter_event(emu, plan, "key-1").status_code == 500
    assert meter_event(emu, plan, "key-1").status_code == 200


def test_v2_keeps_no_failed_answer(emu: StripeEmulator) -> None:
    """API v2 retries finish the work instead of replaying a failure (S-IDEM-2)."""
    client = client_for(emu)
    plan = metered_plan(client)
    token = client.v2.billing.meter_event_session.create().authentication_token
    body = {
        "events": [
            {
                "event_name": plan.meter.event_name,
                "payload": {"stripe_customer_id": plan.customer.id, "value": "2"},
                "identifier": "streamed",
            }
        ]
    }
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "stream-1"}
    emu.fail_next("/v2/billing/meter_event_stream", stage="during_execution")
    url = f"{emu.url}/v2/billing/meter_event_stream"
    failed = requests.post(url, json=body, headers=headers, timeout=5)
    assert failed.status_code == 500
    assert "code" in failed.json()["error"]  # v2 errors always name a code
    assert requests.post(url, json=body, headers=headers, timeout=5).status_code == 200
    assert accepted(emu) == ["streamed"]


def test_fail_next_counts_calls_and_matches_path_prefix_and_method(emu: StripeEmulator) -> None:
    client = client_for(emu)
    customer = client.v1.customers.create({"name": "Acme"})
    emu.fail_next("/v1/customers/", count=2, status=429, method="GET")
    client.v1.customers.update(customer.id, {"name": "Acme 2"})  # POST: not matched
    for _ in range(2):
        with pytest.raises(stripe.RateLimitError):
            client.v1.customers.retrieve(customer.id)
    assert client.v1.customers.retrieve(customer.id).name == "Acme 2"
    assert emu.config.fail_next == []


def test_fail_next_from_config_and_over_the_control_routes(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(fail_next=[FailRule("/v1/products", count=1, status=503)])
    client = client_for(emu)
    with pytest.raises(stripe.APIError) as raised:
        client.v1.products.create({"name": "x"})
    assert raised.value.http_status == 503
    control = f"{emu.url}/_emulator/faults"
    rule = {"path": "/v1/prices", "count": 3, "status": 500, "stage": "after_execution"}
    added = requests.post(f"{control}/fail_next", json=rule, timeout=5)
    assert added.status_code == 200
    assert added.json()["fail_next"] == [{**rule, "method": None}]
    assert requests.get(control, timeout=5).json() == added.json()
    assert requests.delete(control, timeout=5).json() == {"fail_next": []}
    bad = requests.post(f"{control}/fail_next", json={"path": "/x", "stage": "later"}, timeout=5)
    assert bad.status_code == 400


def test_contract_findings_are_served_over_the_control_route() -> None:
    with StripeEmulator(EmulatorConfig()).start() as emu:
        assert requests.get(f"{emu.url}/_emulator/contract", timeout=5).json() == {
            "enabled": False,
            "operations": [],
            "violations": [],
        }
        enable(emu)
        client_for(emu).v1.customers.create({"name": "Acme"})
        served = json.loads(requests.get(f"{emu.url}/_emulator/contract", timeout=5).text)
        assert served == {"enabled": True, "operations": ["POST /v1/customers"], "violations": []}
