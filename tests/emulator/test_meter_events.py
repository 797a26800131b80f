"""Meter events: identifiers, timestamp window, summaries, v2 stream, adjustments, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import StripeEmulator

from .conftest import DAY, EmulatorFactory, WebhookSink, client_for, metered_plan, minute_floor


def send(
    client: stripe.StripeClient,
    plan: Any,
    value: str,
    timestamp: int,
    identifier: str,
    **options: Any,
) -> Any:
    return client.v1.billing.meter_events.create(
        {
            "event_name": plan.meter.event_name,
            "payload": {"stripe_customer_id": plan.customer.id, "value": value},
            "timestamp": timestamp,
            "identifier": identifier,
        },
        options or None,  # type: ignore[arg-type]
    )


def total(client: stripe.StripeClient, plan: Any, start: int, end: int) -> float:
    summaries = client.v1.billing.meters.event_summaries.list(
        plan.meter.id, {"customer": plan.customer.id, "start_time": start, "end_time": end}
    )
    return float(summaries.data[0].aggregated_value)


def test_duplicate_identifier_is_a_400_that_must_not_be_retried(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client)
    event = send(client, plan, "2.5", plan.start + 60, "sub_1:2024-01:r0")
    assert event.identifier == "sub_1:2024-01:r0"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, plan, "2.5", plan.start + 60, "sub_1:2024-01:r0")
    assert raised.value.http_status == 400
    assert "An event already exists with identifier sub_1:2024-01:r0" in str(raised.value)
    assert raised.value.headers is not None
    assert raised.value.headers["stripe-should-retry"] == "false"
    assert total(client, plan, plan.start, plan.start + 3600) == 2.5
    assert [e["status"] for e in emu.meter_events()] == ["accepted", "duplicate"]


def test_identifier_longer_than_100_chars_is_rejected(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    with pytest.raises(stripe.InvalidRequestError):
        send(client, plan, "1", plan.start, "x" * 101)


def test_summaries_need_minute_aligned_bounds_start_inclusive_end_exclusive(
    client: stripe.StripeClient,
) -> None:
    plan = metered_plan(client)
    send(client, plan, "1", plan.start, "a")
    send(client, plan, "10", plan.start + 119, "b")
    send(client, plan, "100", plan.start + 120, "c")
    assert total(client, plan, plan.start, plan.start + 120) == 11
    assert total(client, plan, plan.start + 60, plan.start + 180) == 110
    with pytest.raises(stripe.InvalidRequestError) as raised:
        total(client, plan, plan.start + 1, plan.start + 120)
    assert raised.value.param == "start_time"


@pytest.mark.parametrize(("formula", "expected"), [("sum", 7.5), ("count", 3), ("last", 2)])
def test_aggregation_formulas(client: stripe.StripeClient, formula: str, expected: float) -> None:
    plan = metered_plan(client, formula=formula)
    for offset, value in ((0, "5"), (120, "2"), (60, "0.5")):
        send(client, plan, value, plan.start + offset, f"e{offset}")
    assert total(client, plan, plan.start, plan.start + 600) == expected


def test_events_count_only_after_the_aggregation_lag(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(aggregation_lag_seconds=0.3)
    client = client_for(emu)
    plan = metered_plan(client)
    send(client, plan, "4", plan.start, "lagging")
    assert total(client, plan, plan.start, plan.start + 60) == 0
    emu.wait_idle()
    assert total(client, plan, plan.start, plan.start + 60) == 4


def test_timestamp_window_sync_mode_answers_400(make_emulator: EmulatorFactory) -> None:
    client = client_for(make_emulator(timestamp_validation="sync"))
    plan = metered_plan(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        send(client, plan, "1", plan.start + 301, "too-early")  # clock's "now" is plan.start
    assert raised.value.param == "timestamp"
    assert raised.value.code == "timestamp_in_future"
    with pytest.raises(stripe.InvalidRequestError) as past:
        send(client, plan, "1", plan.start - 36 * DAY, "too-old")
    assert past.value.code == "timestamp_too_far_in_past"
    send(client, plan, "1", plan.start + 300, "edge")


def test_timestamp_window_async_mode_answers_200_and_reports(
    make_emulator: EmulatorFactory, sink: WebhookSink
) -> None:
    emu = make_emulator(timestamp_validation="async", timestamp_reference="wall")
    client = client_for(emu)
    # The SDK's v1 types do not list thin event types; the emulator accepts them anyway.
    thin_only: Any = ["v1.billing.meter.error_report_triggered"]
    endpoint = client.v1.webhook_endpoints.create({"url": sink.url, "enabled_events": thin_only})
    plan = metered_plan(client, days_ago=3)
    future = int(time.time()) + 3600
    send(client, plan, "1", future, "future-event", idempotency_key="idem-future")
    emu.wait_idle()
    assert total(client, plan, minute_floor(future) - 60, minute_floor(future) + 120) == 0
    assert emu.meter_events()[0]["error_code"] == "timestamp_in_future"

    [body] = sink.bodies()
    notification: Any = client.parse_event_notification(
        body, sink.received[0].signature, endpoint.secret
    )
    assert notification.type == "v1.billing.meter.error_report_triggered"
    assert notification.related_object.id == plan.meter.id
    event = notification.fetch_event()
    [error_type] = event.data.reason.error_types
    assert error_type.code == "timestamp_in_future"
    assert error_type.sample_errors[0].request.identifier == "idem-future"
    assert notification.fetch_related_object().id == plan.meter.id


def test_clock_reference_judges_timestamps_against_the_test_clock(
    make_emulator: EmulatorFactory,
) -> None:
    emu = make_emulator(timestamp_reference="clock")
    client = client_for(emu)
    plan = metered_plan(client, days_ago=60)  # far outside the real-time window
    send(client, plan, "3", plan.start + 60, "in-clock-window")
    assert total(client, plan, plan.start, plan.start + 120) == 3
    send(client, plan, "3", int(time.time()), "real-now-is-future-for-the-clock")
    assert emu.meter_events()[1]["error_code"] == "timestamp_in_future"


def test_unknown_customer_and_event_name_become_error_reports(
    client: stripe.StripeClient, emu: StripeEmulator, sink: WebhookSink
) -> None:
    client.v1.webhook_endpoints.create({"url": sink.url, "enabled_events": ["*"]})
    plan = metered_plan(client)
    client.v1.billing.meter_events.create(
        {
            "event_name": plan.meter.event_name,
            "payload": {"stripe_customer_id": "cus_ghost", "value": "1"},
            "timestamp": plan.start,
        }
    )
    client.v1.billing.meter_events.create(
        {"event_name": "nobody_meters_this", "payload": {"stripe_customer_id": plan.customer.id}}
    )
    # More than 15 significant digits: a 400 from v1 (docs/stripe.md#S-ME-3), a report from v2.
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meter_events.create(
            {
                "event_name": plan.meter.event_name,
                "payload": {"stripe_customer_id": plan.customer.id, "value": "1.2345678901234567"},
            }
        )
    assert raised.value.code == "meter_event_value_too_many_digits"
    session = client.v2.billing.meter_event_session.create()
    client.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": plan.meter.event_name,
                    "payload": {
                        "stripe_customer_id": plan.customer.id,
                        "value": "1.2345678901234567",
                    },
                }
            ]
        },
        {"api_key": session.authentication_token},
    )
    emu.wait_idle()
    codes = [e["error_code"] for e in emu.meter_events()]
    assert codes == [
        "meter_event_customer_not_found",
        "no_meter",
        "meter_event_value_too_many_digits",
        "meter_event_value_too_many_digits",
    ]
    thin_types = [
        client.parse_event_notification_without_verification(b).type
        for b in sink.bodies()
        if b"v2.core.event" in b
    ]
    assert sorted(thin_types) == [
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    ]


def test_v2_session_and_stream_take_100_events_per_request(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    plan = metered_plan(client)
    session = client.v2.billing.meter_event_session.create()
    assert session.authentication_token
    assert datetime.fromisoformat(session.expires_at) > datetime.now(UTC)
    stamp = datetime.fromtimestamp(plan.start + 30, UTC).isoformat()
    events: list[Any] = [
        {
            "event_name": plan.meter.event_name,
            "identifier": f"s{i}",
            "timestamp": stamp,
            "payload": {"stripe_customer_id": plan.customer.id, "value": "1"},
        }
        for i in range(100)
    ]
    options: Any = {"api_key": session.authentication_token}
    client.v2.billing.meter_event_stream.create({"events": events}, options)
    assert total(client, plan, plan.start, plan.start + 60) == 100
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.billing.meter_event_stream.create(
            {"events": [*events, events[0]]},
            options,
        )
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create({"events": events[:1]})
    assert len(emu.meter_events()) == 100


def test_cancel_adjustment_removes_the_event_from_aggregation(client: stripe.StripeClient) -> None:
    plan = metered_plan(client)
    send(client, plan, "5", plan.start, "keep")
    send(client, plan, "7", plan.start, "drop")
    adjustment = client.v1.billing.meter_event_adjustments.create(
        {"event_name": plan.meter.event_name, "type": "cancel", "cancel": {"identifier": "drop"}}
    )
    assert adjustment.status in ("pending", "complete")
    assert adjustment.cancel is not None
    assert adjustment.cancel.identifier == "drop"
    assert total(client, plan, plan.start, plan.start + 60) == 5
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create(
            {
                "event_name": plan.meter.event_name,
                "type": "cancel",
                "cancel": {"identifier": "never-sent"},
            }
        )


def test_v2_stream_error_reports_name_the_requests_idempotency_key(
    client: stripe.StripeClient, emu: StripeEmulator
) -> None:
    """One key for up to 100 events: the report names the request, never an event."""
    plan = metered_plan(client)
    session = client.v2.billing.meter_event_session.create()
    events: list[Any] = [
        {
            "event_name": plan.meter.event_name,
            "identifier": f"ghost-{i}",
            "payload": {"stripe_customer_id": "cus_ghost", "value": "1"},
        }
        for i in range(3)
    ]
    options: Any = {"api_key": session.authentication_token, "idempotency_key": "stream-req-1"}
    client.v2.billing.meter_event_stream.create({"events": events}, options)
    [thin] = client.v2.core.events.list().data
    event = client.v2.core.events.retrieve(thin.id).to_dict()
    [error_type] = event["data"]["reason"]["error_types"]
    assert error_type["code"] == "meter_event_customer_not_found"
    assert error_type["error_count"] == 3
    assert {s["request"]["identifier"] for s in error_type["sample_errors"]} == {"stream-req-1"}
