"""The contract checker finds what it must: it is the judge of the other contract tests."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from meterbridge_local.stripe_emulator.api import ROUTES
from tests.support.stripe_contract import TRIMMED_SPEC, trimmed_contract

AUTH = {"Authorization": "Bearer sk_test_checker"}


def messages(method: str, path: str, query: str = "", body: str = "") -> list[str]:
    contract = trimmed_contract()
    operation = contract.operation(method, path)
    assert operation is not None
    return contract.request_errors(operation, query, body)


def answer_errors(
    method: str, path: str, answer: dict[str, object], status: int = 200
) -> list[str]:
    contract = trimmed_contract()
    operation = contract.operation(method, path)
    assert operation is not None
    return contract.response_errors(operation, status, json.dumps(answer).encode())


def test_the_trimmed_copy_names_its_origin_and_version() -> None:
    spec = json.loads(Path(TRIMMED_SPEC).read_text())
    assert spec["x-origin"]["source"] == "stripe/openapi latest/openapi.spec3.json"
    assert "MIT" in spec["x-origin"]["license"]
    assert spec["info"]["version"].endswith(".dahlia")


def test_literal_paths_win_over_parameters() -> None:
    contract = trimmed_contract()
    preview = contract.operation("POST", "/v1/invoices/create_preview")
    by_id = contract.operation("POST", "/v1/invoices/in_123")
    assert preview is not None
    assert preview.template == "/v1/invoices/create_preview"
    assert by_id is not None
    assert by_id.template == "/v1/invoices/{invoice}"
    assert contract.operation("PUT", "/v1/invoices/in_123") is None


def test_form_requests_are_checked_by_name_and_type() -> None:
    assert messages("POST", "/v1/invoices/in_1/finalize", body="auto_advance=true") == []
    assert messages("POST", "/v1/invoices/in_1/finalize", body="auto_advance=yes") == [
        'body.auto_advance: "yes" (str), but the spec says boolean'
    ]
    assert messages("POST", "/v1/invoices/in_1/finalize", body="autoadvance=true") == [
        "body.autoadvance: not in the spec"
    ]
    found = messages(
        "GET", "/v1/billing/meters/mtr_1/event_summaries", query="customer=cus_1&start_time=x"
    )
    assert found == [
        "query.end_time: required by the spec, missing",
        'query.start_time: "x" (str), but the spec says integer',
    ]


def test_json_requests_are_checked() -> None:
    good = {"events": [{"event_name": "e", "payload": {"value": "1"}}]}
    assert messages("POST", "/v2/billing/meter_event_stream", body=json.dumps(good)) == []
    bad = {"events": [{"payload": {"value": 1}}]}
    assert messages("POST", "/v2/billing/meter_event_stream", body=json.dumps(bad)) == [
        "body.events[0].event_name: required by the spec, missing",
        "body.events[0].payload.value: 1 (int), but the spec says string",
    ]


def test_answers_are_checked_for_null_enum_and_invented_fields() -> None:
    meter = {
        "id": "mtr_1",
        "object": "billing.meter",
        "created": 1,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "max"},
        "display_name": None,
        "event_name": "e",
        "event_time_window": None,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": 1,
        "value_settings": {"event_payload_key": "value"},
        "invented": True,
    }
    assert answer_errors("GET", "/v1/billing/meters/mtr_1", meter) == [
        "response.default_aggregation.formula: 'max' is not one of ['count', 'last', 'sum']",
        "response.display_name: null, but the spec does not allow null",
        "response.invented: not in the spec",
    ]


def test_recorder_reports_unknown_operations_and_event_objects() -> None:
    with StripeEmulator(EmulatorConfig(contract_spec=str(TRIMMED_SPEC))).start() as emu:
        requests.get(f"{emu.url}/v1/charges", headers=AUTH, timeout=5)
        assert emu.contract is not None
        [unknown] = emu.contract.violations()
        assert unknown.operation == ""
        assert "no such operation in the spec" in unknown.message
        emu.contract.clear()
        # An event's data.object is checked as the resource it names.
        emu.contract.check_webhook(
            {
                "id": "evt_1",
                "object": "event",
                "created": 1,
                "livemode": False,
                "pending_webhooks": 0,
                "type": "customer.created",
                "data": {"object": {"id": "cus_1", "object": "customer"}},
            }
        )
        found = [v.message for v in emu.contract.violations()]
        assert "event.data.object.created: required by the spec, missing" in found


def test_every_route_the_emulator_serves_is_in_the_trimmed_spec() -> None:
    """A route added to the emulator must be added to scripts/trim_openapi.py (and the copy
    refreshed), so contract mode can check it."""
    contract = trimmed_contract()
    missing = []
    for method, pattern, _ in ROUTES:
        example = pattern.pattern.strip("^$").replace("([^/]+)", "x_1")
        operation = contract.operation(method, example)
        if operation is None or ("{" not in operation.template and example != operation.template):
            missing.append(f"{method} {example}")
    assert missing == []
