"""What the ledger knows about an invoice or a customer, as rows an operator can read."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterbridge.adapters.ledger import INVOICE, REPORT, SORT_KEY
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.reports import report_identifier
from meterbridge_local.ledger_reader import InvoiceView, LedgerReader
from meterbridge_local.ops.config import OperatorError

DELIVERED = frozenset({"sent", "late"})


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
    def of(cls, item: dict[str, Any], superseded_by: int | None = None) -> "ReportRow":
        start, end = item.get("period_start"), item.get("period_end")
        identifier = str(item.get("identifier", ""))
        raw_status = str(item.get("status", "?"))
        status = raw_status
        if item.get("duplicate"):
            status += " (duplicate)"
        if item.get("failure_class"):
            code = item.get("stripe_error_code")
            status += f" ({item['failure_class']}{': ' + str(code) if code else ''})"
        if superseded_by is not None:
            status += f", superseded by r{superseded_by}"
        attention = []
        if raw_status == "failed" and superseded_by is None:
            attention.append(f"{identifier} failed")
        if raw_status == "late":
            attention.append(f"{identifier} was sent after its invoice finalized")
        if item.get("confirmation_status") == "missing":
            attention.append(f"{identifier}: Stripe does not count it yet (confirmation missing)")
        if item.get("reconciliation_status") == "mismatch":
            attention.append(
                f"{identifier}: finalized invoice mismatch ({item.get('mismatch_reason')})"
            )
        return cls(
            invoice_id=str(item.get("invoice_id", "")),
            identifier=identifier,
            status=status,
            value=str(item.get("value", "-")),
            period=f"{_date(start)} → {_date(end)}" if start is not None else "-",
            deadline=_time(item.get("finalizes_at")),
            sent_at=_time(item.get("sent_at")),
            attempts=int(item.get("attempts", 0)),
            last_error=str(item.get("last_error") or ""),
            confirmation=confirmation_text(item),
            reconciliation=reconciliation_text(item),
            attention=tuple(attention),
        )


def confirmation_text(item: dict[str, Any]) -> str:
    """confirmed | pending | missing, with Stripe's aggregate and the ledger's expectation."""
    status = item.get("confirmation_status")
    if not status:
        return "-"
    observed, expected = item.get("confirmation_observed"), item.get("confirmation_expected")
    if status == "confirmed":
        return f"confirmed (Stripe {observed})"
    if observed is None or expected is None:
        return str(status)
    return f"{status}: Stripe {observed}, ledger {expected}"


def reconciliation_text(item: dict[str, Any]) -> str:
    """reconciled, or mismatch with its reason and both numbers."""
    status = item.get("reconciliation_status")
    if not status:
        return "-"
    invoiced, expected = item.get("invoiced_quantity"), item.get("expected_quantity")
    if status != "mismatch":
        return f"{status} ({invoiced})"
    reason = item.get("mismatch_reason")
    if reason == "usage_changed":
        numbers = f"invoiced {invoiced}, source now {item.get('source_quantity')}"
    elif reason == "no_value_recorded":
        numbers = f"invoiced {invoiced}, no value in the ledger"
    else:
        numbers = f"invoiced {invoiced}, ledger {expected}"
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
    items = reader.customer(customer_id, parse_since(since) if since else None)
    by_invoice: dict[str, InvoiceView] = {}
    for item in items:
        invoice_id = str(item.get("invoice_id", ""))
        view = by_invoice.setdefault(invoice_id, InvoiceView(invoice_id, None, []))
        if item.get(SORT_KEY) == INVOICE:
            by_invoice[invoice_id] = InvoiceView(invoice_id, item, view.reports)
        elif item.get(SORT_KEY) == REPORT:
            view.reports.append(item)
    return [_summary(view) for view in by_invoice.values()]


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
    record = view.record or {}
    later = _superseding_revisions(view.reports)
    reports = [ReportRow.of(item, later.get(str(item.get("identifier")))) for item in view.reports]
    attention: list[str] = []
    if record.get("status") == "failed":
        attention.append(f"invoice failed: {record.get('reason') or 'see its reports'}")
    if record.get("hold_status") == "released_at_limit":
        attention.append("the hold reached its limit with usage unconfirmed (HoldLimitReached)")
    for row in reports:
        attention += row.attention
    if record.get("reconciliation_status") == "mismatch" and not any(
        "mismatch" in reason for reason in attention
    ):
        attention.append(f"finalized invoice mismatch ({record.get('mismatched_lines')} lines)")
    return InvoiceSummary(
        invoice_id=view.invoice_id,
        status=str(record.get("status", "(no invoice record)")),
        reason=str(record.get("reason") or ""),
        updated=str(record.get("updated_at") or record.get("created_at") or ""),
        reports=reports,
        guard=guard_text(record),
        reconciliation=invoice_reconciliation_text(record),
        attention=tuple(attention),
    )


def guard_text(record: dict[str, Any]) -> str:
    """The guard mode in force when the invoice was reported, and what its hold did."""
    mode, hold = record.get("guard_mode"), record.get("hold_status")
    if not mode and not hold:
        return ""
    text = f"guard {mode or 'hold'}"
    if hold in {"holding", "held"}:
        text += f": {hold}, until {_time(record.get('hold_deadline'))} at the latest"
    elif hold in {"released", "released_at_limit"}:
        how = "at its limit" if hold == "released_at_limit" else "after confirmation"
        text += (
            f": {hold} {how} ({record.get('release_action')}) at {_time(record.get('released_at'))}"
        )
    elif hold == "not_held":
        text += f": not held ({record.get('hold_reason') or 'no reason recorded'})"
    return text


def invoice_reconciliation_text(record: dict[str, Any]) -> str:
    status = record.get("reconciliation_status")
    if not status:
        return ""
    if status == "not_reported":
        return "finalized; nothing reported to reconcile"
    right, wrong = (
        int(record.get("reconciled_lines") or 0),
        int(record.get("mismatched_lines") or 0),
    )
    if status == "mismatch":
        return f"finalized: mismatch on {wrong} of {right + wrong} line(s)"
    return f"finalized: {right} line(s) reconciled"


def _superseding_revisions(reports: list[dict[str, Any]]) -> dict[str, int]:
    """identifier of a failed revision → the later revision of the same report that was
    delivered (an operator's `report --force` after Stripe rejected the first)."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for item in reports:
        if item.get("period_start") is None or item.get("period_end") is None:
            continue
        key = (
            str(item.get("subscription_item_id", "")),
            int(item["period_start"]),
            int(item["period_end"]),
        )
        groups.setdefault(key, []).append(item)
    superseded: dict[str, int] = {}
    for (subscription_item, start, end), items in groups.items():
        period = ServicePeriod(start=start, end=end)
        revision_of = {
            report_identifier(subscription_item, period, n): n for n in range(len(items))
        }
        delivered = [
            revision_of[str(i.get("identifier"))]
            for i in items
            if i.get("status") in DELIVERED and str(i.get("identifier")) in revision_of
        ]
        for item in items:
            revision = revision_of.get(str(item.get("identifier")))
            later = [n for n in delivered if revision is not None and n > revision]
            if item.get("status") == "failed" and later:
                superseded[str(item.get("identifier"))] = max(later)
    return superseded


def _time(moment: Any) -> str:
    if moment is None or moment == "":
        return "-"
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _date(moment: Any) -> str:
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M")
