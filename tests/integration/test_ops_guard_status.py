"""`meterbridge status` and `report` with the invoice guard, over ledgers written by real
worker runs on the emulator (test clocks, aggregation lag, meter error reports)."""

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger as Ledger
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.domain.records import ReportRecord
from meterbridge.handlers.worker import Worker
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support import worker as support
from tests.support.guard import (
    HOUR,
    GuardWorld,
    body_kind,
    drain,
    receive,
    run_records,
)
from tests.support.ops import cli
from tests.support.worker import USAGE

NEVER_IN_TIME = 600.0  # nothing is aggregated before the test clock passes the grace period


@pytest.fixture
def world(
    emulator: StripeEmulator, ledger_table: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GuardWorld]:
    # What `meterbridge status` / `report` read: the worker's own settings, with the queue.
    environment = support.worker_environment(
        emulator, ledger_table, queue_url, CONFIRM_DELAY_SECONDS="0", CONFIRM_MAX_DELAY_SECONDS="1"
    )
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    yield GuardWorld(emulator, queue_url)
    emulator.set_faults(aggregation_lag_seconds=0.0, timestamp_reference="clock")


def guard_worker(world: GuardWorld, ledger_table: str, mode: str, **env: Any) -> Worker:
    settings = {
        "INVOICE_GUARD": mode,
        "CONFIRM_DELAY_SECONDS": "0",
        "CONFIRM_MAX_DELAY_SECONDS": "1",
        "CONFIRMATION_MARGIN_SECONDS": str(HOUR),  # a test clock jumps: all of it is close
        **env.pop("env", {}),
    }
    return support.make_worker(world.emulator, ledger_table, world.queue_url, env=settings, **env)


def created(world: GuardWorld, worker: Worker, invoice: dict[str, Any]) -> None:
    support.enqueue(world.queue_url, support.invoice_created(invoice))
    assert run_records(worker, world.queue_url, receive(world.queue_url)) == set()


def report_item(ledger: Ledger, invoice: dict[str, Any], revision: int = 0) -> ReportRecord:
    item = ledger.report(support.report_id(invoice, revision=revision))
    assert item is not None
    return item


def released(ledger: Ledger, invoice_id: str) -> bool:
    record = ledger.invoice(invoice_id)
    return record is not None and record.released_at is not None


def finalized(world: GuardWorld, worker: Worker, ledger: Ledger, invoice_id: str) -> None:
    support.enqueue(world.queue_url, world.event("invoice.finalized", invoice_id))
    drain(
        worker,
        world.queue_url,
        lambda: getattr(ledger.invoice(invoice_id), "reconciliation_status", None) is not None,
    )


def test_status_shows_missing_confirmation_then_the_mismatch_with_both_numbers(
    world: GuardWorld,
    emulator: StripeEmulator,
    ledger: Ledger,
    ledger_table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_faults(aggregation_lag_seconds=NEVER_IN_TIME)
    worker = guard_worker(world, ledger_table, "confirm")
    renewal = world.subscribe(usage="75")
    world.renew(renewal)
    created(world, worker, renewal.invoice)
    [check] = receive(world.queue_url)
    assert run_records(worker, world.queue_url, [check]) == set()
    invoice_id = renewal.invoice["id"]

    code, output = cli(capsys, "status", "invoice", invoice_id)
    assert code == 1, output  # still a draft: someone can act
    assert f"invoice {invoice_id}: reported; guard confirm" in output
    assert "missing: Stripe 0, ledger 75" in output
    assert "needs attention:" in output
    assert "confirmation missing" in output

    world.advance(renewal, HOUR + 60)  # finalizes without the usage
    finalized(world, worker, ledger, invoice_id)

    code, output = cli(capsys, "status", "customer", renewal.customer)
    assert code == 1, output
    assert "finalized: mismatch on 1 of 1 line(s)" in output
    assert "mismatch: invoiced 0, ledger 75 (stripe_differs)" in output
    assert "finalized invoice mismatch (stripe_differs)" in output


def test_status_shows_the_hold_then_its_release_and_the_confirmed_reconciled_report(
    world: GuardWorld,
    emulator: StripeEmulator,
    ledger: Ledger,
    ledger_table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_faults(aggregation_lag_seconds=0.0)
    worker = guard_worker(world, ledger_table, "hold", env={"CONFIRMATION_MARGIN_SECONDS": "600"})
    renewal = world.subscribe(usage="5")
    world.renew(renewal)
    invoice_id = renewal.invoice["id"]
    created(world, worker, renewal.invoice)

    code, output = cli(capsys, "status", "invoice", invoice_id)
    assert code == 0, output  # holding is the guard working, not a problem
    assert "guard hold: held, until" in output

    drain(
        worker,
        world.queue_url,
        lambda: getattr(ledger.invoice(invoice_id), "released_at", None) is not None,
    )
    world.advance(renewal, HOUR + 60)  # Stripe finalizes on its own schedule
    finalized(world, worker, ledger, invoice_id)

    code, output = cli(capsys, "status", "invoice", invoice_id)
    assert code == 0, output
    assert "guard hold: released after confirmation (auto_advance)" in output
    assert "finalized: 1 line(s) reconciled" in output
    assert "confirmed (Stripe 5)" in output
    assert "reconciled (5)" in output
    assert "needs attention" not in output


def test_hold_released_at_its_limit_needs_attention(
    world: GuardWorld,
    emulator: StripeEmulator,
    ledger: Ledger,
    ledger_table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_faults(aggregation_lag_seconds=NEVER_IN_TIME)
    worker = guard_worker(world, ledger_table, "hold", env={"HOLD_LIMIT_SECONDS": str(3 * HOUR)})
    renewal = world.subscribe(usage="9")
    world.renew(renewal)
    created(world, worker, renewal.invoice)
    world.advance(renewal, 4 * HOUR)
    drain(worker, world.queue_url, lambda: world.invoice(renewal)["status"] == "open")

    code, output = cli(capsys, "status", "invoice", renewal.invoice["id"])

    assert code == 1, output
    assert "guard hold: released_at_limit at its limit (finalize)" in output
    assert "the hold reached its limit" in output


def test_rejected_report_is_shown_with_stripes_code_and_force_resends_its_full_value(
    world: GuardWorld,
    ledger: Ledger,
    ledger_table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A report Stripe rejected after its 200 was never counted: `--force` sends all of it
    again under the next revision, and status shows the rejection as superseded."""
    customer = world.billing.customer()["id"]
    USAGE[(customer, world.meter["event_name"])] = "3"
    meters = world.client.v1.billing.meters

    def usage_while_the_meter_is_archived(query: UsageQuery) -> object:
        meters.deactivate(world.meter["id"])  # Stripe validates asynchronously, after the 200
        return "3"

    worker = guard_worker(
        world,
        ledger_table,
        "off",
        usage_source=CallableUsageSource(usage_while_the_meter_is_archived),
    )
    invoice = world.billing.renewal(customer, [world.price])
    known = {e["id"] for e in world.thin_events("v1.billing.meter.error_report_triggered")}
    created(world, worker, invoice)
    for notification in world.thin_events("v1.billing.meter.error_report_triggered"):
        if notification["id"] not in known:
            support.enqueue(world.queue_url, notification)
    assert run_records(worker, world.queue_url, receive(world.queue_url)) == set()
    assert report_item(ledger, invoice).failure_class == "rejected"

    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 1, output
    assert "failed (rejected: archived_meter)" in output
    assert "needs attention:" in output

    meters.reactivate(world.meter["id"])  # the cause is fixed
    code, output = cli(capsys, "report", "--invoice", invoice["id"])
    assert code == 1, output  # Stripe counts 0 of 3: a difference, sent only with --force
    assert "differs" in output
    code, output = cli(capsys, "report", "--invoice", invoice["id"], "--force")
    assert code == 0, output

    resent = report_item(ledger, invoice, revision=1)
    assert (resent.status, resent.value) == ("sent", 3)  # the full value, once
    accepted = [
        e for e in world.billing.meter_events(customer=customer) if e["status"] == "accepted"
    ]
    assert [(e["identifier"], e["payload"]["value"]) for e in accepted] == [
        (resent.identifier, "3")
    ]
    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 0, output
    assert "failed (rejected: archived_meter), superseded by r1" in output
    assert resent.identifier in output


def test_report_rerun_with_the_queue_gets_its_report_confirmed(
    world: GuardWorld,
    ledger: Ledger,
    ledger_table: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    customer = world.billing.customer()["id"]
    USAGE[(customer, world.meter["event_name"])] = "41.5"
    invoice = world.billing.renewal(customer, [world.price])
    support.usage_source_down(True)
    try:  # the worker ran without the guard, and without usage
        support.enqueue(world.queue_url, support.invoice_created(invoice))
        worker = guard_worker(world, ledger_table, "off")
        assert run_records(worker, world.queue_url, receive(world.queue_url))
    finally:
        support.usage_source_down(False)
    # The event would retry until dead-lettered; no confirmation check was queued.
    leftovers = receive(world.queue_url, wait_seconds=0)
    assert [body_kind(r) for r in leftovers] == ["event"]
    for record in leftovers:
        boto3.client("sqs").delete_message(
            QueueUrl=world.queue_url, ReceiptHandle=record["receiptHandle"]
        )

    code, output = cli(capsys, "report", "--invoice", invoice["id"])

    assert code == 0, output
    assert "confirmation checks queued (INVOICE_GUARD=confirm)" in output
    assert report_item(ledger, invoice).status == "sent"
    checker = guard_worker(world, ledger_table, "confirm")
    drain(
        checker,
        world.queue_url,
        lambda: report_item(ledger, invoice).confirmed,
    )
    code, output = cli(capsys, "status", "invoice", invoice["id"])
    assert code == 0, output
    assert "guard confirm" in output
    assert "confirmed (Stripe 41.5)" in output
    confirmation = report_item(ledger, invoice).confirmation
    assert confirmation is not None
    assert confirmation.observed == Decimal("41.5")
