"""Reconciling a finalized invoice (invoice.finalized, in every INVOICE_GUARD mode).

Each metered line meterbridge reported is compared with what the ledger's reports say it
should bill and with the usage source's value now; the ledger records `reconciled` or
`mismatch` with the numbers, and InvoiceLineMismatches raises an alarm.
"""

from decimal import Decimal
from typing import Any

from meterbridge.domain.guard import expected_aggregate, line_is_right, same_value
from meterbridge.domain.invoices import Invoice, InvoiceLine
from meterbridge.domain.records import (
    HoldStatus,
    InvoiceChanges,
    Reconciliation,
    ReconciliationStatus,
    ReleaseAction,
    ReportRecord,
    ReportStatus,
)
from meterbridge.errors import PermanentError
from meterbridge.observability import count, logger
from meterbridge.worker.confirmation import sent_usage
from meterbridge.worker.holding import DraftHold
from meterbridge.worker.invoices import InvoiceReader, parse_invoice
from meterbridge.worker.ports import GuardLedger, Stripe
from meterbridge.worker.usage import UsageReader


class InvoiceReconciliation:
    def __init__(
        self,
        stripe: Stripe,
        ledger: GuardLedger,
        invoices: InvoiceReader,
        usage: UsageReader | None,
        hold: DraftHold,
    ):
        self._stripe = stripe
        self._ledger = ledger
        self._invoices = invoices
        self._usage = usage
        self._hold = hold

    def reconcile(self, document: dict[str, Any], now: int) -> str:
        """Compare each metered line meterbridge reported with the ledger's expectation."""
        record = self._ledger.invoice(str(document.get("id")))
        if record is None:
            return "ignored"  # never seen as a draft meterbridge reports for
        invoice = parse_invoice(document)
        if record.held:
            self._hold.mark_released(invoice, HoldStatus.RELEASED, ReleaseAction.NONE, now)
        reports = self._ledger.invoice_reports(invoice.id)
        if not reports:
            self._ledger.update_invoice(
                invoice.id,
                invoice.customer_id,
                InvoiceChanges(
                    reconciliation_status=ReconciliationStatus.NOT_REPORTED, reconciled_at=now
                ),
                now,
            )
            return ReconciliationStatus.NOT_REPORTED.value
        by_line = {r.report_key(): r for r in reports}
        right = wrong = 0
        for line in self._invoices.lines(invoice):
            report = by_line.get((line.subscription_item_id, line.period.start, line.period.end))
            if report is None:
                continue
            if self._reconcile_line(invoice, line, report, now):
                right += 1
            else:
                wrong += 1
        status = ReconciliationStatus.MISMATCH if wrong else ReconciliationStatus.RECONCILED
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            InvoiceChanges(
                reconciliation_status=status,
                reconciled_lines=right,
                mismatched_lines=wrong,
                reconciled_at=now,
            ),
            now,
        )
        count("InvoicesMismatched" if wrong else "InvoicesReconciled")
        return status.value

    def _reconcile_line(
        self, invoice: Invoice, line: InvoiceLine, report: ReportRecord, now: int
    ) -> bool:
        peers = [
            r
            for r in self._ledger.customer_reports(invoice.customer_id, since=line.period.start)
            if r.meter_id == report.meter_id
            and r.status is not ReportStatus.SKIPPED
            and r.timestamp is not None
            and line.period.start <= r.timestamp < line.period.end
        ]
        replaced = superseded_failures(peers)
        peers = [r for r in peers if r.identifier not in replaced]
        # What should be billed is what the usage source said, sent or not: a report that
        # failed to reach Stripe is exactly the loss reconciliation exists to show.
        expected = expected_aggregate(
            self._formula(report.meter_id), [sent_usage(r) for r in peers]
        )
        unknown = report.status is not ReportStatus.SKIPPED and report.value is None
        invoiced = line.quantity if line.quantity is not None else Decimal(0)
        reason = None
        if unknown:
            reason = "no_value_recorded"
        elif not line_is_right(invoiced, expected, integer_quantity=line.quantity_is_integer):
            reason = "stripe_differs"  # lost (or extra) usage on Stripe's side
        source = self._source_now(invoice, report, line)
        reported = report.value if report.value is not None else Decimal(0)
        if reason is None and source is not None and not same_value(source, reported):
            reason = "usage_changed"  # the usage source moved on after the report was sent
        self._ledger.record_reconciliation(
            report.identifier,
            Reconciliation(
                status=ReconciliationStatus.MISMATCH if reason else ReconciliationStatus.RECONCILED,
                invoiced=invoiced,
                expected=expected,
                source=source,
                reason=reason,
                reconciled_at=now,
            ),
        )
        if reason:
            count("InvoiceLineMismatches")
            logger.error(
                "finalized invoice line does not bill the usage",
                extra={
                    "invoice_id": invoice.id,
                    "identifier": report.identifier,
                    "mismatch_reason": reason,
                    "invoiced_quantity": str(invoiced),
                    "expected_quantity": "unknown" if unknown else str(expected),
                    "source_quantity": None if source is None else str(source),
                },
            )
        return reason is None

    def _source_now(
        self, invoice: Invoice, report: ReportRecord, line: InvoiceLine
    ) -> Decimal | None:
        if self._usage is None or report.meter_event_name is None:
            return None
        try:
            return self._usage.current(invoice.customer_id, report.meter_event_name, line.period)
        except PermanentError as error:  # transient errors retry the whole event
            logger.warning(
                "usage source unreadable at reconciliation",
                extra={"invoice_id": invoice.id, "reason": str(error)},
            )
            return None

    def _formula(self, meter_id: str) -> str:
        meter = self._stripe.meter(meter_id)
        return str((meter.get("default_aggregation") or {}).get("formula") or "sum")


def superseded_failures(reports: list[ReportRecord]) -> set[str]:
    """Identifiers of closed failures (Stripe rejected it; or its outcome is unknown) that a
    later, delivered revision of the same report (subscription item and period) replaced:
    the correction (`meterbridge report --force`) carries their usage, so counting both
    would expect the usage twice. (If Stripe did count an unknown one, it then bills more
    than expected: the mismatch that should alarm.)"""
    groups: dict[tuple[str | None, int, int], list[ReportRecord]] = {}
    for report in reports:
        groups.setdefault(report.report_key(), []).append(report)
    replaced: set[str] = set()
    for members in groups.values():
        delivered = [m for m in members if m.delivered and not m.closed]
        for closed in (m for m in members if m.closed):
            if any(_revision_order(d) > _revision_order(closed) for d in delivered):
                replaced.add(closed.identifier)
    return replaced


def _revision_order(report: ReportRecord) -> tuple[int, str]:
    """Revision from a readable identifier (`…-r2`), else -1; then when it was claimed."""
    return (report.revision, report.created_at)
