"""What the ledger knows about an invoice or a customer, as rows an operator can read."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterbridge.adapters.ledger import INVOICE, REPORT, SORT_KEY
from meterbridge_local.ledger_reader import InvoiceView, LedgerReader
from meterbridge_local.ops.config import OperatorError


@dataclass(frozen=True)
class ReportRow:
    """One report as the status tables show it."""

    invoice_id: str
    identifier: str
    status: str
    value: str
    period: str
    deadline: str
    sent_at: str
    attempts: int
    last_error: str

    @classmethod
    def of(cls, item: dict[str, Any]) -> "ReportRow":
        start, end = item.get("period_start"), item.get("period_end")
        status = str(item.get("status", "?"))
        if item.get("duplicate"):
            status += " (duplicate)"
        if item.get("failure_class"):
            status += f" ({item['failure_class']})"
        return cls(
            invoice_id=str(item.get("invoice_id", "")),
            identifier=str(item.get("identifier", "")),
            status=status,
            value=str(item.get("value", "-")),
            period=f"{_date(start)} → {_date(end)}" if start is not None else "-",
            deadline=_time(item.get("finalizes_at")),
            sent_at=_time(item.get("sent_at")),
            attempts=int(item.get("attempts", 0)),
            last_error=str(item.get("last_error") or ""),
        )


@dataclass(frozen=True)
class InvoiceSummary:
    invoice_id: str
    status: str  # reported | skipped | failed | (no record)
    reason: str
    updated: str
    reports: list[ReportRow]


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
    return InvoiceSummary(
        invoice_id=view.invoice_id,
        status=str(record.get("status", "(no invoice record)")),
        reason=str(record.get("reason") or ""),
        updated=str(record.get("updated_at") or record.get("created_at") or ""),
        reports=[ReportRow.of(item) for item in view.reports],
    )


def _time(moment: Any) -> str:
    if moment is None or moment == "":
        return "-"
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _date(moment: Any) -> str:
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%d %H:%M")
