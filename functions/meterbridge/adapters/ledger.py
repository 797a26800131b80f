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
    (invoice.created events are remembered on their invoice's item instead, in the string
    set `created_events`: the worker reads that item anyway, so one round trip less)
    GSI by_invoice   invoice_id (S, HASH) + sk (S, RANGE)          projection ALL
    GSI by_customer  customer_id (S, HASH) + created_at (S, RANGE) projection ALL
    TTL attribute    expires_at (N, unix seconds): only event items carry it

Report items also hold: identifier, subscription_item_id, meter_id, meter_event_name,
period_start, period_end, value (decimal text), timestamp, status, failure_class,
last_error, attempts, lease_expires_at, stripe_request_id, finalizes_at, sent_at,
duplicate, livemode, updated_at, send_started_at (when the first attempt that may have
reached Stripe began; removed when Stripe's answer proved it was not counted).

The invoice guard adds (times are unix seconds; `*_at` by the worker's clock, `hold_*`
and `scheduled_finalization_at` by the invoice's clock — its test clock, if any):
- report: confirmation_status (pending | confirmed | missing), confirmation_checks,
  confirmation_checked_at, confirmed_at, confirmation_missing_at, confirmation_observed
  (Stripe's summary for the report's window, decimal text), confirmation_expected (what
  the ledger says that window should hold); reconciliation_status (reconciled | mismatch),
  mismatch_reason (stripe_differs | usage_changed | no_value_recorded), invoiced_quantity
  (the finalized line), expected_quantity (the ledger's reports under the meter's formula),
  source_quantity (the usage source at finalization), reconciled_at (decimal text
  quantities); for Stripe's
  asynchronous rejections: status = failed, failure_class = rejected, stripe_error_code,
  stripe_error_event_id, last_error.
- invoice: guard_mode, hold_status (holding | held | released | released_at_limit |
  not_held), hold_reason, held_at, hold_deadline, scheduled_finalization_at, released_at,
  release_action (auto_advance | finalize | none); reconciliation_status (reconciled |
  mismatch | not_reported), reconciled_lines, mismatched_lines, reconciled_at.
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


REJECTED = "rejected"  # failure_class of a report Stripe refused asynchronously
# failure_class of a report that may have reached Stripe more than Stripe's identifier
# memory ago: neither sending again nor giving up is safe without a person's check.
OUTCOME_UNKNOWN = "outcome_unknown"
# Failures the worker never sends again: only a later revision can carry their usage.
CLOSED_FAILURES = frozenset({REJECTED, OUTCOME_UNKNOWN})
CREATED_EVENTS = "created_events"  # invoice item: invoice.created event ids processed

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
    send_started_at: int | None = None


@dataclass(frozen=True)
class EventMemory:
    """A processed Stripe event to remember (until TTL) so a redelivery is recognised."""

    event_id: str
    event_type: str
    memory_seconds: int

    def item(self, now: int) -> dict[str, Any]:
        return {
            PARTITION_KEY: f"{EVENT}#{self.event_id}",
            SORT_KEY: EVENT,
            "event_type": self.event_type,
            "processed_at": iso(now),
            TTL_ATTRIBUTE: now + self.memory_seconds,
        }


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
        """Take the right to send `report`; None when it is sent, skipped, or closed (failed
        in a way only a new revision can fix: rejected by Stripe, or outcome unknown).

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
            ":rejected": REJECTED,
            ":unknown": OUTCOME_UNKNOWN,
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
                        " AND (#status <> :pending OR lease_expires_at < :now)"
                        # Stripe rejected this identifier asynchronously (sending it again
                        # would only be refused as a duplicate), or it may count it a second
                        # time (outcome unknown): a fix needs a new revision.
                        " AND (attribute_not_exists(failure_class)"
                        " OR (failure_class <> :rejected AND failure_class <> :unknown)))"
                    ),
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=_encode(values),
                    ReturnValues="ALL_NEW",
                ),
                conditional=True,
            )
        except _ConditionFailed:
            current = self.report(report.identifier) or {}
            closed = current.get("failure_class") in CLOSED_FAILURES
            if current.get("status") in DONE_STATUSES or closed:
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
            send_started_at=(
                int(item["send_started_at"]) if item.get("send_started_at") is not None else None
            ),
        )

    def claim_new(
        self, report: PlannedReport, value: Decimal, timestamp: int, now: int, lease_seconds: int
    ) -> Claim | None:
        """Claim a report no attempt has touched yet, with the value about to be sent, in one
        write (claim + record_value of the general path). None when the report already
        exists: the caller then takes `claim`, which decides reuse and leases."""
        item = {
            **report_key(report.identifier),
            "status": ReportStatus.PENDING.value,
            "lease_expires_at": now + lease_seconds,
            "attempts": 1,
            "identifier": report.identifier,
            INVOICE_ID: report.invoice_id,
            CUSTOMER_ID: report.customer_id,
            "subscription_item_id": report.subscription_item_id,
            "meter_id": report.meter.id,
            "meter_event_name": report.meter.event_name,
            "period_start": report.period.start,
            "period_end": report.period.end,
            "finalizes_at": report.finalizes_at,
            "livemode": report.livemode,
            CREATED_AT: iso(now),
            "updated_at": iso(now),
            "value": str(value),
            "timestamp": timestamp,
            "send_started_at": now,
        }
        try:
            self._dynamo(
                lambda: self._client.put_item(
                    TableName=self._table,
                    Item=_encode(item),
                    ConditionExpression="attribute_not_exists(pk)",
                ),
                conditional=True,
            )
        except _ConditionFailed:
            return None
        return Claim(
            identifier=report.identifier,
            attempt=1,
            value=value,
            timestamp=timestamp,
            send_started_at=now,
        )

    def record_value(self, claim: Claim, value: Decimal, timestamp: int, now: int) -> None:
        """Write down what is about to be sent, and when sending began, before sending it."""
        self._update_claimed(
            claim,
            "SET #value = :value, #timestamp = :timestamp, updated_at = :updated,"
            " send_started_at = if_not_exists(send_started_at, :now)",
            {":value": str(value), ":timestamp": timestamp, ":updated": iso(now), ":now": now},
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
        """Record why this attempt failed; the lease ends so a retry can claim at once.

        A permanent failure is Stripe's (or our own) refusal before anything was counted,
        so the next attempt starts afresh: its value is read again, and its send is new.
        """
        removed = ", send_started_at" if failure_class == "permanent" else ""
        self._update_claimed(
            claim,
            "SET #status = :failed, failure_class = :class, last_error = :reason,"
            f" updated_at = :updated REMOVE lease_expires_at{removed}",
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
        created_event: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Set the invoice's reporting outcome; guard attributes on the item stay.

        `created_event` is the invoice.created event whose processing this outcome ends:
        remembered on the item, a redelivery of it is recognised by `created_event_seen`.
        `fields`: more attributes to set in the same write (the guard's).
        """
        update = self._invoice_update(
            invoice_id,
            customer_id,
            {**(fields or {}), "status": status, "reason": reason, "report_count": report_count},
            now,
        )
        if created_event is not None:
            update["UpdateExpression"] += " ADD #events :event"
            update["ExpressionAttributeNames"]["#events"] = CREATED_EVENTS
            update["ExpressionAttributeValues"][":event"] = {"SS": [created_event]}
        self._dynamo(lambda: self._client.update_item(TableName=self._table, **update))

    def update_invoice(
        self, invoice_id: str, customer_id: str, fields: dict[str, Any], now: int
    ) -> None:
        """SET the given attributes (None removes one) on the invoice's item, creating it."""
        update = self._invoice_update(invoice_id, customer_id, fields, now)
        self._dynamo(lambda: self._client.update_item(TableName=self._table, **update))

    @staticmethod
    def _invoice_update(
        invoice_id: str, customer_id: str, fields: dict[str, Any], now: int
    ) -> dict[str, Any]:
        names = {"#created": CREATED_AT, "#invoice": INVOICE_ID, "#customer": CUSTOMER_ID}
        values: dict[str, Any] = {
            ":created": iso(now),
            ":invoice": invoice_id,
            ":customer": customer_id,
        }
        sets = [
            "#created = if_not_exists(#created, :created)",
            "#invoice = :invoice",
            "#customer = :customer",
            "updated_at = :created",
        ]
        removes = []
        for index, (name, value) in enumerate(sorted(fields.items())):
            names[f"#f{index}"] = name
            if value is None:
                removes.append(f"#f{index}")
            else:
                values[f":f{index}"] = value
                sets.append(f"#f{index} = :f{index}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return {
            "Key": _encode({PARTITION_KEY: f"{INVOICE}#{invoice_id}", SORT_KEY: INVOICE}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _encode(values),
        }

    def begin_hold(
        self,
        invoice_id: str,
        customer_id: str,
        *,
        hold_deadline: int,
        scheduled_finalization_at: int | None,
        now: int,
    ) -> bool:
        """Record that meterbridge holds this draft, before asking Stripe to.

        True when the hold is (already) ours. The record comes first so that a retry, which
        finds `auto_advance=false` on the invoice, knows meterbridge set it and will release
        it; a draft someone else set to manual is never ours to finalize.
        """
        values = {
            ":holding": "holding",
            ":held": "held",
            ":invoice": invoice_id,
            ":customer": customer_id,
            ":created": iso(now),
            ":now": now,
            ":deadline": hold_deadline,
            ":scheduled": scheduled_finalization_at,
        }
        scheduled = (
            ", scheduled_finalization_at = :scheduled"
            if scheduled_finalization_at is not None
            else ""
        )
        try:
            self._dynamo(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_encode({PARTITION_KEY: f"{INVOICE}#{invoice_id}", SORT_KEY: INVOICE}),
                    UpdateExpression=(
                        "SET hold_status = :holding, held_at = if_not_exists(held_at, :now),"
                        " hold_deadline = :deadline, invoice_id = :invoice,"
                        " customer_id = :customer, created_at = if_not_exists(created_at,"
                        " :created), updated_at = :created" + scheduled
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(hold_status) OR hold_status IN (:holding, :held)"
                    ),
                    ExpressionAttributeValues=_encode(
                        {k: v for k, v in values.items() if v is not None}
                    ),
                ),
                conditional=True,
            )
        except _ConditionFailed:
            return False
        return True

    def invoice_reports(self, invoice_id: str) -> list[dict[str, Any]]:
        return [item for item in self.invoice_items(invoice_id) if item.get(SORT_KEY) == REPORT]

    def customer_reports(self, customer_id: str, since: int) -> list[dict[str, Any]]:
        """The customer's reports claimed at or after `since` (the by_customer index)."""
        return [
            item
            for item in self._query(
                BY_CUSTOMER_INDEX, CUSTOMER_ID, customer_id, sort_at_least=(CREATED_AT, iso(since))
            )
            if item.get(SORT_KEY) == REPORT
        ]

    # --- guard: confirmation, reconciliation, Stripe's asynchronous rejections ------------

    def record_confirmation(
        self,
        identifier: str,
        *,
        status: str,
        observed: Decimal,
        expected: Decimal,
        now: int,
    ) -> str | None:
        """Write one confirmation check's verdict; answers the status it replaces."""
        extra = ""
        if status == "confirmed":
            extra = ", confirmed_at = if_not_exists(confirmed_at, :now)"
        elif status == "missing":
            extra = ", confirmation_missing_at = if_not_exists(confirmation_missing_at, :now)"
        try:
            answer = self._dynamo(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_encode(report_key(identifier)),
                    UpdateExpression=(
                        "SET confirmation_status = :status, confirmation_observed = :observed,"
                        " confirmation_expected = :expected, confirmation_checked_at = :now,"
                        " confirmation_checks = if_not_exists(confirmation_checks, :zero) + :one"
                        + extra
                    ),
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues=_encode(
                        {
                            ":status": status,
                            ":observed": str(observed),
                            ":expected": str(expected),
                            ":now": now,
                            ":zero": 0,
                            ":one": 1,
                        }
                    ),
                    ReturnValues="UPDATED_OLD",
                ),
                conditional=True,
            )
        except _ConditionFailed:
            return None
        previous = _decode(answer.get("Attributes") or {})
        return previous.get("confirmation_status")

    def record_reconciliation(
        self,
        identifier: str,
        *,
        status: str,
        invoiced: Decimal,
        expected: Decimal,
        source: Decimal | None,
        reason: str | None,
        now: int,
    ) -> None:
        values = {
            ":status": status,
            ":invoiced": str(invoiced),
            ":expected": str(expected),
            ":source": None if source is None else str(source),
            ":reason": reason,
            ":now": now,
        }
        sets = [
            "reconciliation_status = :status",
            "invoiced_quantity = :invoiced",
            "expected_quantity = :expected",
            "reconciled_at = :now",
        ]
        removes = []
        for attribute, placeholder in (
            ("source_quantity", ":source"),
            ("mismatch_reason", ":reason"),
        ):
            if values[placeholder] is None:
                removes.append(attribute)
            else:
                sets.append(f"{attribute} = {placeholder}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        self._dynamo(
            lambda: self._client.update_item(
                TableName=self._table,
                Key=_encode(report_key(identifier)),
                UpdateExpression=expression,
                ExpressionAttributeValues=_encode(
                    {k: v for k, v in values.items() if v is not None}
                ),
            )
        )

    def mark_rejected(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool:
        """Stripe refused a sent report asynchronously (a meter error report): it is failed,
        whatever its status said. False when the identifier is not a ledger report."""
        try:
            self._dynamo(
                lambda: self._client.update_item(
                    TableName=self._table,
                    Key=_encode(report_key(identifier)),
                    UpdateExpression=(
                        "SET #status = :failed, failure_class = :class, stripe_error_code = :code,"
                        " stripe_error_event_id = :event, last_error = :message,"
                        " updated_at = :updated REMOVE lease_expires_at"
                    ),
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=_encode(
                        {
                            ":failed": ReportStatus.FAILED.value,
                            ":class": REJECTED,
                            ":code": code,
                            ":event": event_id,
                            ":message": message[:1000],
                            ":updated": iso(now),
                        }
                    ),
                ),
                conditional=True,
            )
        except _ConditionFailed:
            return False
        return True

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

    @staticmethod
    def created_event_seen(invoice_item: dict[str, Any] | None, event_id: str) -> bool:
        """Whether `record_invoice` remembered this invoice.created event on the item."""
        return event_id in ((invoice_item or {}).get(CREATED_EVENTS) or ())

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
        item = EventMemory(event_id, event_type, memory_seconds).item(now)
        self._dynamo(lambda: self._client.put_item(TableName=self._table, Item=_encode(item)))

    # --- plumbing -----------------------------------------------------------------------

    def _query(
        self, index: str, key: str, value: str, sort_at_least: tuple[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        condition = "#key = :value"
        names = {"#key": key}
        values = {":value": {"S": value}}
        if sort_at_least is not None:
            condition += " AND #sort >= :sort"
            names["#sort"] = sort_at_least[0]
            values[":sort"] = {"S": sort_at_least[1]}
        start: dict[str, Any] | None = None
        while True:
            extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = self._dynamo(
                lambda extra=extra: self._client.query(
                    TableName=self._table,
                    IndexName=index,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
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
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(f"DynamoDB {code} on ledger {self._table}") from error
            raise PermanentError(f"DynamoDB {code} on ledger {self._table}: {error}") from error
        except BotoCoreError as error:
            raise TransientError(
                f"DynamoDB unreachable for ledger {self._table}: {error}"
            ) from error


class _ConditionFailed(Exception):
    """Internal: a conditional write's condition did not hold."""


def create_ledger_table(
    client: "DynamoDBClient", table_name: str, *, time_to_live: bool = True
) -> None:
    """The table as template.yaml declares it; for the local stack, tests and benchmarks
    (`time_to_live=False` for a stand-in without the TTL API; nothing here reads it)."""
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
    if time_to_live:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
