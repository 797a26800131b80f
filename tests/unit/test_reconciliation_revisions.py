"""Which reports reconciliation counts when a failed report was corrected by a revision."""

import dataclasses

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import FailureClass, ReportRecord, ReportStatus
from meterbridge.worker.reconciliation import superseded_failures


def report(
    revision: int,
    status: str,
    created_at: str,
    failure_class: str | None = None,
    identifier: str | None = None,
) -> ReportRecord:
    return ReportRecord(
        identifier=identifier or f"mb1-si_1-100-200-r{revision}",
        invoice_id="in_1",
        customer_id="cus_1",
        meter_id="mtr_1",
        period=ServicePeriod(start=100, end=200),
        status=ReportStatus(status),
        failure_class=FailureClass(failure_class) if failure_class else None,
        created_at=created_at,
    )


def test_rejected_report_replaced_by_a_delivered_revision_is_not_counted():
    rejected = report(0, "failed", "2026-11-01T00:00:00Z", failure_class="rejected")
    correction = report(1, "sent", "2026-11-02T00:00:00Z")
    assert superseded_failures([rejected, correction]) == {rejected.identifier}


def test_rejected_report_without_correction_stays_counted_as_the_loss():
    rejected = report(0, "failed", "2026-11-01T00:00:00Z", failure_class="rejected")
    assert superseded_failures([rejected]) == set()


def test_a_correction_that_failed_too_does_not_replace_anything():
    rejected = report(0, "failed", "2026-11-01T00:00:00Z", failure_class="rejected")
    pending = report(1, "failed", "2026-11-02T00:00:00Z", failure_class="transient")
    assert superseded_failures([rejected, pending]) == set()


def test_other_periods_and_items_do_not_replace_each_other():
    rejected = report(0, "failed", "2026-11-01T00:00:00Z", failure_class="rejected")
    correction = report(1, "sent", "2026-11-02T00:00:00Z")
    other_item = dataclasses.replace(correction, meter_id="mtr_2")
    other_period = dataclasses.replace(correction, period=ServicePeriod(start=100, end=300))
    assert superseded_failures([rejected, other_item, other_period]) == set()


def test_hashed_identifiers_fall_back_to_claim_order():
    rejected = report(
        0, "failed", "2026-11-01T00:00:00Z", failure_class="rejected", identifier="mb1-h-aaa"
    )
    later = report(0, "sent", "2026-11-03T00:00:00Z", identifier="mb1-h-bbb")
    assert superseded_failures([rejected, later]) == {"mb1-h-aaa"}


def test_an_unknown_outcome_replaced_by_a_delivered_revision_is_not_counted():
    """After `report --force` the correction carries the usage: expecting revision 0 too
    would alarm on a correctly billed invoice."""
    unknown = report(0, "failed", "2026-11-01T00:00:00Z", failure_class="outcome_unknown")
    correction = report(1, "sent", "2026-11-03T00:00:00Z")
    assert superseded_failures([unknown, correction]) == {unknown.identifier}
    assert superseded_failures([unknown]) == set()
