"""Reconciling a finalized invoice (invoice.finalized, in every INVOICE_GUARD mode).

Every line priced on a meter meterbridge reports is judged, whether or not meterbridge saw
the invoice as a draft (domain/reconciliation.py has the rule): the lines that bill one
meter for one period against the usage source's value now. The verdict is written on the
report (or, for lines without a report of this invoice, on the invoice's record as a
finding); InvoiceLineMismatches raises an alarm, UsageNotReported and SharedMeter say why.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterbridge.domain.guard import expected_aggregate, sent_usage
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, ServicePeriod
from meterbridge.domain.reconciliation import LineFacts, Verdict, judge
from meterbridge.domain.records import (
    FailureClass,
    HoldStatus,
    InvoiceChanges,
    Reconciliation,
    ReconciliationStatus,
    ReleaseAction,
    ReportRecord,
    ReportStatus,
)
from meterbridge.domain.reports import overlaps, refusal, report_identifier
from meterbridge.errors import PermanentError
from meterbridge.observability import count, logger
from meterbridge.worker.holding import DraftHold
from meterbridge.worker.invoices import parse_invoice
from meterbridge.worker.planning import InvoicePlanner
from meterbridge.worker.ports import GuardLedger
from meterbridge.worker.usage import UsageReader


@dataclass(frozen=True)
class _Group:
    """The lines of the invoice that bill one meter for one period."""

    meter: Meter
    period: ServicePeriod
    lines: list[InvoiceLine]

    @property
    def invoiced(self) -> Decimal:
        return sum((line.quantity or Decimal(0) for line in self.lines), Decimal(0))

    @property
    def integer_quantity(self) -> bool:
        return any(line.quantity_is_integer for line in self.lines)


class InvoiceReconciliation:
    def __init__(
        self,
        ledger: GuardLedger,
        planner: InvoicePlanner,
        usage: UsageReader,
        hold: DraftHold,
    ):
        self._ledger = ledger
        self._planner = planner
        self._usage = usage
        self._hold = hold

    def reconcile(self, document: dict[str, Any], now: int) -> str:
        """Judge each metered line of a finalized invoice against the usage source."""
        record = self._ledger.invoice(str(document.get("id")))
        try:
            invoice = parse_invoice(document)
        except PermanentError:
            if record is None:
                return "ignored"  # not an invoice meterbridge can read, nor one it knows
            raise
        if invoice.verification:
            return "ignored"  # meterbridge verify checks its own invoice
        if record is not None and record.held:
            self._hold.mark_released(invoice, HoldStatus.RELEASED, ReleaseAction.NONE, now)
        # A line whose period had not ended when the invoice was made (a subscription's first
        # invoice shows the running period at 0) bills usage on a later invoice, not this one.
        groups = self._groups(
            (line, meter)
            for line, meter in self._planner.metered_lines(invoice)
            if line.period.end <= invoice.created
        )
        if not groups:
            if record is None:
                return "ignored"  # bills no meter meterbridge reports
            self._ledger.update_invoice(
                invoice.id,
                invoice.customer_id,
                InvoiceChanges(
                    reconciliation_status=ReconciliationStatus.NOT_REPORTED, reconciled_at=now
                ),
                now,
            )
            return ReconciliationStatus.NOT_REPORTED.value
        reports = self._reports(invoice, groups)
        right = wrong = 0
        findings = list(record.findings) if record is not None else []
        for group in groups:
            verdict, note = self._judge(invoice, group, reports, now)
            if verdict.status is ReconciliationStatus.RECONCILED:
                right += len(group.lines)
            else:
                wrong += len(group.lines)
            if note is not None and note not in findings:
                findings.append(note)
        status = ReconciliationStatus.MISMATCH if wrong else ReconciliationStatus.RECONCILED
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            InvoiceChanges(
                reconciliation_status=status,
                reconciled_lines=right,
                mismatched_lines=wrong,
                reconciled_at=now,
                findings=tuple(findings) if findings else None,
            ),
            now,
        )
        count("InvoicesMismatched" if wrong else "InvoicesReconciled")
        return status.value

    @staticmethod
    def _groups(metered: Iterable[tuple[InvoiceLine, Meter]]) -> list[_Group]:
        groups: dict[tuple[str, ServicePeriod], _Group] = {}
        for line, meter in {line.id: (line, meter) for line, meter in metered}.values():
            key = (meter.id, line.period)
            groups.setdefault(key, _Group(meter, line.period, [])).lines.append(line)
        return list(groups.values())

    def _reports(self, invoice: Invoice, groups: list[_Group]) -> list[ReportRecord]:
        """The customer's reports on these meters since the earliest period began."""
        meters = {group.meter.id for group in groups}
        since = min(group.period.start for group in groups)
        return [
            r
            for r in self._ledger.customer_reports(invoice.customer_id, since=since)
            if r.meter_id in meters and r.status is not ReportStatus.SKIPPED
        ]

    def _judge(
        self, invoice: Invoice, group: _Group, reports: list[ReportRecord], now: int
    ) -> tuple[Verdict, str | None]:
        meter, period = group.meter, group.period
        on_meter = [r for r in reports if r.meter_id == meter.id]
        own = [
            r
            for r in on_meter
            if not r.sweep and (r.period.start, r.period.end) == (period.start, period.end)
        ]
        counted = [r for r in _not_superseded(own) if r.delivered]
        # Stripe bills a line every event of the customer on this meter inside its period:
        # continuous reporting's sweep windows included (docs/continuous.md).
        in_period = [
            r
            for r in _not_superseded(on_meter)
            if r.delivered and r.timestamp is not None and period.start <= r.timestamp < period.end
        ]
        swept = any(r.sweep for r in in_period)
        # Reports of other invoices on overlapping periods, or this one's that other
        # invoices bill too: the meter is billed more than once. Sweep reports belong to
        # the period, never to another invoice.
        others = [
            r
            for r in on_meter
            if not r.sweep
            and r.delivered
            and overlaps(r.period, period)
            and (r.invoice_id != invoice.id or r.also_billed_on - {invoice.id})
        ]
        refused = refusal(meter) is not None
        source = None if refused else self._source_now(invoice, meter, period)
        facts = LineFacts(
            invoiced=group.invoiced,
            integer_quantity=group.integer_quantity,
            source=source,
            reported=(
                expected_aggregate(
                    meter.formula, [sent_usage(r) for r in in_period], meter.event_time_window
                )
                if counted or swept
                else None
            ),
            shared=len(group.lines) > 1 or bool(others),
            rejected=any(r.failure_class is FailureClass.REJECTED for r in _not_superseded(own)),
            late=any(r.status is ReportStatus.LATE for r in counted),
            refused=refused,
        )
        verdict = judge(facts)
        first = report_identifier(invoice.customer_id, meter.id, period)
        primary = next(
            (r for r in own if r.invoice_id == invoice.id and r.identifier == first), None
        )
        note = None
        if primary is not None:
            self._ledger.record_reconciliation(
                primary.identifier,
                Reconciliation(
                    status=verdict.status,
                    invoiced=group.invoiced,
                    expected=verdict.expected,
                    source=source,
                    reason=verdict.reason,
                    reconciled_at=now,
                ),
            )
        elif verdict.status is ReconciliationStatus.MISMATCH:
            note = (
                f"lines {', '.join(line.id for line in group.lines)} bill meter"
                f" {meter.event_name} for [{period.start}, {period.end}): invoiced"
                f" {group.invoiced}, source {source} ({verdict.reason})"
            )
        if verdict.status is ReconciliationStatus.MISMATCH:
            self._alarm(invoice, group, verdict, source, others)
        return verdict, note

    def _alarm(
        self,
        invoice: Invoice,
        group: _Group,
        verdict: Verdict,
        source: Decimal | None,
        others: list[ReportRecord],
    ) -> None:
        count("InvoiceLineMismatches")
        if verdict.reason == "not_reported" and (verdict.expected or 0) > group.invoiced:
            count("UsageNotReported")
        if verdict.reason == "shared_meter":
            count("SharedMeter")
        logger.error(
            "finalized invoice lines do not bill the usage",
            extra={
                "invoice_id": invoice.id,
                "customer_id": invoice.customer_id,
                "meter": group.meter.id,
                "lines": [line.id for line in group.lines],
                "period_start": group.period.start,
                "period_end": group.period.end,
                "mismatch_reason": verdict.reason,
                "invoiced_quantity": str(group.invoiced),
                "expected_quantity": None if verdict.expected is None else str(verdict.expected),
                "source_quantity": None if source is None else str(source),
                "other_invoices": sorted(
                    {r.invoice_id for r in others}
                    | {i for r in others for i in r.also_billed_on} - {invoice.id}
                ),
            },
        )

    def _source_now(self, invoice: Invoice, meter: Meter, period: ServicePeriod) -> Decimal | None:
        try:
            return self._usage.current(invoice.customer_id, meter.event_name, period)
        except PermanentError as error:  # transient errors retry the whole event
            logger.warning(
                "usage source unreadable at reconciliation",
                extra={"invoice_id": invoice.id, "reason": str(error)},
            )
            return None


def _not_superseded(reports: list[ReportRecord]) -> list[ReportRecord]:
    replaced = superseded_failures(reports)
    return [r for r in reports if r.identifier not in replaced]


def superseded_failures(reports: list[ReportRecord]) -> set[str]:
    """Identifiers of closed failures (Stripe rejected it; or its outcome is unknown) that a
    later, delivered revision of the same report replaced: the correction (`meterbridge
    report --force`) carries their usage, so counting both would expect the usage twice.
    (If Stripe did count an unknown one, it then bills more than expected: the mismatch
    that should alarm.)"""
    groups: dict[tuple[str, str, int, int], list[ReportRecord]] = {}
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
