"""The invoice guard against the emulator's asynchronous aggregation (moto SQS + DynamoDB).

Each test drives a real renewal on a test clock: invoice.created → worker → meter event,
then the clock passes the grace period "immediately" (within the aggregation lag), which is
exactly when the naive integration loses usage.
"""

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger as Ledger
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.domain.records import InvoiceChanges, InvoiceRecord, ReportRecord
from meterbridge.errors import PermanentError, TransientError
from meterbridge.handlers.worker import Worker
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.guard import (
    HOUR,
    GuardWorld,
    Renewal,
    drain,
    emitted_metrics,
    receive,
    run_records,
)
from tests.support.worker import (
    API_KEY,
    USAGE,
    Clock,
    enqueue,
    invoice_created,
    make_worker,
    report_id,
)

# Long enough that nothing is aggregated before the test moves on (no race with the clock);
# the hold tests use a short lag and wait for it.
NEVER_IN_TIME = 600.0
SHORT_LAG = 2.0


@pytest.fixture
def world(emulator: StripeEmulator, queue_url: str) -> Iterator[GuardWorld]:
    yield GuardWorld(emulator, queue_url)
    emulator.set_faults(aggregation_lag_seconds=0.0, timestamp_reference="clock")


def guard_worker(
    emulator: StripeEmulator,
    ledger_table: str,
    queue_url: str,
    mode: str,
    adapters: dict[str, Any] | None = None,
    **env: str,
) -> Worker:
    settings = {
        "INVOICE_GUARD": mode,
        "CONFIRM_DELAY_SECONDS": "0",
        "CONFIRM_MAX_DELAY_SECONDS": "1",
        # A test clock jumps: the whole grace period counts as "close to finalization".
        "CONFIRMATION_MARGIN_SECONDS": str(HOUR),
        **env,
    }
    return make_worker(emulator, ledger_table, queue_url, env=settings, **(adapters or {}))


def report_of(ledger: Ledger, renewal: Renewal) -> ReportRecord:
    report = ledger.report(report_id(renewal.invoice))
    assert report is not None
    return report


def process_created(world: GuardWorld, worker: Worker, renewal: Renewal) -> None:
    world.renew(renewal)
    world.deliver("invoice.created", renewal)
    records = receive(world.queue_url)  # earlier renewals' confirm checks may come along
    assert "event" in [r["messageAttributes"]["body_kind"]["stringValue"] for r in records]
    assert run_records(worker, world.queue_url, records) == set()


def finalize_and_reconcile(world: GuardWorld, worker: Worker, renewal: Renewal) -> None:
    world.deliver("invoice.finalized", renewal)
    drain(worker, world.queue_url, lambda: _reconciled(worker, renewal))


def _reconciled(worker: Worker, renewal: Renewal) -> bool:
    record = worker.pipeline.ledger.invoice(renewal.invoice["id"])
    return record is not None and record.reconciliation_status is not None


def invoice_record(ledger: Ledger, renewal: Renewal) -> InvoiceRecord:
    record = ledger.invoice(renewal.invoice["id"])
    assert record is not None
    return record


def released(ledger: Ledger, renewal: Renewal) -> bool:
    record = ledger.invoice(renewal.invoice["id"])
    return record is not None and record.released_at is not None


def test_guard_off_naive_timing_loses_the_usage_and_reconciliation_shows_it(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=NEVER_IN_TIME)
    worker = guard_worker(emulator, ledger_table, queue_url, "off")
    renewal = world.subscribe(usage="1200")

    process_created(world, worker, renewal)
    assert report_of(ledger, renewal).status == "sent"  # Stripe accepted it
    world.advance(renewal, HOUR + 60)  # the grace period ends before Stripe aggregated

    assert world.invoice(renewal)["status"] == "open"
    assert world.quantity(renewal) == 0  # the usage is lost
    assert receive(queue_url, wait_seconds=0) == []  # no confirmation with the guard off
    finalize_and_reconcile(world, worker, renewal)
    report = report_of(ledger, renewal)
    assert report.reconciliation is not None
    assert report.reconciliation.status == "mismatch"
    assert report.reconciliation.reason == "stripe_differs"
    assert (report.reconciliation.invoiced, report.reconciliation.expected) == (0, 1200)
    assert invoice_record(ledger, renewal).reconciliation_status == "mismatch"


def test_confirm_detects_the_loss_and_raises_the_metric_before_finalization(  # noqa: PLR0917
    world: GuardWorld,
    emulator: StripeEmulator,
    ledger: Ledger,
    ledger_table: str,
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_faults(aggregation_lag_seconds=NEVER_IN_TIME)
    worker = guard_worker(emulator, ledger_table, queue_url, "confirm")
    renewal = world.subscribe(usage="75")
    process_created(world, worker, renewal)
    capsys.readouterr()

    # The first delayed check runs while the draft is still a draft.
    [check] = receive(queue_url)
    assert check["messageAttributes"]["body_kind"]["stringValue"] == "confirm"
    assert run_records(worker, queue_url, [check]) == set()

    assert world.invoice(renewal)["status"] == "draft"  # still time to act
    report = report_of(ledger, renewal)
    assert report.confirmation is not None
    assert report.confirmation.status == "missing"
    assert (report.confirmation.observed, report.confirmation.expected) == (0, 75)
    assert report.confirmation.missing_at is not None
    assert "ConfirmationMissing" in emitted_metrics(capsys.readouterr().out)

    world.advance(renewal, HOUR + 60)  # nobody acted: the draft finalizes without the usage
    assert world.quantity(renewal) == 0
    finalize_and_reconcile(world, worker, renewal)
    assert report_of(ledger, renewal).reconciliation_status == "mismatch"


def test_confirm_records_confirmed_once_stripe_counts_the_report(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=SHORT_LAG)
    worker = guard_worker(emulator, ledger_table, queue_url, "confirm")
    renewal = world.subscribe(usage="12.5")
    process_created(world, worker, renewal)

    drain(
        worker,
        queue_url,
        lambda: report_of(ledger, renewal).confirmed,
    )

    report = report_of(ledger, renewal)
    assert report.confirmation is not None
    assert report.confirmation.observed == report.confirmation.expected == Decimal("12.5")
    assert report.confirmation.confirmed_at is not None
    assert report.sent_at is not None
    assert report.confirmation.confirmed_at >= report.sent_at
    assert world.invoice(renewal)["auto_advance"] is True  # confirm never holds


def test_hold_finalizes_every_invoice_with_the_right_quantity(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=SHORT_LAG)
    worker = guard_worker(emulator, ledger_table, queue_url, "hold")
    renewals = [world.subscribe(usage=value) for value in ("10", "2000", "0.75")]
    for renewal in renewals:
        process_created(world, worker, renewal)
        assert world.invoice(renewal)["auto_advance"] is False  # held before reporting
        world.advance(renewal, 2 * HOUR)  # past the grace period at once
        assert world.invoice(renewal)["status"] == "draft"  # the hold kept it open

    drain(
        worker,
        queue_url,
        lambda: all(world.invoice(r)["status"] == "open" for r in renewals),
    )

    for renewal in renewals:
        assert world.quantity(renewal) == Decimal(renewal.usage)
        record = invoice_record(ledger, renewal)
        assert record.hold_status == "released"
        # Released after the original schedule: finalized explicitly, not auto_advance.
        assert record.release_action == "finalize"
        assert report_of(ledger, renewal).confirmation_status == "confirmed"
        finalize_and_reconcile(world, worker, renewal)
        assert report_of(ledger, renewal).reconciliation_status == "reconciled"


def test_hold_released_before_the_schedule_gives_the_draft_back_to_stripe(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=0.0)
    worker = guard_worker(
        emulator, ledger_table, queue_url, "hold", CONFIRMATION_MARGIN_SECONDS="600"
    )
    renewal = world.subscribe(usage="5")
    process_created(world, worker, renewal)

    drain(worker, queue_url, lambda: released(ledger, renewal))

    record = invoice_record(ledger, renewal)
    assert record.release_action == "auto_advance"
    invoice = world.invoice(renewal)
    assert (invoice["status"], invoice["auto_advance"]) == ("draft", True)
    world.advance(renewal, HOUR + 60)  # Stripe finalizes on its own schedule
    assert world.quantity(renewal) == 5


def test_hold_never_outlives_its_limit_and_alarms(  # noqa: PLR0917
    world: GuardWorld,
    emulator: StripeEmulator,
    ledger: Ledger,
    ledger_table: str,
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_faults(aggregation_lag_seconds=NEVER_IN_TIME)
    worker = guard_worker(
        emulator, ledger_table, queue_url, "hold", HOLD_LIMIT_SECONDS=str(3 * HOUR)
    )
    renewal = world.subscribe(usage="9")
    process_created(world, worker, renewal)
    record = invoice_record(ledger, renewal)
    assert record.hold_status == "held"
    assert record.hold_deadline == renewal.invoice["created"] + 3 * HOUR
    world.advance(renewal, 4 * HOUR)
    capsys.readouterr()

    drain(worker, queue_url, lambda: world.invoice(renewal)["status"] == "open")

    record = invoice_record(ledger, renewal)
    assert record.hold_status == "released_at_limit"
    assert "HoldLimitReached" in emitted_metrics(capsys.readouterr().out)
    assert world.quantity(renewal) == 0  # billing went ahead; reconciliation will say so


def test_usage_source_change_after_reporting_is_a_mismatch(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=0.0)
    worker = guard_worker(emulator, ledger_table, queue_url, "hold")
    renewal = world.subscribe(usage="100")
    process_created(world, worker, renewal)
    drain(worker, queue_url, lambda: released(ledger, renewal))
    USAGE[(renewal.customer, world.meter["event_name"])] = "130"  # late usage arrives
    world.advance(renewal, HOUR + 60)
    assert world.quantity(renewal) == 100

    finalize_and_reconcile(world, worker, renewal)

    report = report_of(ledger, renewal)
    assert report.reconciliation is not None
    assert report.reconciliation.status == "mismatch"
    assert report.reconciliation.reason == "usage_changed"
    # The judge is the usage source: the line should bill 130; Stripe bills what was sent.
    assert (report.reconciliation.invoiced, report.reconciliation.expected) == (100, 130)
    assert report.reconciliation.source == 130


def _deliver_error_reports(world: GuardWorld, worker: Worker, before: set[str]) -> None:
    for notification in world.thin_events("v1.billing.meter.error_report_triggered"):
        if notification["id"] not in before:
            enqueue(world.queue_url, notification)
    records = receive(world.queue_url)
    assert records, "no meter error report was emitted"
    assert run_records(worker, world.queue_url, records) == set()


def _thin_ids(world: GuardWorld) -> set[str]:
    return {e["id"] for e in world.thin_events("v1.billing.meter.error_report_triggered")}


def test_meter_error_report_for_an_unknown_customer_marks_the_report_failed(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    renewal = world.subscribe(usage="3")

    def usage_then_customer_vanishes(query: UsageQuery) -> object:
        # The customer is deleted between meterbridge's read and Stripe's async validation.
        world.client.v1.customers.delete(query.customer)
        return "3"

    worker = make_worker(
        emulator,
        ledger_table,
        queue_url,
        env={"INVOICE_GUARD": "off"},
        usage_source=CallableUsageSource(usage_then_customer_vanishes),
    )
    before = _thin_ids(world)
    process_created(world, worker, renewal)
    assert report_of(ledger, renewal).status == "sent"  # Stripe answered 200

    _deliver_error_reports(world, worker, before)

    report = report_of(ledger, renewal)
    assert report.status == "failed"
    assert report.failure_class == "rejected"
    assert report.stripe_error_code == "meter_event_customer_not_found"
    assert str(report.stripe_error_event_id).startswith("evt_")


def test_meter_error_report_for_a_timestamp_in_the_future_marks_the_report_failed(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(timestamp_reference="wall")
    customer = world.billing.customer()["id"]
    USAGE[(customer, world.meter["event_name"])] = "4"
    skewed = Clock()
    skewed.offset = 40 * 86_400  # the worker's clock runs 40 days ahead of Stripe's
    worker = make_worker(
        emulator, ledger_table, queue_url, env={"INVOICE_GUARD": "off"}, clock=skewed
    )
    # To the skewed worker this period has ended; to Stripe it lies in the future.
    seeded = world.billing.renewal(
        customer,
        [world.price],
        period=(int(skewed()) - 30 * 86_400, int(skewed()) - 60),
        created=int(skewed()) - 30,
        automatically_finalizes_at=int(skewed()) + HOUR,
    )
    renewal = Renewal(customer, "", "", "4", seeded)
    before = _thin_ids(world)
    enqueue(queue_url, invoice_created(seeded))
    assert run_records(worker, queue_url, receive(queue_url)) == set()
    assert report_of(ledger, renewal).status == "sent"

    _deliver_error_reports(world, worker, before)

    report = report_of(ledger, renewal)
    assert report.status == "failed"
    assert report.stripe_error_code == "timestamp_in_future"
    # A redelivered invoice.created does not resurrect the rejected report.
    enqueue(queue_url, invoice_created(seeded))
    assert run_records(worker, queue_url, receive(queue_url)) == set()
    assert report_of(ledger, renewal).status == "failed"


class _LedgerFailingOnceAfterReporting(Ledger):
    """DynamoDB throttles the invoice's outcome once, after the reports went out."""

    failed = False

    def update_invoice(
        self, invoice_id: str, customer_id: str, changes: InvoiceChanges, *args: Any, **kwargs: Any
    ) -> None:
        if changes.status is not None and not self.failed:
            type(self).failed = True
            raise TransientError("ledger throttled (injected)")
        super().update_invoice(invoice_id, customer_id, changes, *args, **kwargs)


def test_hold_still_gets_its_release_check_when_reporting_fails_midway(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=0.0)
    failing = _LedgerFailingOnceAfterReporting(ledger_table, boto3.client("dynamodb"))
    worker = guard_worker(emulator, ledger_table, queue_url, "hold", {"ledger": failing})
    renewal = world.subscribe(usage="7")
    world.renew(renewal)
    world.deliver("invoice.created", renewal)
    records = receive(world.queue_url)
    # The event fails (retried later), but the held draft's check chain has started.
    assert run_records(worker, world.queue_url, records) != set()
    assert world.invoice(renewal)["auto_advance"] is False
    assert invoice_record(ledger, renewal).report_count == 1

    drain(worker, queue_url, lambda: released(ledger, renewal))
    assert report_of(ledger, renewal).confirmation_status == "confirmed"


class _GatewayRefusingFinalize(StripeGateway):
    """Stripe refuses to finalize (as it does for e.g. an invalid tax location)."""

    def finalize_invoice(self, invoice_id: str) -> dict[str, Any]:
        raise PermanentError("Stripe InvalidRequestError (400): customer tax location invalid")


def test_held_draft_stripe_refuses_to_finalize_is_handed_back_not_kept(
    world: GuardWorld, emulator: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    emulator.set_faults(aggregation_lag_seconds=0.0)
    refusing = _GatewayRefusingFinalize(API_KEY, api_base=emulator.url)
    worker = guard_worker(emulator, ledger_table, queue_url, "hold", {"stripe": refusing})
    renewal = world.subscribe(usage="3")
    process_created(world, worker, renewal)
    world.advance(renewal, 2 * HOUR)  # past the schedule: release means finalize

    drain(worker, queue_url, lambda: released(ledger, renewal))
    record = invoice_record(ledger, renewal)
    assert (record.hold_status, record.release_action) == ("released", "auto_advance")
    assert world.invoice(renewal)["auto_advance"] is True
