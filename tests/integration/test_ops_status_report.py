"""`meterbridge status` and `meterbridge report` over a ledger written by real worker runs:
SQS (moto) → worker handler → Stripe billing emulator (real SDK) → DynamoDB ledger (moto)."""

import time
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger as Ledger
from meterbridge.domain.records import FailureClass
from meterbridge.handlers import worker as worker_module
from meterbridge_local.aws import MotoServer
from meterbridge_local.lambda_runtime import FunctionConfig, SqsPoller
from meterbridge_local.resources import SqsEventSource
from tests.support import worker as support
from tests.support.guard import receive, run_records
from tests.support.ops import (
    NO_GUARD,
    Case,
    cli,
    counted_by_stripe,
    identifier,
    queue_with_dead_letters,
    wait_for_messages,
)
from tests.support.worker import USAGE

# --------------------------------------------------------------------------- status


def test_status_invoice_and_customer_show_each_report_with_value_and_deadline(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice = case.invoice()
    assert case.run_worker(invoice) == set()

    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 0, output
    assert f"invoice {invoice['id']}: reported" in output
    assert identifier(invoice) in output
    assert "sent" in output
    assert "100" in output
    deadline = time.strftime("%Y-%m-%d %H:%M", time.gmtime(invoice["automatically_finalizes_at"]))
    assert deadline in output

    code, output = cli(capsys, "status", "customer", case.customer["id"], "--since", "2000-01-01")
    assert code == 0, output
    assert invoice["id"] in output
    assert identifier(invoice) in output

    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86_400))
    code, output = cli(capsys, "status", "customer", case.customer["id"], "--since", tomorrow)
    assert code == 1
    assert "No ledger records" in output


def test_status_explains_missing_records_and_bad_dates(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = cli(capsys, "status", "invoice", "in_never_seen")
    assert code == 1
    assert "has not processed an invoice.created" in output
    code, output = cli(capsys, "status", "customer", "cus_x", "--since", "last tuesday")
    assert code == 2
    assert "is not a date" in output


# --------------------------------------------------------------------------- report


def test_report_backfills_a_report_that_failed_while_the_usage_source_was_down(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice = case.invoice()
    support.usage_source_down(True)
    try:
        assert case.run_worker(invoice)  # transient failure: the record is retried later
    finally:
        support.usage_source_down(False)
    assert case.events() == []

    code, output = cli(capsys, "report", "--invoice", invoice["id"])

    assert code == 0, output
    assert "reporting" in output
    [sent] = case.events()
    assert (sent["identifier"], sent["payload"]["value"]) == (identifier(invoice), "100")
    assert case.ledger.report(identifier(invoice)).status == "sent"  # type: ignore[union-attr]
    code, output = cli(capsys, "report", "--invoice", invoice["id"])  # nothing more to do
    assert code == 0, output
    assert "unchanged" in output
    assert len(case.events()) == 1


def test_force_sends_the_difference_as_a_new_revision_never_the_full_amount_again(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice = case.invoice()
    assert case.run_worker(invoice) == set()
    USAGE[(case.customer["id"], case.meter["event_name"])] = "130.5"  # the source was fixed

    code, output = cli(capsys, "report", "--invoice", invoice["id"])
    assert code == 1  # a difference is news, but nothing is sent without --force
    assert "differs" in output
    assert "--force" in output
    assert len(case.events()) == 1

    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")
    assert code == 0, output
    correction = identifier(invoice, revision=1)
    assert correction in output
    events = {e["identifier"]: e["payload"]["value"] for e in case.events()}
    assert events == {identifier(invoice): "100", correction: "30.5"}
    assert counted_by_stripe(case, invoice) == Decimal("130.5")
    revision = case.ledger.report(correction)
    assert revision is not None
    assert (revision.status, revision.value) == ("sent", Decimal("30.5"))

    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")  # again: no-op
    assert code == 0, output
    assert "unchanged" in output
    assert len(case.events()) == 2
    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert identifier(invoice) in output
    assert correction in output


def test_force_sends_the_full_corrected_value_on_a_last_meter(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a `last` meter the newest event replaces the older ones: a delta would replace
    the total, so the correction carries the full value (docs/stripe.md#S-AGG-2, #S-WINDOW-1)."""
    meter = case.billing.meter(default_aggregation={"formula": "last"})
    case.meter, case.price = meter, case.billing.metered_price(meter)
    USAGE[(case.customer["id"], meter["event_name"])] = "5"
    invoice = case.invoice()
    assert case.run_worker(invoice) == set()
    USAGE[(case.customer["id"], meter["event_name"])] = "9"

    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")

    assert code == 0, output
    assert f"= 9 as {identifier(invoice, 1)}" in output
    assert [e["payload"]["value"] for e in case.events()] == ["5", "9"]
    assert counted_by_stripe(case, invoice) == 9


def test_count_meters_are_refused_by_the_worker_and_by_report(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    meter = case.billing.meter(default_aggregation={"formula": "count"})
    case.meter, case.price = meter, case.billing.metered_price(meter)
    USAGE[(case.customer["id"], meter["event_name"])] = "12000"
    invoice = case.invoice()

    assert case.run_worker(invoice) == set()  # refused once, never retried in a loop
    record = case.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.status == "failed"
    assert "'count'" in str(record.reason)
    assert meter["event_name"] in str(record.reason)

    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")
    assert code == 1
    assert "refused" in output
    assert "'count'" in output
    assert case.events() == []


def test_report_refuses_finalized_invoices_and_unknown_ones(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice = case.invoice(status="open")
    code, output = cli(capsys, "report", "--invoice", invoice["id"])
    assert code == 2
    assert "not a draft" in output
    code, output = cli(capsys, "report", "--invoice", "in_nope")
    assert code == 2
    assert "Stripe has no invoice in_nope" in output


# --------------------------------------------------------------------------- outcome unknown


def unknown_outcome(
    case: Case, invoice: dict[str, Any], first_ledger: Ledger | None = None
) -> None:
    """The first attempt began two days ago and its outcome is open; the retry now finds
    Stripe's identifier memory (≥ 24 h) possibly gone and fails it as outcome_unknown."""
    support.enqueue(case.queue, support.invoice_created(invoice))
    two_days_ago = support.Clock()
    two_days_ago.offset = -2 * support.DAY
    first = support.make_worker(
        case.emulator,
        case.table,
        case.queue,
        env=NO_GUARD,
        clock=two_days_ago,
        ledger=first_ledger,
    )
    assert run_records(first, case.queue, receive(case.queue))  # retried later
    retry = support.make_worker(case.emulator, case.table, case.queue, env=NO_GUARD)
    assert run_records(retry, case.queue, receive(case.queue))  # PermanentError: not resent
    report = case.ledger.report(identifier(invoice))
    assert report is not None
    assert (report.status, report.failure_class) == ("failed", FailureClass.OUTCOME_UNKNOWN)


def test_an_unknown_outcome_is_explained_and_force_sends_it_under_the_next_revision(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stripe answered 500 to the first send (so nothing was counted, but the worker cannot
    know that): the runbook's "missing" case."""
    invoice = case.invoice()
    case.emulator.set_faults(error_rate_5xx=1.0, fault_paths=("/v1/billing/meter_events",))
    try:
        unknown_outcome(case, invoice)
    finally:
        case.emulator.set_faults(error_rate_5xx=0.0, fault_paths=())
    first, correction = identifier(invoice), identifier(invoice, revision=1)
    before = case.ledger.report(first)
    assert before is not None
    assert case.events() == []

    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 1, output
    assert "failed (outcome_unknown)" in output
    assert f"needs attention: {first} failed" in output

    code, output = cli(capsys, "report", "--invoice", invoice["id"])
    assert code == 1, output
    assert f"differs Δ 100 as {correction}" in output  # r0 is closed: the next revision
    assert f"{first} may or may not be counted by Stripe" in output
    assert "meter event summary in Stripe first" in output  # the note, not r0's last_error
    assert case.events() == []
    assert case.ledger.report(correction) is None

    # r0 is closed: the re-run step leaves it alone (no new attempt, no failure).
    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")
    assert code == 0, output
    assert f"sent Δ 100 as {correction}" in output
    assert {e["identifier"]: e["payload"]["value"] for e in case.events()} == {correction: "100"}
    assert counted_by_stripe(case, invoice) == Decimal(100)
    sent = case.ledger.report(correction)
    assert sent is not None
    assert (sent.status, sent.value) == ("sent", Decimal(100))
    after = case.ledger.report(first)
    assert after is not None
    for name in ("status", "failure_class", "value", "timestamp", "send_started_at"):
        assert getattr(after, name) == getattr(before, name), name

    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 0, output  # settled: nothing left needs attention
    assert "failed (outcome_unknown), superseded by r1" in output
    assert f"{first} failed" not in output


def test_an_unknown_outcome_stripe_did_count_is_still_shown_as_differing(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first send reached Stripe and the worker died before recording it: the runbook's
    "counted" case. The summary shows the usage; the ledger cannot know and keeps asking."""

    class CrashingLedger(Ledger):
        def mark_sent(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("Lambda timed out right after sending")

    invoice = case.invoice()
    unknown_outcome(case, invoice, CrashingLedger(case.table, boto3.client("dynamodb")))
    assert counted_by_stripe(case, invoice) == Decimal(100)  # the operator's check

    code, output = cli(capsys, "report", "--invoice", invoice["id"])
    assert code == 1, output
    assert f"differs Δ 100 as {identifier(invoice, revision=1)}" in output
    assert [e["identifier"] for e in case.events()] == [identifier(invoice)]
    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 1, output
    assert "failed (outcome_unknown)" in output


# --------------------------------------------------------------------------- done when


def test_poison_event_to_dead_letter_queue_then_fix_replay_and_status_shows_sent(
    case: Case, aws: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's "done when", as the runbook tells an operator to do it."""
    queue, dead_letters = queue_with_dead_letters("poison", max_receive_count=2)
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    worker = support.make_worker(
        case.emulator, case.table, queue, env={**NO_GUARD, "TENANT_METADATA_KEY": "tenant"}
    )
    poller = SqsPoller(
        lambda event, context: worker_module.handler(event, context, worker=worker),
        SqsEventSource(
            name="StripeEvents",
            queue_logical_id="EventQueue",
            queue_url=queue,
            queue_arn=queue_arn,
            batch_size=10,
            maximum_batching_window_seconds=0,
            function_response_types=("ReportBatchItemFailures",),
            maximum_concurrency=2,
        ),
        function=FunctionConfig("worker", timeout_seconds=60, memory_mb=512),
        endpoint_url=aws.endpoint_url,
        visibility_timeout=30,  # the worker itself makes failed records visible again at once
    )
    invoice = case.invoice()  # the customer has no metadata["tenant"]: a poison event
    event = support.invoice_created(invoice)
    support.enqueue(queue, event)
    assert poller.drain(timeout=30)
    # SQS moves a message to the dead-letter queue on a receive, asynchronously to the
    # source queue emptying: wait for it to arrive there, as an operator would.
    assert wait_for_messages(dead_letters, 1, timeout=10)
    where = ["--queue-url", queue, "--ledger-table", case.table]

    code, output = cli(capsys, "dlq", "list", *where)
    assert code == 0, output
    assert event["id"] in output
    assert invoice["id"] in output
    assert "has no metadata['tenant']" in output  # why, from the ledger

    case.billing.client.v1.customers.update(case.customer["id"], {"metadata": {"tenant": "t1"}})
    code, output = cli(capsys, "dlq", "replay", *where)
    assert code == 0, output
    assert "Replayed 1 message(s)" in output
    assert poller.drain(timeout=30)

    code, output = cli(capsys, "status", "invoice", invoice["id"], *where)
    assert code == 0, output
    assert f"invoice {invoice['id']}: reported" in output
    assert "sent" in output
    assert [e["identifier"] for e in case.events()] == [identifier(invoice)]
    code, output = cli(capsys, "dlq", "list", *where)
    assert "The dead-letter queue is empty." in output
