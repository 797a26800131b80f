"""Read-only views of the worker's ledger for operators, on the ledger adapter's records.

The worker's ledger has the writes and the reads it needs; operators also ask "what
happened for this customer since March" and "every revision of this report", which are
here so the deployed code stays small.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.domain.guard import expected_aggregate, sent_usage
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.records import (
    FailureClass,
    InvoiceRecord,
    InvoiceView,
    ReportRecord,
)
from meterbridge.domain.reports import report_identifier
from meterbridge.errors import PermanentError, TransientError

MAX_REVISIONS = 1000  # a runaway loop guard; real reports have a handful

T = TypeVar("T")


class LedgerUnavailable(Exception):
    """The ledger table cannot be read (wrong name, no credentials, endpoint down)."""


@dataclass(frozen=True)
class ReportRevisions:
    """All revisions of one report (customer, meter, service period)."""

    customer_id: str
    meter_id: str
    period: ServicePeriod
    items: list[ReportRecord]  # revision 0 first; stops at the first missing revision

    @property
    def next_revision(self) -> int:
        return len(self.items)

    def counted(self, meter: Meter, also: Iterable[ReportRecord] = ()) -> Decimal:
        """What Stripe counts for this period from these revisions (and `also`: continuous
        reporting's windows in the period), under the meter's formula and pre-aggregation
        window (a sum of deltas, or the newest value)."""
        delivered = [sent_usage(item) for item in [*self.items, *also] if item.delivered]
        return expected_aggregate(meter.formula, delivered, meter.event_time_window)

    @property
    def unfinished(self) -> ReportRecord | None:
        """A revision that is pending or failed: it must be finished before a new one.
        One Stripe rejected asynchronously is final: its identifier cannot be sent again;
        so is one whose outcome is unknown (the worker will not send it again)."""
        return next((i for i in self.items if not i.status.done and not i.closed), None)

    @property
    def outcome_unknown(self) -> ReportRecord | None:
        """A revision that may or may not be counted by Stripe (see SendOutcomeUnknown)."""
        return next(
            (i for i in self.items if i.failure_class is FailureClass.OUTCOME_UNKNOWN), None
        )


class LedgerReader:
    def __init__(self, table_name: str, client: Any):
        self._table = table_name
        self._ledger = DynamoDbLedger(table_name, client)

    @property
    def ledger(self) -> DynamoDbLedger:
        return self._ledger

    def invoice(self, invoice_id: str) -> InvoiceView:
        view = self._guard(lambda: self._ledger.invoice_view(invoice_id))
        reports = sorted(
            view.reports,
            key=lambda r: (r.period.start, r.meter_id, r.identifier),
        )
        return InvoiceView(invoice_id, view.record, reports)

    def customer(self, customer_id: str, since: str | None = None) -> list[InvoiceView]:
        """The customer's invoices with a ledger record or report, oldest first; `since`
        is ISO 8601 UTC text compared with the records' claim time."""
        invoices, reports = self._guard(lambda: self._ledger.customer_records(customer_id, since))
        views: dict[str, tuple[InvoiceRecord | None, list[ReportRecord]]] = {}
        for record in invoices:
            views[record.invoice_id] = (record, views.get(record.invoice_id, (None, []))[1])
        for report in reports:
            views.setdefault(report.invoice_id, (None, []))[1].append(report)
        ordered = sorted(views.items(), key=lambda entry: _first_seen(*entry[1]))
        return [InvoiceView(invoice_id, record, items) for invoice_id, (record, items) in ordered]

    def revisions(self, customer_id: str, meter_id: str, period: ServicePeriod) -> ReportRevisions:
        items: list[ReportRecord] = []
        for revision in range(MAX_REVISIONS):
            item = self._report(report_identifier(customer_id, meter_id, period, revision))
            if item is None:
                break
            items.append(item)
        return ReportRevisions(customer_id, meter_id, period, items)

    def _report(self, identifier: str) -> ReportRecord | None:
        return self._guard(lambda: self._ledger.report(identifier))

    def _guard(self, read: Callable[[], T]) -> T:
        try:
            return read()
        # The ledger wraps DynamoDB errors in its failure classes; botocore's own may remain.
        except (ClientError, BotoCoreError, TransientError, PermanentError) as error:
            raise LedgerUnavailable(f"ledger table {self._table}: {error}") from error


def _first_seen(record: InvoiceRecord | None, reports: list[ReportRecord]) -> str:
    times = [r.created_at for r in reports] + ([record.created_at] if record else [])
    return min(times) if times else ""
