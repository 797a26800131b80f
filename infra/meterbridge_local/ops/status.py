"""What the ledger knows about an invoice or a customer, as rows an operator can read."""

from dataclasses import dataclass
from datetime import UTC, datetime

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import (
    Confirmation,
    ConfirmationStatus,
    HoldStatus,
    InvoiceRecord,
    InvoiceStatus,
    InvoiceView,
    Reconciliation,
    ReconciliationStatus,
    ReportRecord,
    ReportStatus,
)
from meterbridge.domain.reports import report_identifier
from meterbridge_local.ledger_reader import LedgerReader
from meterbridge_local.ops.config import OperatorError


@dataclass(frozen=True)
class ReportRow:
    """One report as the status tables show it, with the invoice guard's verdicts."""

    invoice_id: str
    identifier: str
    status: str
    value: str
    period: str
    deadline: str
    sent_at: str
    attempts: int
    last_error: str
    confirmation: str = "-"  # Stripe's aggregate vs the ledger (INVOICE_GUARD=confirm|hold)
    reconciliation: str = "-"  # the finalized invoice's line vs the ledger and usage source
    attention: tuple[str, ...] = ()  # why an operator should look (empty: nothing to do)

    @classmethod
    def of(cls, report: ReportRecord, superseded_by: int | None = None) -> "ReportRow":
        identifier = report.identifier
        status = report.status.value
        if report.duplicate:
            status += " (duplicate)"
        if report.failure_class:
            code = report.stripe_error_code
            status += f" ({report.failure_class.value}{': ' + code if code else ''})"
        if superseded_by is not None:
            status += f", superseded by r{superseded_by}"
        attention = []
        if report.status is ReportStatus.FAILED and superseded_by is None:
            attention.append(f"{identifier} failed")
        if report.status is ReportStatus.LATE:
            attention.append(f"{identifier} was sent after its invoice finalized")
        confirmation, reconciliation = report.confirmation, report.reconciliation
        if confirmation is not None and confirmation.status is ConfirmationStatus.MISSING:
            attention.append(f"{identifier}: Stripe does not count it yet (confirmation missing)")
        if reconciliation is not None and reconciliation.status is ReconciliationStatus.MISMATCH:
            attention.append(f"{identifier}: finalized invoice mismatch ({reconciliation.reason})")
        return cls(
            invoice_id=report.invoice_id,
            identifier=identifier,
            status=status,
            value="-" if report.value is None else str(report.value),
            period=f"{_date(report.period.start)} → {_date(report.period.end)}",
            deadline=_time(report.finalizes_at),
            sent_at=_time(report.sent_at),
            attempts=report.attempts,
            last_error=report.last_error or "",
            confirmation=confirmation_text(confirmation),
            reconciliation=reconciliation_text(reconciliation),
            attention=tuple(attention),
        )


def confirmation_text(confirmation: Confirmation | None) -> str:
    """confirmed | pending | missing, with Stripe's aggregate and the ledger's expectation."""
    if confirmation is None:
        return "-"
    status, observed = confirmation.status.value, confirmation.observed
    if confirmation.status is ConfirmationStatus.CONFIRMED:
        return f"confirmed (Stripe {observed})"
    if observed is None or confirmation.expected is None:
        return status
    return f"{status}: Stripe {observed}, ledger {confirmation.expected}"


def reconciliation_text(reconciliation: Reconciliation | None) -> str:
    """reconciled, or mismatch with its reason and both numbers."""
    if reconciliation is None:
        return "-"
    invoiced = reconciliation.invoiced
    if reconciliation.status is not ReconciliationStatus.MISMATCH:
        return f"{reconciliation.status.value} ({invoiced})"
    reason = reconciliation.reason
    if reason == "usage_changed":
        numbers = f"invoiced {invoiced}, source now {reconciliation.source}"
    elif reason == "no_value_recorded":
        numbers = f"invoiced {invoiced}, no value in the ledger"
    else:
        numbers = f"invoiced {invoiced}, ledger {reconciliation.expected}"
    return f"mismatch: {numbers} ({reason})"


@dataclass(frozen=True)
class InvoiceSummary:
    invoice_id: str
    status: str  # reported | skipped | failed | (no record)
    reason: str
    updated: str
    reports: list[ReportRow]
    guard: str = ""  # guard mode and hold status, e.g. "guard hold: released (finalize) at …"
    reconciliation: str = ""  # reconciled | mismatch (m of n lines) | not_reported
    attention: tuple[str, ...] = ()  # the invoice's and its reports' reasons to look

    @property
    def needs_attention(self) -> bool:
        return bool(self.attention)


def invoice_status(reader: LedgerReader, invoice_id: str) -> InvoiceSummary | None:
    view = reader.invoice(invoice_id)
    return _summary(view) if view.found else None


def customer_status(
    reader: LedgerReader, customer_id: str, since: str | None = None
) -> list[InvoiceSummary]:
    """Every invoice of the customer with a ledger record since `since`, oldest first."""
    views = reader.customer(customer_id, parse_since(since) if since else None)
    return [_summary(view) for view in views]


def parse_since(text: str) -> str:
    """YYYY-MM-DD or an ISO 8601 time → the ledger's created_at text (UTC, Z)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise OperatorError(
            f"--since {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00]"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _summary(view: InvoiceView) -> InvoiceSummary:
    record = view.record
    later = _superseding_revisions(view.reports)
    reports = [ReportRow.of(item, later.get(item.identifier)) for item in view.reports]
    attention: list[str] = []
    if record is not None and record.status is InvoiceStatus.FAILED:
        attention.append(f"invoice failed: {record.reason or 'see its reports'}")
    if record is not None and record.hold_status is HoldStatus.RELEASED_AT_LIMIT:
        attention.append("the hold reached its limit with usage unconfirmed (HoldLimitReached)")
    for row in reports:
        attention += row.attention
    if (
        record is not None
        and record.reconciliation_status is ReconciliationStatus.MISMATCH
        and not any("mismatch" in reason for reason in attention)
    ):
        attention.append(f"finalized invoice mismatch ({record.mismatched_lines} lines)")
    status = "(no invoice record)"
    if record is not None and record.status is not None:
        status = record.status.value
    if not view.invoice_id:  # continuous reporting's windows belong to no invoice
        status = "sweep windows (continuous reporting, docs/continuous.md)"
    return InvoiceSummary(
        invoice_id=view.invoice_id,
        status=status,
        reason=(record.reason or "") if record else "",
        updated=(record.updated_at or record.created_at) if record else "",
        reports=reports,
        guard=guard_text(record),
        reconciliation=invoice_reconciliation_text(record),
        attention=tuple(attention),
    )


def guard_text(record: InvoiceRecord | None) -> str:
    """The guard mode in force when the invoice was reported, and what its hold did."""
    if record is None or (not record.guard_mode and record.hold_status is None):
        return ""
    hold = record.hold_status
    text = f"guard {record.guard_mode or 'hold'}"
    if hold is not None and hold.held:
        text += f": {hold.value}, until {_time(record.hold_deadline)} at the latest"
    elif hold in {HoldStatus.RELEASED, HoldStatus.RELEASED_AT_LIMIT}:
        assert hold is not None
        how = "at its limit" if hold is HoldStatus.RELEASED_AT_LIMIT else "after confirmation"
        action = record.release_action.value if record.release_action else None
        text += f": {hold.value} {how} ({action}) at {_time(record.released_at)}"
    elif hold is HoldStatus.NOT_HELD:
        text += f": not held ({record.hold_reason or 'no reason recorded'})"
    return text


def invoice_reconciliation_text(record: InvoiceRecord | None) -> str:
    status = record.reconciliation_status if record else None
    if record is None or status is None:
        return ""
    if status is ReconciliationStatus.NOT_REPORTED:
        return "finalized; nothing reported to reconcile"
    right, wrong = record.reconciled_lines, record.mismatched_lines
    if status is ReconciliationStatus.MISMATCH:
        return f"finalized: mismatch on {wrong} of {right + wrong} line(s)"
    return f"finalized: {right} line(s) reconciled"


def _superseding_revisions(reports: list[ReportRecord]) -> dict[str, int]:
    """identifier of a failed revision → the later revision of the same report that was
    delivered (an operator's `report --force` after Stripe rejected the first)."""
    groups: dict[tuple[str, str, int, int], list[ReportRecord]] = {}
    for report in reports:
        groups.setdefault(report.report_key(), []).append(report)
    superseded: dict[str, int] = {}
    for (customer, meter, start, end), items in groups.items():
        period = ServicePeriod(start=start, end=end)
        revision_of = {report_identifier(customer, meter, period, n): n for n in range(len(items))}
        delivered = [
            revision_of[i.identifier] for i in items if i.delivered and i.identifier in revision_of
        ]
        for item in items:
            revision = revision_of.get(item.identifier)
            later = [n for n in delivered if revision is not None and n > revision]
            if item.status is ReportStatus.FAILED and later:
                superseded[item.identifier] = max(later)
    return superseded


def _time(moment: int | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _date(moment: int) -> str:
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M")
