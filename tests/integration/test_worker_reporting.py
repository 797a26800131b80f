"""The worker end to end: SQS batch (moto) → emulated Stripe (real SDK) → DynamoDB ledger (moto)."""

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger as Ledger
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.records import FailureClass
from meterbridge.domain.reports import PlannedReport, report_identifier
from meterbridge.errors import TransientError
from meterbridge.handlers import worker as worker_module
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.lambda_context import FakeLambdaContext
from tests.support.ops import queue_with_dead_letters
from tests.support.stripe_events import snapshot_event
from tests.support.worker import (
    DAY,
    USAGE,
    USAGE_QUERIES,
    Billing,
    Clock,
    enqueue,
    failed_ids,
    invoice_created,
    make_worker,
    plain,
    receive_batch,
    report_id,
    usage_source_down,
)


def run(
    worker: worker_module.Worker,
    queue: str,
    count: int = 1,
    context: FakeLambdaContext | None = None,
) -> dict[str, Any]:
    event = receive_batch(queue, count)
    response = worker_module.handler(event, context or FakeLambdaContext(), worker=worker)
    return {"event": event, "response": response, "failed": failed_ids(response)}


def identifier_of(invoice: dict[str, Any], index: int = 0) -> str:
    return report_id(invoice, index)


@dataclass
class WorkerCase:
    """One test's world: emulator, ledger, queue, and a customer with a metered price."""

    emulator: StripeEmulator
    billing: Billing
    ledger: Ledger
    ledger_table: str
    queue_url: str
    setup: dict[str, Any]

    def unpack(self) -> tuple[StripeEmulator, Billing, Ledger, str, str, dict[str, Any]]:
        return (
            self.emulator,
            self.billing,
            self.ledger,
            self.ledger_table,
            self.queue_url,
            self.setup,
        )


@pytest.fixture
def case(
    fresh_emulator_faults: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> WorkerCase:
    billing = Billing(fresh_emulator_faults)
    meter = billing.meter()
    price = billing.metered_price(meter)
    customer = billing.customer()
    USAGE[(customer["id"], meter["event_name"])] = "1234.5"
    setup = {"meter": meter, "price": price, "customer": customer}
    return WorkerCase(fresh_emulator_faults, billing, ledger, ledger_table, queue_url, setup)


def test_eligible_invoice_reports_each_line_once_with_the_timestamp_rule(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue_url)

    outcome = run(worker, queue_url)

    assert outcome["failed"] == set()
    identifier = identifier_of(invoice)
    [sent] = billing.meter_events(identifier)
    line = invoice["lines"]["data"][0]
    assert sent["status"] == "accepted"
    assert sent["event_name"] == setup["meter"]["event_name"]
    assert sent["payload"] == {"stripe_customer_id": setup["customer"]["id"], "value": "1234.5"}
    assert sent["timestamp"] == line["period"]["end"] - 1  # last second of the service period
    assert sent["idempotency_key"] == f"{identifier}:a1"  # one key per attempt
    report = ledger.report(identifier)
    assert report is not None
    assert report.status == "sent"
    assert report.value == Decimal("1234.5")
    assert report.invoice_id == invoice["id"]
    assert str(report.stripe_request_id).startswith("req_")
    assert ledger.invoice(invoice["id"]).status == "reported"  # type: ignore[union-attr]
    view = ledger.invoice_view(invoice["id"])
    assert view.record is not None
    assert [r.identifier for r in view.reports] == [identifier]


def test_legacy_shape_with_paginated_lines_reports_every_line(case: WorkerCase) -> None:
    emulator, billing, _ledger, ledger_table, queue_url, setup = case.unpack()
    meters = [billing.meter() for _ in range(12)]
    for meter in meters:
        USAGE[(setup["customer"]["id"], meter["event_name"])] = "3"
    prices = [billing.metered_price(m) for m in meters] + [billing.licensed_price()]
    invoice = billing.renewal(setup["customer"]["id"], prices, legacy=True)  # 13 lines
    assert invoice["lines"]["has_more"] is True  # Stripe embeds only 10
    assert "subscription" in invoice
    assert "parent" not in invoice
    enqueue(queue_url, invoice_created(invoice))

    outcome = run(make_worker(emulator, ledger_table, queue_url), queue_url)

    assert outcome["failed"] == set()
    sent = billing.meter_events(customer=setup["customer"]["id"])
    assert len(sent) == 12  # every metered line, the licensed one left out
    all_lines = billing.client.v1.invoices.line_items.list(invoice["id"], {"limit": 100}).data
    listed = {**invoice, "lines": {"data": [plain(line) for line in all_lines]}}
    assert {event["identifier"] for event in sent} == {report_id(listed, i) for i in range(12)}


def test_a_meter_on_two_lines_is_reported_once_and_flagged_shared(case: WorkerCase) -> None:
    """Stripe bills every line on a meter the customer's whole aggregate: two items on one
    meter bill the usage twice whatever is reported (docs/stripe.md#S-AGG-1). One report
    per customer, meter and period, and a SharedMeter finding naming both lines."""
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"], setup["price"]])
    enqueue(queue_url, invoice_created(invoice))

    assert run(make_worker(emulator, ledger_table, queue_url), queue_url)["failed"] == set()

    [sent] = billing.meter_events(customer=setup["customer"]["id"])
    assert sent["payload"]["value"] == "1234.5"
    report = ledger.report(identifier_of(invoice))
    assert report is not None
    assert set(report.line_ids) == {line["id"] for line in invoice["lines"]["data"]}
    record = ledger.invoice(invoice["id"])
    assert record is not None
    assert any("priced on 2 lines" in finding for finding in record.findings)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"status": "open"}, "not 'draft'"),
        ({"billing_reason": "subscription_threshold"}, "billing_reason 'subscription_thr"),
        ({"parent": None}, "not a subscription invoice"),
    ],
)
def test_ineligible_invoices_are_recorded_as_skipped(
    case: WorkerCase, overrides: dict[str, Any], reason: str
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]], **overrides)
    enqueue(queue_url, invoice_created(invoice))

    outcome = run(make_worker(emulator, ledger_table, queue_url), queue_url)

    assert outcome["failed"] == set()
    assert billing.meter_events(customer=setup["customer"]["id"]) == []
    record = ledger.invoice(invoice["id"])
    assert record is not None
    assert record.status == "skipped"
    assert reason in str(record.reason)


def test_invoice_without_reported_meters_is_skipped(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(
        emulator, ledger_table, queue_url, env={"METER_EVENT_NAMES": "some_other_meter"}
    )

    run(worker, queue_url)

    assert billing.meter_events(customer=setup["customer"]["id"]) == []
    assert ledger.invoice(invoice["id"]).status == "skipped"  # type: ignore[union-attr]


def test_duplicate_deliveries_and_two_events_for_one_invoice_send_one_meter_event(
    case: WorkerCase,
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    event = invoice_created(invoice)
    second_event_same_invoice = invoice_created(invoice)  # Stripe may emit two Event objects
    for queued in (event, event, second_event_same_invoice, event):
        enqueue(queue_url, queued)
    worker = make_worker(emulator, ledger_table, queue_url)

    first = run(worker, queue_url, count=4)  # all four in one batch, processed concurrently
    # Records that lost the race to the ledger claim come back and find the report sent.
    for _ in range(3):
        if not first["failed"]:
            break
        first = run(worker, queue_url, count=len(first["failed"]))
    assert first["failed"] == set()
    enqueue(queue_url, event)  # and a redelivery much later
    assert run(worker, queue_url)["failed"] == set()

    identifier = identifier_of(invoice)
    # One event counted by Stripe. (moto's conditional writes are not atomic across threads
    # the way DynamoDB's are, so a racing twin may reach Stripe and get "already exists".)
    statuses = [e["status"] for e in billing.meter_events(identifier)]
    assert statuses.count("accepted") == 1
    assert set(statuses) <= {"accepted", "duplicate"}
    assert ledger.report(identifier).status == "sent"  # type: ignore[union-attr]


class CrashingLedger(Ledger):
    """The invocation dies right after Stripe answered, before the ledger says `sent`."""

    def mark_sent(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Lambda timed out right after Stripe answered")


def crash_after_sending(case: WorkerCase) -> tuple[dict[str, Any], str, Clock]:
    """One invoice whose report reached Stripe while the ledger still says pending."""
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    clock = Clock()
    crashing = make_worker(
        emulator,
        ledger_table,
        queue_url,
        ledger=CrashingLedger(ledger_table, boto3.client("dynamodb")),
        clock=clock,
    )
    assert len(run(crashing, queue_url)["failed"]) == 1
    identifier = identifier_of(invoice)
    assert ledger.report(identifier).status == "pending"  # type: ignore[union-attr]
    return invoice, identifier, clock


def test_crash_after_stripe_accepted_is_acknowledged_on_retry(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    _invoice, identifier, clock = crash_after_sending(case)

    USAGE[(setup["customer"]["id"], setup["meter"]["event_name"])] = "999"  # source moved on
    clock.offset = 121  # the crashed attempt's lease has run out
    assert (
        run(make_worker(emulator, ledger_table, queue_url, clock=clock), queue_url)["failed"]
        == set()
    )

    report = ledger.report(identifier)
    assert report is not None
    assert report.status == "sent"
    assert report.value == Decimal("1234.5")  # what Stripe holds, not the recomputed value
    assert report.attempts == 2
    # The retry's own key reached Stripe, whose identifier check called it a duplicate.
    assert [e["status"] for e in billing.meter_events(identifier)] == ["accepted", "duplicate"]


def test_replay_after_stripes_identifier_window_sends_nothing(case: WorkerCase) -> None:
    emulator, billing, _ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    event = invoice_created(invoice)
    enqueue(queue_url, event)
    clock = Clock()
    run(make_worker(emulator, ledger_table, queue_url, clock=clock), queue_url)

    clock.offset = 8 * DAY  # DLQ replay a week later: Stripe and the event memory have forgotten
    enqueue(queue_url, event)
    assert (
        run(make_worker(emulator, ledger_table, queue_url, clock=clock), queue_url)["failed"]
        == set()
    )

    assert len(billing.meter_events(identifier_of(invoice))) == 1  # nothing even reached Stripe


@pytest.mark.parametrize("fault", ["error_rate_5xx", "error_rate_429"])
def test_stripe_errors_are_retried_with_backoff_until_success(case: WorkerCase, fault: str) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    # The customer is fetched first: fail from the meter event on by seeding the caches.
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue_url, env={"STRIPE_RATE_LIMIT_RETRIES": "0"})
    emulator.set_faults(**{fault: 1.0})

    failed = run(worker, queue_url)
    assert len(failed["failed"]) == 1
    identifier = identifier_of(invoice)
    assert billing.meter_events(identifier) == []
    assert ledger.report(identifier) is None  # failed while reading prices: nothing claimed

    emulator.set_faults(**{fault: 0.0})
    retried = run(worker, queue_url)  # back-off base 0 in tests: visible again at once
    assert retried["failed"] == set()
    assert retried["event"]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert [e["status"] for e in billing.meter_events(identifier)] == ["accepted"]
    assert ledger.report(identifier).status == "sent"  # type: ignore[union-attr]


def test_usage_source_down_then_up(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue_url)
    identifier = identifier_of(invoice)
    usage_source_down(True)
    try:
        assert len(run(worker, queue_url)["failed"]) == 1
    finally:
        usage_source_down(False)
    report = ledger.report(identifier)
    assert report is not None
    assert (report.status, report.failure_class) == ("failed", "transient")
    assert "usage warehouse is down" in str(report.last_error)

    assert run(worker, queue_url)["failed"] == set()
    assert ledger.report(identifier).status == "sent"  # type: ignore[union-attr]
    assert len(billing.meter_events(identifier)) == 1


def test_failed_record_is_delayed_with_growing_visibility(case: WorkerCase) -> None:
    emulator, billing, _ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(
        emulator, ledger_table, queue_url, env={"RETRY_BACKOFF_BASE_SECONDS": "60"}
    )
    usage_source_down(True)
    try:
        assert len(run(worker, queue_url)["failed"]) == 1
    finally:
        usage_source_down(False)
    # Not visible again right away: the worker pushed the retry 60 s out.
    assert boto3.client("sqs").receive_message(QueueUrl=queue_url).get("Messages", []) == []


@pytest.mark.parametrize(
    "kind", ["bad_value", "unknown_customer", "test_clock_future", "no_tenant"]
)
def test_permanent_errors_are_recorded_with_their_reason(case: WorkerCase, kind: str) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    customer_id = setup["customer"]["id"]
    env: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    now = int(time.time())
    if kind == "bad_value":
        USAGE[(customer_id, setup["meter"]["event_name"])] = "12345678901234567"  # 17 digits
    elif kind == "unknown_customer":
        # The customer is read (for its tenant) only with TENANT_METADATA_KEY; without it
        # Stripe's asynchronous meter error marks the report failed (test_invoice_guard).
        customer_id = "cus_doesnotexist"
        env = {"TENANT_METADATA_KEY": "tenant_id"}
    elif kind == "test_clock_future":
        # A test clock started now and advanced a month: the period lies in the real future.
        overrides = {
            "period": (now + 2 * DAY, now + 32 * DAY),
            "created": now + 32 * DAY,
            "test_clock": "clock_future",
        }
    else:
        env = {"TENANT_METADATA_KEY": "tenant_id"}
    invoice = billing.renewal(customer_id, [setup["price"]], **overrides)
    enqueue(queue_url, invoice_created(invoice))

    outcome = run(make_worker(emulator, ledger_table, queue_url, env=env), queue_url)

    assert len(outcome["failed"]) == 1  # left to reach the DLQ after maxReceiveCount
    assert billing.meter_events(customer=customer_id) == []
    invoice_record = ledger.invoice(invoice["id"])
    assert invoice_record is not None
    assert invoice_record.status == "failed"
    expected = {
        "bad_value": "17 significant digits",
        "unknown_customer": "cus_doesnotexist",
        "test_clock_future": "clock_future",
        "no_tenant": "tenant_id",
    }[kind]
    assert expected in str(invoice_record.reason)
    if kind in {"bad_value", "test_clock_future"}:
        report = ledger.report(identifier_of(invoice))
        assert report is not None
        assert (report.status, report.failure_class) == ("failed", "permanent")
        assert expected in str(report.last_error)


def test_a_batch_where_every_record_fails_returns_failures_instead_of_raising(
    case: WorkerCase,
) -> None:
    emulator, billing, _ledger, ledger_table, queue_url, setup = case.unpack()
    for _ in range(3):
        enqueue(queue_url, invoice_created(billing.renewal("cus_missing", [setup["price"]])))
    boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody="not json")

    worker = make_worker(
        emulator, ledger_table, queue_url, env={"TENANT_METADATA_KEY": "tenant_id"}
    )
    outcome = run(worker, queue_url, count=4)

    assert outcome["failed"] == {r["messageId"] for r in outcome["event"]["Records"]}


def test_zero_usage_is_reported_unless_configured_off(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    USAGE[(setup["customer"]["id"], setup["meter"]["event_name"])] = "0"
    reported = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(reported))
    run(make_worker(emulator, ledger_table, queue_url), queue_url)
    assert [e["payload"]["value"] for e in billing.meter_events(identifier_of(reported))] == ["0"]

    other = billing.customer()  # its own report: one per customer, meter and period
    USAGE[(other["id"], setup["meter"]["event_name"])] = "0"
    skipped = billing.renewal(other["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(skipped))
    run(
        make_worker(emulator, ledger_table, queue_url, env={"REPORT_ZERO_USAGE": "false"}),
        queue_url,
    )
    assert billing.meter_events(identifier_of(skipped)) == []
    assert ledger.report(identifier_of(skipped)).status == "skipped"  # type: ignore[union-attr]


def test_report_after_finalization_time_is_recorded_late(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(
        setup["customer"]["id"], [setup["price"]], automatically_finalizes_at=int(time.time()) - 5
    )
    enqueue(queue_url, invoice_created(invoice))
    run(make_worker(emulator, ledger_table, queue_url), queue_url)
    assert ledger.report(identifier_of(invoice)).status == "late"  # type: ignore[union-attr]


def test_tenant_from_customer_metadata_reaches_the_usage_source(case: WorkerCase) -> None:
    emulator, billing, _ledger, ledger_table, queue_url, setup = case.unpack()
    customer = billing.customer({"tenant_id": "acme"})
    invoice = billing.renewal(customer["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    run(
        make_worker(emulator, ledger_table, queue_url, env={"TENANT_METADATA_KEY": "tenant_id"}),
        queue_url,
    )
    [query] = [q for q in USAGE_QUERIES if q.customer == customer["id"]]
    assert query.tenant == "acme"
    assert query.meter == setup["meter"]["event_name"]
    assert (query.start, query.end) == (
        invoice["lines"]["data"][0]["period"]["start"],
        invoice["lines"]["data"][0]["period"]["end"],
    )


def test_envelope_messages_fetch_the_event_from_stripe(case: WorkerCase) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    event = emulator.seed("event", invoice_created(invoice))
    enqueue(queue_url, event, as_envelope=True)
    assert run(make_worker(emulator, ledger_table, queue_url), queue_url)["failed"] == set()
    assert ledger.report(identifier_of(invoice)).status == "sent"  # type: ignore[union-attr]


def test_finalized_invoice_meterbridge_never_saw_is_ignored_without_failing(
    case: WorkerCase,
) -> None:
    emulator, _billing, ledger, ledger_table, queue_url, _setup = case.unpack()
    event = snapshot_event("invoice.finalized", {"id": "in_never_seen", "object": "invoice"})
    enqueue(queue_url, event)
    assert run(make_worker(emulator, ledger_table, queue_url), queue_url)["failed"] == set()
    assert ledger.event_seen(event["id"], int(time.time()))


def test_a_redelivered_event_is_recognised_on_its_invoice_before_any_usage_query(
    case: WorkerCase,
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    event = invoice_created(invoice)
    worker = make_worker(emulator, ledger_table, queue_url)
    enqueue(queue_url, event)
    assert run(worker, queue_url)["failed"] == set()
    queries = len(USAGE_QUERIES)

    enqueue(queue_url, event)  # Stripe's retry of the same event
    assert run(worker, queue_url)["failed"] == set()

    assert len(USAGE_QUERIES) == queries  # recognised before any work
    recorded = ledger.invoice(invoice["id"])
    assert recorded is not None
    assert recorded.created_events == {event["id"]}
    assert not ledger.event_seen(event["id"], int(time.time()))  # no separate event item
    assert len(billing.meter_events(identifier_of(invoice))) == 1


def test_a_retry_claims_first_so_reports_already_sent_cost_no_usage_query(
    case: WorkerCase,
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    other_meter = billing.meter()
    other_price = billing.metered_price(other_meter)
    USAGE[(setup["customer"]["id"], other_meter["event_name"])] = "7"
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"], other_price])
    second = identifier_of(invoice, 1)

    class ThrottledOnce(Ledger):
        """The second report's first claim meets DynamoDB throttling."""

        def claim_new(self, report: Any, *args: Any, **kwargs: Any) -> Any:
            if report.identifier == second:
                raise TransientError("DynamoDB ThrottlingException on ledger")
            return super().claim_new(report, *args, **kwargs)

    enqueue(queue_url, invoice_created(invoice))
    throttled = make_worker(
        emulator,
        ledger_table,
        queue_url,
        ledger=ThrottledOnce(ledger_table, boto3.client("dynamodb")),
    )
    assert len(run(throttled, queue_url)["failed"]) == 1
    assert ledger.report(identifier_of(invoice)).status == "sent"  # type: ignore[union-attr]
    assert ledger.report(second) is None

    del USAGE_QUERIES[:]
    assert run(make_worker(emulator, ledger_table, queue_url), queue_url)["failed"] == set()
    assert [query.meter for query in USAGE_QUERIES] == [other_meter["event_name"]]
    assert ledger.report(second).status == "sent"  # type: ignore[union-attr]
    assert ledger.report(second).value == Decimal(7)  # type: ignore[union-attr]
    assert len(billing.meter_events(identifier_of(invoice))) == 1


def test_reports_not_started_before_the_invocation_ends_are_left_for_the_retry(
    case: WorkerCase,
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue_url)
    worker.pipeline.stripe.price(setup["price"]["id"])  # warm: planning reads no Stripe
    worker.pipeline.stripe.meter(setup["meter"]["id"])
    identifier = identifier_of(invoice)

    # A few milliseconds left: no report may start, or Lambda would kill it mid-send.
    assert (
        len(run(worker, queue_url, context=FakeLambdaContext(timeout_seconds=0.002))["failed"]) == 1
    )
    assert ledger.report(identifier) is None
    assert billing.meter_events(identifier) == []
    recorded = ledger.invoice(invoice["id"])
    assert recorded is not None
    assert recorded.status == "failed"
    assert "out of invocation time" in str(recorded.reason)
    assert not recorded.created_events  # not done: the retry must run

    assert run(worker, queue_url)["failed"] == set()
    assert ledger.report(identifier).status == "sent"  # type: ignore[union-attr]
    assert len(billing.meter_events(identifier)) == 1


def test_an_unknown_outcome_is_not_sent_again_once_stripe_may_have_forgotten_it(
    case: WorkerCase,
) -> None:
    emulator, billing, ledger, ledger_table, queue_url, _setup = case.unpack()
    _invoice, identifier, clock = crash_after_sending(case)

    # Replayed from the DLQ two days later: Stripe's identifier memory (≥ 24 h) may be gone,
    # so the same identifier could be counted a second time.
    clock.offset = 2 * DAY
    worker = make_worker(emulator, ledger_table, queue_url, clock=clock)
    assert len(run(worker, queue_url)["failed"]) == 1  # on its way to the DLQ, and alarmed
    report = ledger.report(identifier)
    assert report is not None
    assert (report.status, report.failure_class) == ("failed", FailureClass.OUTCOME_UNKNOWN)
    assert "outcome is unknown" in str(report.last_error)
    assert "meterbridge report" in str(report.last_error)
    attempts = report.attempts

    # Closed like a Stripe rejection: a later replay leaves it to the operator untouched.
    assert run(worker, queue_url)["failed"] == set()
    assert ledger.report(identifier).attempts == attempts  # type: ignore[union-attr]
    assert ledger.report(identifier).failure_class == FailureClass.OUTCOME_UNKNOWN  # type: ignore[union-attr]
    assert len(billing.meter_events(identifier)) == 1  # the first attempt's, never repeated


def test_a_permanent_refusal_clears_the_send_marker_a_transient_one_keeps_it(
    ledger: Ledger,
) -> None:
    """A permanent failure (Stripe's 400, a bad value) proves nothing was counted, so a
    replay days later may send afresh; a transient one leaves the outcome open."""
    period = ServicePeriod(start=1_000, end=2_000)
    for failure_class, kept in (("permanent", False), ("transient", True)):
        plan = PlannedReport(
            identifier=report_identifier(f"cus_{failure_class}", "mtr_marker", period),
            invoice_id="in_marker",
            customer_id=f"cus_{failure_class}",
            meter=Meter(id="mtr_marker", event_name="calls"),
            period=period,
            finalizes_at=3_000,
        )
        claim = ledger.claim_new(plan, Decimal(5), 1_999, now=10_000, lease_seconds=60)
        assert claim is not None
        assert claim.send_started_at == 10_000
        ledger.mark_failed(
            claim, failure_class=FailureClass(failure_class), reason="refused", now=10_001
        )

        again = ledger.claim(plan, now=10_000 + 3 * DAY, lease_seconds=60)
        assert again is not None
        assert (again.send_started_at == 10_000) is kept


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ("off", ["GetItem", "PutItem", "UpdateItem", "UpdateItem"]),
        # The confirmation is queued, and recorded with the invoice's outcome, in one write.
        ("confirm", ["GetItem", "PutItem", "UpdateItem", "UpdateItem"]),
    ],
)
def test_one_report_costs_four_ledger_round_trips(
    case: WorkerCase, guard: str, expected: list[str]
) -> None:
    """The ledger's round trips are most of the worker's CPU per report (bench:worker):
    invoice read (duplicate event? earlier attempt?), claim with value, sent, outcome."""
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    calls: list[str] = []
    dynamodb = boto3.client("dynamodb")
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    worker = make_worker(
        emulator, ledger_table, queue_url, dynamodb=dynamodb, env={"INVOICE_GUARD": guard}
    )
    assert run(worker, queue_url)["failed"] == set()

    assert calls == expected
    recorded = ledger.invoice(invoice["id"])
    assert recorded is not None
    assert recorded.status == "reported"
    assert (recorded.confirmation_scheduled_at is not None) is (guard == "confirm")


def test_without_a_tenant_key_the_customer_is_not_read(case: WorkerCase) -> None:
    """One Stripe call per report (the meter event): customer reads count against Stripe's
    basic rate limit, and nothing needs them without TENANT_METADATA_KEY."""
    emulator, billing, ledger, ledger_table, queue_url, setup = case.unpack()
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue_url, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue_url)
    worker.pipeline.stripe.price(setup["price"]["id"])  # warm, as in a warm container
    worker.pipeline.stripe.meter(setup["meter"]["id"])
    emulator.set_faults(error_rate_5xx=1.0, fault_paths=("/v1/customers",))
    try:
        assert run(worker, queue_url)["failed"] == set()
    finally:
        emulator.set_faults(error_rate_5xx=0.0, fault_paths=())
    assert ledger.report(identifier_of(invoice)).status == "sent"  # type: ignore[union-attr]


def test_a_permanent_failure_is_in_the_dead_letter_queue_after_one_receive(
    case: WorkerCase,
) -> None:
    """With DEAD_LETTER_QUEUE_URL the worker moves a permanent failure there at once (real
    SQS on moto): the DLQ alarm fires now, not after maxReceiveCount receives."""
    emulator, billing, ledger, ledger_table, _queue_url, setup = case.unpack()
    queue, dead_letters = queue_with_dead_letters("permanent", max_receive_count=20)
    USAGE[(setup["customer"]["id"], setup["meter"]["event_name"])] = "lots"
    invoice = billing.renewal(setup["customer"]["id"], [setup["price"]])
    enqueue(queue, invoice_created(invoice))
    worker = make_worker(emulator, ledger_table, queue, env={"DEAD_LETTER_QUEUE_URL": dead_letters})

    assert run(worker, queue)["failed"] == set()  # handled: off the event queue

    sqs = boto3.client("sqs")
    [moved] = sqs.receive_message(QueueUrl=dead_letters, MessageAttributeNames=["All"])["Messages"]
    attributes = {k: v["StringValue"] for k, v in moved["MessageAttributes"].items()}
    assert attributes["failure"] == "permanent"
    assert "not a decimal number" in attributes["failure_reason"]
    assert attributes["stripe_event_type"] == "invoice.created"
    assert sqs.receive_message(QueueUrl=queue).get("Messages", []) == []
    assert ledger.report(identifier_of(invoice)).failure_class == "permanent"  # type: ignore[union-attr]
