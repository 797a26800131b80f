"""Reconciliation on in-memory fakes: each set-up's finalized invoice judged against the
usage source, never against meterbridge's own ledger."""

from decimal import Decimal

import pytest

from meterbridge.domain.records import ReconciliationStatus
from meterbridge.errors import TransientError
from meterbridge.worker.invoices import parse_invoice
from tests.support.unit_world import NOW, UnitWorld


@pytest.fixture
def world() -> UnitWorld:
    return UnitWorld(env={"INVOICE_GUARD": "off"})


def verdict(world: UnitWorld, identifier: str | None = None) -> tuple[object, object]:
    report = world.ledger.report(identifier or world.identifier())
    assert report is not None
    assert report.reconciliation is not None
    return report.reconciliation.status, report.reconciliation.reason


def test_the_invoice_billing_the_source_value_is_reconciled(world: UnitWorld) -> None:
    world.set_usage("12000")
    invoice = world.draft()
    world.created(invoice)
    world.bill(invoice, 12000)
    assert world.finalized(invoice).result == "reconciled"
    assert verdict(world) == (ReconciliationStatus.RECONCILED, None)


def test_an_integer_only_quantity_is_the_truncated_decimal(world: UnitWorld) -> None:
    world.set_usage("4310.5")
    invoice = world.draft()
    world.created(invoice)
    line = invoice["lines"]["data"][0]
    line["quantity"] = 4310  # an older API version: no quantity_decimal
    assert world.finalized(invoice).result == "reconciled"


def test_a_meter_on_two_lines_bills_twice_and_is_a_shared_meter_mismatch(world: UnitWorld) -> None:
    world.set_usage("12000")
    invoice = world.draft([world.price, world.price])
    world.created(invoice)
    world.bill(invoice, 12000, 12000)  # Stripe bills the whole aggregate on each line
    assert world.finalized(invoice).result == "mismatch"
    assert verdict(world) == (ReconciliationStatus.MISMATCH, "shared_meter")
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.mismatched_lines == 2


def test_the_second_subscription_on_a_shared_meter_is_a_mismatch(world: UnitWorld) -> None:
    world.set_usage("12000")
    first, second = world.draft(), world.draft()
    world.created(first, "evt_1")
    world.created(second, "evt_2")
    world.bill(second, 12000)
    assert world.finalized(second, "evt_f2").result == "mismatch"
    record = world.ledger.invoice(second["id"])
    assert record is not None
    assert any("shared_meter" in finding for finding in record.findings)


def test_the_first_subscription_on_a_shared_meter_is_a_mismatch_too(world: UnitWorld) -> None:
    """The report was sent for the first invoice; the second invoice's line bills it as
    well. The first invoice alone looks right (12000 billed, 12000 used), yet the customer
    pays twice: the report remembers the other invoice and the verdict says so."""
    world.set_usage("12000")
    first, second = world.draft(), world.draft()
    world.created(first, "evt_1")
    world.created(second, "evt_2")
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.also_billed_on == frozenset({second["id"]})
    world.bill(first, 12000)
    assert world.finalized(first, "evt_f1").result == "mismatch"
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.reconciliation is not None
    assert report.reconciliation.reason == "shared_meter"


@pytest.mark.parametrize(
    ("sent", "source_now", "invoiced", "reason"),
    [
        ("100", "130", 100, "usage_changed"),  # Stripe bills what was sent; the source moved
        ("100", "100", 0, "stripe_differs"),  # sent, but Stripe bills something else
    ],
)
def test_a_wrong_line_names_its_likely_cause(
    world: UnitWorld, sent: str, source_now: str, invoiced: int, reason: str
) -> None:
    world.set_usage(sent)
    invoice = world.draft()
    world.created(invoice)
    world.set_usage(source_now)
    world.bill(invoice, invoiced)
    world.finalized(invoice)
    assert verdict(world) == (ReconciliationStatus.MISMATCH, reason)


def test_a_late_report_is_named_late(world: UnitWorld) -> None:
    world.set_usage("50")
    invoice = world.draft(finalizes_at=NOW - 5)
    world.created(invoice)
    world.bill(invoice, 0)
    world.finalized(invoice)
    assert verdict(world) == (ReconciliationStatus.MISMATCH, "late")


def test_a_correction_with_force_reconciles_clean(world: UnitWorld) -> None:
    """revision 0 sent 700; the operator's r1 sent the difference 100; Stripe bills 800."""
    world.set_usage("700")
    invoice = world.draft()
    world.created(invoice)
    world.set_usage("800")
    pipeline = world.pipeline
    [plan] = pipeline.planner.plan(parse_invoice(invoice)).reports
    pipeline.sender.send(plan.revised(1), None, int(world.clock()), value=Decimal(100))
    world.bill(invoice, 800)
    assert world.finalized(invoice).result == "reconciled"
    assert verdict(world) == (ReconciliationStatus.RECONCILED, None)


def test_a_metered_line_without_a_report_is_usage_not_reported(world: UnitWorld) -> None:
    """e.g. the invoice item Stripe made when a metered price was removed mid-period: its
    quantity was fixed before any report, and the invoice is judged all the same."""
    world.set_usage("40")
    invoice = world.draft()
    invoice["lines"]["data"][0]["parent"] = {
        "type": "invoice_item_details",
        "invoice_item_details": {"invoice_item": "ii_1"},
    }
    world.created(invoice)
    assert world.stripe.sent == []
    world.bill(invoice, 0)
    assert world.finalized(invoice).result == "mismatch"
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert any("not_reported" in finding for finding in record.findings)


def test_a_finalized_invoice_never_seen_as_a_draft_is_judged_too(world: UnitWorld) -> None:
    world.set_usage("9")
    invoice = world.draft()
    world.bill(invoice, 0)
    assert world.finalized(invoice).result == "mismatch"  # nothing reported: 9 missing


def test_an_invoice_without_metered_lines_is_ignored(world: UnitWorld) -> None:
    invoice = world.draft([world.stripe.add_price(None)])
    assert world.finalized(invoice).result == "ignored"


def test_count_meter_lines_are_never_called_reconciled(world: UnitWorld) -> None:
    counting = world.stripe.add_meter("logins", formula="count")
    invoice = world.draft([world.stripe.add_price(counting)])
    world.created(invoice)
    world.bill(invoice, 1)
    assert world.finalized(invoice).result == "mismatch"


def test_a_source_outage_at_reconciliation_retries_the_event(world: UnitWorld) -> None:
    world.set_usage("5")
    invoice = world.draft()
    world.created(invoice)
    world.bill(invoice, 5)
    world.usage.fail(TransientError("warehouse down"))
    with pytest.raises(TransientError):
        world.finalized(invoice)
    assert world.finalized(invoice, "evt_again").result == "reconciled"
