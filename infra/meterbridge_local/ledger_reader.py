"""Read-only views of the worker's ledger for operators, built on the ledger's own constants.

The worker's `Ledger` has the writes and the reads it needs; operators also ask "what
happened for this customer since March" and "every revision of this report", which are
here so the deployed code stays small.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.adapters.ledger import (
    BY_CUSTOMER_INDEX,
    CLOSED_FAILURES,
    CREATED_AT,
    CUSTOMER_ID,
    DONE_STATUSES,
    INVOICE,
    OUTCOME_UNKNOWN,
    REJECTED,
    REPORT,
    SORT_KEY,
    Ledger,
    ReportStatus,
)
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.reports import report_identifier
from meterbridge.errors import PermanentError, TransientError

MAX_REVISIONS = 1000  # a runaway loop guard; real reports have a handful

_deserializer = TypeDeserializer()


class LedgerUnavailable(Exception):
    """The ledger table cannot be read (wrong name, no credentials, endpoint down)."""


@dataclass(frozen=True)
class InvoiceView:
    invoice_id: str
    record: dict[str, Any] | None  # the invoice item: status reported / skipped / failed
    reports: list[dict[str, Any]]  # every report item, all revisions, by period then identifier

    @property
    def found(self) -> bool:
        return self.record is not None or bool(self.reports)


@dataclass(frozen=True)
class ReportRevisions:
    """All revisions of one (subscription item, service period) report."""

    subscription_item_id: str
    period: ServicePeriod
    items: list[dict[str, Any]]  # revision 0 first; stops at the first missing revision

    @property
    def next_revision(self) -> int:
        return len(self.items)

    @property
    def counted_total(self) -> Decimal:
        """What Stripe counts for this period: the values of every delivered revision."""
        return sum(
            (
                Decimal(str(item.get("value", "0")))
                for item in self.items
                if item.get("status") in {ReportStatus.SENT, ReportStatus.LATE}
            ),
            Decimal(0),
        )

    @property
    def unfinished(self) -> dict[str, Any] | None:
        """A revision that is pending or failed: it must be finished before a new one.
        One Stripe rejected asynchronously is final: its identifier cannot be sent again;
        so is one whose outcome is unknown (the worker will not send it again)."""
        for item in self.items:
            if item.get("status") not in DONE_STATUSES and not is_closed_failure(item):
                return item
        return None

    @property
    def outcome_unknown(self) -> dict[str, Any] | None:
        """A revision that may or may not be counted by Stripe (see SendOutcomeUnknown)."""
        return next((item for item in self.items if is_outcome_unknown(item)), None)


def is_rejected(item: dict[str, Any]) -> bool:
    """Stripe refused the report after accepting the request (meter error report)."""
    return item.get("failure_class") == REJECTED


def is_outcome_unknown(item: dict[str, Any]) -> bool:
    """An attempt may have reached Stripe longer ago than Stripe remembers identifiers."""
    return item.get("failure_class") == OUTCOME_UNKNOWN


def is_closed_failure(item: dict[str, Any]) -> bool:
    """A failed revision the worker never sends again: only a new revision can follow."""
    return item.get("failure_class") in CLOSED_FAILURES


class LedgerReader:
    def __init__(self, table_name: str, client: Any):
        self._table = table_name
        self._client = client
        self._ledger = Ledger(table_name, client)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def invoice(self, invoice_id: str) -> InvoiceView:
        items = self._guard(lambda: self._ledger.invoice_items(invoice_id))
        record = next((item for item in items if item.get(SORT_KEY) == INVOICE), None)
        reports = sorted(
            (item for item in items if item.get(SORT_KEY) == REPORT),
            key=lambda item: (
                int(item.get("period_start", 0)),
                str(item.get("subscription_item_id", "")),
                str(item.get("identifier", "")),
            ),
        )
        return InvoiceView(invoice_id, record, reports)

    def customer(self, customer_id: str, since: str | None = None) -> list[dict[str, Any]]:
        """Invoice records and reports of one customer, oldest first; `since` is ISO 8601 UTC
        text compared with the items' created_at (written as ISO 8601 with a Z)."""
        return list(self._guard(lambda: list(self._customer_items(customer_id, since))))

    def revisions(self, subscription_item_id: str, period: ServicePeriod) -> ReportRevisions:
        items: list[dict[str, Any]] = []
        for revision in range(MAX_REVISIONS):
            identifier = report_identifier(subscription_item_id, period, revision)
            item = self._guard(lambda identifier=identifier: self._ledger.report(identifier))
            if item is None:
                break
            items.append(item)
        return ReportRevisions(subscription_item_id, period, items)

    def _customer_items(self, customer_id: str, since: str | None) -> Iterator[dict[str, Any]]:
        condition = "#customer = :customer"
        values: dict[str, Any] = {":customer": {"S": customer_id}}
        if since:
            condition += " AND #created >= :since"
            values[":since"] = {"S": since}
        start: dict[str, Any] | None = None
        while True:
            page = self._client.query(
                TableName=self._table,
                IndexName=BY_CUSTOMER_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames={
                    "#customer": CUSTOMER_ID,
                    **({"#created": CREATED_AT} if since else {}),
                },
                ExpressionAttributeValues=values,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            for item in page.get("Items", []):
                yield {key: _deserializer.deserialize(value) for key, value in item.items()}
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _guard(self, read: Any) -> Any:
        try:
            return read()
        # The worker's Ledger wraps DynamoDB errors in its failure classes; raw queries don't.
        except (ClientError, BotoCoreError, TransientError, PermanentError) as error:
            raise LedgerUnavailable(f"ledger table {self._table}: {error}") from error
