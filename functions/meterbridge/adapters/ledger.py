"""Ledger: the DynamoDB record of every report, and the guard that makes sending happen once.

Stripe forgets meter event identifiers after ~24 h; this table does not. A report moves
`pending → sent | late` (or `failed`, `skipped`) only through conditional writes, so two
workers can never both hold the right to send, and a report already `sent` is never sent
again — not even when a week-old message is replayed from the dead-letter queue.

Table schema (template.yaml's LedgerTable must match these constants):

    key            pk (S, HASH) + sk (S, RANGE)
    report         pk = "report#<identifier>",  sk = "report"
    invoice        pk = "invoice#<invoice id>", sk = "invoice"   (skipped / failed / reported)
    Stripe event   pk = "event#<event id>",     sk = "event"     (expires via TTL)
    GSI by_invoice   invoice_id (S, HASH) + sk (S, RANGE)          projection ALL
    GSI by_customer  customer_id (S, HASH) + created_at (S, RANGE) projection ALL
    TTL attribute    expires_at (N, unix seconds): only event items carry it

Report items also hold: identifier, subscription_item_id, meter_id, meter_event_name,
period_start, period_end, value (decimal text), timestamp, status, failure_class,
last_error, attempts, lease_expires_at, stripe_request_id, finalizes_at, sent_at,
duplicate, livemode, updated_at.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.domain.reports import PlannedReport
from meterbridge.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PARTITION_KEY = "pk"
SORT_KEY = "sk"
BY_INVOICE_INDEX = "by_invoice"
BY_CUSTOMER_INDEX = "by_customer"
INVOICE_ID = "invoice_id"
CUSTOMER_ID = "customer_id"
CREATED_AT = "created_at"
TTL_ATTRIBUTE = "expires_at"

REPORT = "report"
INVOICE = "invoice"
EVENT = "event"

_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class ReportStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    LATE = "late"  # sent, but after the invoice's finalization time
    SKIPPED = "skipped"
    FAILED = "failed"


DONE_STATUSES = frozenset({ReportStatus.SENT, ReportStatus.LATE, ReportStatus.SKIPPED})


class ReportInFlight(TransientError):
    """Another worker holds this report's lease; retry after it ends or expires."""


@dataclass(frozen=True)
class Claim:
    """The right to send one report. `value`/`timestamp` are reused from an earlier attempt
    that may already have reached Stripe, so the ledger always matches what Stripe holds."""

    identifier: str
    attempt: int
    value: Decimal | None = None
    timestamp: int | None = None


def iso(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def report_key(identifier: str) -> dict[str, Any]:
    return {PARTITION_KEY: f"{REPORT}#{identifier}", SORT_KEY: REPORT}


def _encode(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


class Ledger:
    """Reads and conditional writes on the ledger table; boto3 never leaves this class."""

    def __init__(self, table_name: str, client: "DynamoDBClient"):
        self._table = table_name
        self._client = client

    # --- reports ------------------------------------------------------------------------

    def report(self, identifier: str) -> dict[str, Any] | None:
        found = self._dynamo(
            lambda: self._client.get_item(
                TableName=self._table, Key=_encode(report_key(identifier)), ConsistentRead=True
            )
        )
        item = found.get("Item")
        return _decode(item) if item else None

    def claim(self, report: PlannedReport, now: int, lease_seconds: int) -> Claim | None:
        """Take the right to send `report`; None when it is already sent or skipped.

        Raises ReportInFlight while another worker's lease is live. A lease outlives a
        crashed worker only until `lease_seconds`; its retry then takes over.
        """
        values = {
            ":pending": ReportStatus.PENDING.value,
            ":sent": ReportStatus.SENT.value,
            ":late": ReportStatus.LATE.value,
            ":skipped": ReportStatus.SKIPPED.value,
            ":now": now,
            ":lease": now + lease_seconds,
            ":zero": 0,
            ":one": 1,
            ":invoice": report.invoice_id,
            ":customer": report.customer_id,
            ":item": report.subscription_item_id,
            ":meter": report.meter.id,
            ":event_name": report.meter.event_name,
            ":start": report.period.start,
            ":end": report.period.end,
            ":finalizes": report.finalizes_at,
            ":identifier": report.identifier,
            ":created": iso(now),
            ":livemode": report.livemode,
        }
        try:
            answer = self._dynamo(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_encode(report_key(report.identifier)),
                    UpdateExpression=(
                        "SET #status = :pending, lease_expires_at = :lease,"
                        " attempts = if_not_exists(attempts, :zero) + :one,"
                        " identifier = :identifier, invoice_id = :invoice,"
                        " customer_id = :customer, subscription_item_id = :item,"
                        " meter_id = :meter, meter_event_name = :event_name,"
                        " period_start = :start, period_end = :end,"
                        " finalizes_at = :finalizes, livemode = :livemode,"
                        " created_at = if_not_exists(created_at, :created), updated_at = :created"
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR (#status <> :sent AND #status <> :late"
                        " AND #status <> :skipped"
                        " AND (#status <> :pending OR lease_expires_at < :now))"
                    ),
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=_encode(values),
                    ReturnValues="ALL_NEW",
                ),
                conditional=True,
            )
        except _ConditionFailed:
            current = self.report(report.identifier) or {}
            if current.get("status") in DONE_STATUSES:
                return None
            raise ReportInFlight(
                f"report {report.identifier} is being sent by another worker (lease until"
                f" {current.get('lease_expires_at')})"
            ) from None
        item = _decode(answer["Attributes"])
        reusable = item.get("value") is not None and item.get("failure_class") != "permanent"
        return Claim(
            identifier=report.identifier,
            attempt=int(item["attempts"]),
            value=Decimal(item["value"]) if reusable else None,
            timestamp=int(item["timestamp"]) if reusable and "timestamp" in item else None,
        )

    def record_value(self, claim: Claim, value: Decimal, timestamp: int, now: int) -> None:
        """Write down what is about to be sent, before sending it."""
        self._update_claimed(
            claim,
            "SET #value = :value, #timestamp = :timestamp, updated_at = :updated",
            {":value": str(value), ":timestamp": timestamp, ":updated": iso(now)},
            names={"#value": "value", "#timestamp": "timestamp"},
        )

    def mark_sent(
        self,
        claim: Claim,
        *,
        late: bool,
        request_id: str | None,
        duplicate: bool,
        now: int,
    ) -> None:
        status = ReportStatus.LATE if late else ReportStatus.SENT
        self._update_claimed(
            claim,
            "SET #status = :status, sent_at = :sent_at, stripe_request_id = :request_id,"
            " duplicate = :duplicate, updated_at = :updated"
            " REMOVE lease_expires_at, failure_class, last_error",
            {
                ":status": status.value,
                ":sent_at": now,
                ":request_id": request_id or "",
                ":duplicate": duplicate,
                ":updated": iso(now),
            },
        )

    def mark_failed(self, claim: Claim, *, failure_class: str, reason: str, now: int) -> None:
        """Record why this attempt failed; the lease ends so a retry can claim at once."""
        self._update_claimed(
            claim,
            "SET #status = :failed, failure_class = :class, last_error = :reason,"
            " updated_at = :updated REMOVE lease_expires_at",
            {
                ":failed": ReportStatus.FAILED.value,
                ":class": failure_class,
                ":reason": reason[:1000],
                ":updated": iso(now),
            },
        )

    def mark_skipped(self, claim: Claim, *, reason: str, now: int) -> None:
        self._update_claimed(
            claim,
            "SET #status = :skipped, last_error = :reason, updated_at = :updated"
            " REMOVE lease_expires_at",
            {":skipped": ReportStatus.SKIPPED.value, ":reason": reason, ":updated": iso(now)},
        )

    def _update_claimed(
        self,
        claim: Claim,
        expression: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> None:
        """Only the attempt that holds the claim may move the report on."""
        try:
            self._dynamo(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_encode(report_key(claim.identifier)),
                    UpdateExpression=expression,
                    ConditionExpression="attempts = :attempt AND #status = :pending_state",
                    ExpressionAttributeNames={"#status": "status", **(names or {})},
                    ExpressionAttributeValues=_encode(
                        {
                            **values,
                            ":attempt": claim.attempt,
                            ":pending_state": ReportStatus.PENDING.value,
                        }
                    ),
                ),
                conditional=True,
            )
        except _ConditionFailed:
            raise ReportInFlight(
                f"report {claim.identifier}: attempt {claim.attempt} lost its lease to a newer one"
            ) from None

    def invoice_items(self, invoice_id: str) -> list[dict[str, Any]]:
        """Everything recorded for one invoice (its reports and its own record)."""
        return list(self._query(BY_INVOICE_INDEX, INVOICE_ID, invoice_id))

    def customer_items(self, customer_id: str) -> list[dict[str, Any]]:
        return list(self._query(BY_CUSTOMER_INDEX, CUSTOMER_ID, customer_id))

    # --- invoices -----------------------------------------------------------------------

    def record_invoice(
        self,
        invoice_id: str,
        customer_id: str,
        *,
        status: str,
        reason: str | None,
        now: int,
        report_count: int = 0,
    ) -> None:
        item = {
            PARTITION_KEY: f"{INVOICE}#{invoice_id}",
            SORT_KEY: INVOICE,
            INVOICE_ID: invoice_id,
            CUSTOMER_ID: customer_id,
            CREATED_AT: iso(now),
            "status": status,
            "reason": reason,
            "report_count": report_count,
        }
        self._dynamo(lambda: self._client.put_item(TableName=self._table, Item=_encode(item)))

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        found = self._dynamo(
            lambda: self._client.get_item(
                TableName=self._table,
                Key=_encode({PARTITION_KEY: f"{INVOICE}#{invoice_id}", SORT_KEY: INVOICE}),
                ConsistentRead=True,
            )
        )
        item = found.get("Item")
        return _decode(item) if item else None

    # --- Stripe events ------------------------------------------------------------------

    def event_seen(self, event_id: str, now: int) -> bool:
        found = self._dynamo(
            lambda: self._client.get_item(
                TableName=self._table,
                Key=_encode({PARTITION_KEY: f"{EVENT}#{event_id}", SORT_KEY: EVENT}),
                ConsistentRead=True,
            )
        )
        item = found.get("Item")
        # TTL deletion lags by up to days: an expired item no longer counts.
        return bool(item) and int(_decode(item).get(TTL_ATTRIBUTE, now + 1)) > now

    def remember_event(self, event_id: str, event_type: str, now: int, memory_seconds: int) -> None:
        item = {
            PARTITION_KEY: f"{EVENT}#{event_id}",
            SORT_KEY: EVENT,
            "event_type": event_type,
            "processed_at": iso(now),
            TTL_ATTRIBUTE: now + memory_seconds,
        }
        self._dynamo(lambda: self._client.put_item(TableName=self._table, Item=_encode(item)))

    # --- plumbing -----------------------------------------------------------------------

    def _query(self, index: str, key: str, value: str) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = self._dynamo(
                lambda extra=extra: self._client.query(
                    TableName=self._table,
                    IndexName=index,
                    KeyConditionExpression="#key = :value",
                    ExpressionAttributeNames={"#key": key},
                    ExpressionAttributeValues={":value": {"S": value}},
                    **extra,
                )
            )
            for item in page.get("Items", []):
                yield _decode(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _dynamo(self, call: Any, conditional: bool = False) -> Any:
        try:
            return call()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if conditional and code == "ConditionalCheckFailedException":
                raise _ConditionFailed from error
            if code in _TRANSIENT_CODES:
                raise TransientError(f"DynamoDB {code} on ledger {self._table}") from error
            raise PermanentError(f"DynamoDB {code} on ledger {self._table}: {error}") from error
        except BotoCoreError as error:
            raise TransientError(
                f"DynamoDB unreachable for ledger {self._table}: {error}"
            ) from error


class _ConditionFailed(Exception):
    """Internal: a conditional write's condition did not hold."""


def create_ledger_table(client: "DynamoDBClient", table_name: str) -> None:
    """The table as template.yaml declares it; for the local stack and tests."""
    attribute = [PARTITION_KEY, SORT_KEY, INVOICE_ID, CUSTOMER_ID, CREATED_AT]
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attribute],
        KeySchema=[
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_INVOICE_INDEX,
                "KeySchema": [
                    {"AttributeName": INVOICE_ID, "KeyType": "HASH"},
                    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": BY_CUSTOMER_INDEX,
                "KeySchema": [
                    {"AttributeName": CUSTOMER_ID, "KeyType": "HASH"},
                    {"AttributeName": CREATED_AT, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
