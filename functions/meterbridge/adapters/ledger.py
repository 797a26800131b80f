"""The ledger on DynamoDB: the record of every report, and the guard that makes sending happen
once. The only code that knows the table's attributes; it reads and writes the typed records
of domain/records.py.

Stripe forgets meter event identifiers after ~24 h; this table does not. A report moves
`pending → sent | late` (or `failed`, `skipped`) only through conditional writes, so two
workers can never both hold the right to send, and a report already `sent` is never sent
again — not even when a week-old message is replayed from the dead-letter queue.

Table schema (template.yaml's LedgerTable and infra's create_ledger_table must match):

    key            pk (S, HASH) + sk (S, RANGE)
    report         pk = "report#<identifier>",  sk = "report"
    invoice        pk = "invoice#<invoice id>", sk = "invoice"
    Stripe event   pk = "event#<event id>",     sk = "event"     (expires via TTL)
    watermark      pk = "watermark#<customer id>#<meter id>", sk = "watermark"
                   (continuous reporting: how far a customer's meter is reported; it
                   carries no invoice_id / customer_id / created_at, so no index copies it)
    (invoice.created events are remembered on their invoice's item instead, in the string
    set `created_events`: the worker reads that item anyway, so one round trip less)
    GSI by_invoice   invoice_id (S, HASH) + sk (S, RANGE)          projection ALL
    GSI by_customer  customer_id (S, HASH) + created_at (S, RANGE) projection ALL
    TTL attribute    expires_at (N, unix seconds): only event items carry it

The attributes of each item are the fields of ReportRecord and InvoiceRecord (docs/guard.md,
"Ledger fields", lists them); a report's confirmation and reconciliation are stored flat
(confirmation_status, confirmation_observed, …, reconciliation_status, invoiced_quantity, …).
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from meterbridge.adapters.dynamodb_table import ConditionFailed, DynamoDbTable, Update, decode
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import (
    Claim,
    Confirmation,
    ConfirmationStatus,
    FailureClass,
    HoldStatus,
    InvoiceChanges,
    InvoiceRecord,
    InvoiceStatus,
    InvoiceView,
    Reconciliation,
    ReconciliationStatus,
    ReleaseAction,
    ReportRecord,
    ReportStatus,
    Watermark,
)
from meterbridge.domain.reports import PlannedReport
from meterbridge.errors import TransientError

PARTITION_KEY = "pk"
SORT_KEY = "sk"
BY_INVOICE_INDEX = "by_invoice"
BY_CUSTOMER_INDEX = "by_customer"
INVOICE_ID = "invoice_id"
CUSTOMER_ID = "customer_id"
CREATED_AT = "created_at"
TTL_ATTRIBUTE = "expires_at"
KEY_ATTRIBUTES = (PARTITION_KEY, SORT_KEY, INVOICE_ID, CUSTOMER_ID, CREATED_AT)

REPORT = "report"
INVOICE = "invoice"
EVENT = "event"
STREAM = "stream"
WATERMARK = "watermark"
STREAM_MEMORY_SECONDS = 7 * 86_400  # Stripe reports validation errors within hours


class ReportInFlight(TransientError):
    """Another worker holds this report's lease; retry after it ends or expires."""


def iso(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _report_key(identifier: str) -> dict[str, str]:
    return {PARTITION_KEY: f"{REPORT}#{identifier}", SORT_KEY: REPORT}


def _invoice_key(invoice_id: str) -> dict[str, str]:
    return {PARTITION_KEY: f"{INVOICE}#{invoice_id}", SORT_KEY: INVOICE}


def _event_key(event_id: str) -> dict[str, str]:
    return {PARTITION_KEY: f"{EVENT}#{event_id}", SORT_KEY: EVENT}


def _watermark_key(customer_id: str, meter_id: str) -> dict[str, str]:
    return {PARTITION_KEY: f"{WATERMARK}#{customer_id}#{meter_id}", SORT_KEY: WATERMARK}


class ReportItems(DynamoDbTable):
    """The report items: claims, sends, and what the invoice guard and Stripe say of them."""

    def report(self, identifier: str) -> ReportRecord | None:
        item = self._get(_report_key(identifier))
        return _report_record(item) if item else None

    def reports(self, identifiers: list[str]) -> dict[str, ReportRecord]:
        """The reports of these identifiers that exist, in batches (a retry of a large
        invoice learns what is done in a few requests instead of one read per report)."""
        items = self._get_many([_report_key(identifier) for identifier in identifiers])
        return {record.identifier: record for record in map(_report_record, items)}

    def claim(self, report: PlannedReport, now: int, lease_seconds: int) -> Claim | ReportRecord:
        """Take the right to send `report`; its record instead when it is sent, skipped, or
        closed (failed in a way only a new revision can fix: rejected by Stripe, or outcome
        unknown).

        Raises ReportInFlight while another worker's lease is live. A lease outlives a
        crashed worker only until `lease_seconds`; its retry then takes over.
        """
        update = Update().set("status", ReportStatus.PENDING.value)
        update.set("lease_expires_at", now + lease_seconds).increment("attempts")
        for attribute, value in _planned_attributes(report).items():
            if value is not None:
                update.set(attribute, value)
        update.set_if_missing(CREATED_AT, iso(now)).set("updated_at", iso(now))
        status, failure = update.name("status"), update.name("failure_class")
        done = " AND ".join(f"{status} <> {update.value(s.value)}" for s in ReportStatus if s.done)
        open_classes = " AND ".join(
            f"{failure} <> {update.value(c.value)}" for c in FailureClass if c.closed
        )
        pending = update.value(ReportStatus.PENDING.value)
        condition = (
            f"attribute_not_exists(pk) OR ({done}"
            f" AND ({status} <> {pending} OR lease_expires_at < {update.value(now)})"
            # Stripe rejected this identifier asynchronously (sending it again would only be
            # refused as a duplicate), or it may count it a second time (outcome unknown):
            # a fix needs a new revision.
            f" AND (attribute_not_exists({failure}) OR ({open_classes})))"
        )
        try:
            answer = self._write(_report_key(report.identifier), update, condition, "ALL_NEW")
        except ConditionFailed:
            current = self.report(report.identifier)
            if current is None:  # deleted between the two reads: the next attempt claims it
                raise ReportInFlight(f"report {report.identifier} changed while claiming") from None
            if current.status.done or current.closed:
                return current
            raise ReportInFlight(
                f"report {report.identifier} is being sent by another worker (lease until"
                f" {current.lease_expires_at})"
            ) from None
        record = _report_record(decode(answer["Attributes"]))
        reusable = record.value is not None and record.failure_class is not FailureClass.PERMANENT
        return Claim(
            identifier=report.identifier,
            attempt=record.attempts,
            value=record.value if reusable else None,
            timestamp=record.timestamp if reusable else None,
            send_started_at=record.send_started_at,
        )

    def claim_new(
        self, report: PlannedReport, value: Decimal, timestamp: int, now: int, lease_seconds: int
    ) -> Claim | None:
        """Claim a report no attempt has touched yet, with the value about to be sent, in one
        write (claim + record_value of the general path). None when the report already
        exists: the caller then takes `claim`, which decides reuse and leases."""
        item = {
            **_report_key(report.identifier),
            **_planned_attributes(report),
            "status": ReportStatus.PENDING.value,
            "lease_expires_at": now + lease_seconds,
            "attempts": 1,
            CREATED_AT: iso(now),
            "updated_at": iso(now),
            "value": str(value),
            "timestamp": timestamp,
            "send_started_at": now,
        }
        try:
            self._put(item, condition="attribute_not_exists(pk)")
        except ConditionFailed:
            return None
        return Claim(report.identifier, 1, value, timestamp, send_started_at=now)

    def note_also_billed(self, identifier: str, invoice_id: str, now: int) -> None:
        """Another invoice's lines bill this report's usage too (a shared meter)."""
        update = Update().add_to_set("also_billed_on", [invoice_id]).set("updated_at", iso(now))
        self._write_if(_report_key(identifier), update, "attribute_exists(pk)")

    def record_value(self, claim: Claim, value: Decimal, timestamp: int, now: int) -> None:
        """Write down what is about to be sent, and when sending began, before sending it."""
        update = Update().set("value", str(value)).set("timestamp", timestamp)
        update.set("updated_at", iso(now)).set_if_missing("send_started_at", now)
        self._update_claimed(claim, update)

    def mark_sent(
        self, claim: Claim, *, late: bool, request_id: str | None, duplicate: bool, now: int
    ) -> None:
        status = ReportStatus.LATE if late else ReportStatus.SENT
        update = Update().set("status", status.value).set("sent_at", now)
        update.set("stripe_request_id", request_id or "").set("duplicate", duplicate)
        update.set("updated_at", iso(now)).remove("lease_expires_at", "failure_class", "last_error")
        self._update_claimed(claim, update)

    def mark_failed(
        self, claim: Claim, *, failure_class: FailureClass, reason: str, now: int
    ) -> None:
        """Record why this attempt failed; the lease ends so a retry can claim at once.

        A permanent failure is Stripe's (or our own) refusal before anything was counted,
        so the next attempt starts afresh: its value is read again, and its send is new.
        """
        update = Update().set("status", ReportStatus.FAILED.value)
        update.set("failure_class", failure_class.value).set("last_error", reason[:1000])
        update.set("updated_at", iso(now)).remove("lease_expires_at")
        if failure_class is FailureClass.PERMANENT:
            update.remove("send_started_at")
        self._update_claimed(claim, update)

    def mark_skipped(self, claim: Claim, *, reason: str, now: int) -> None:
        update = Update().set("status", ReportStatus.SKIPPED.value).set("last_error", reason)
        update.set("updated_at", iso(now)).remove("lease_expires_at")
        self._update_claimed(claim, update)

    def _update_claimed(self, claim: Claim, update: Update) -> None:
        """Only the attempt that holds the claim may move the report on."""
        condition = (
            f"attempts = {update.value(claim.attempt)}"
            f" AND {update.name('status')} = {update.value(ReportStatus.PENDING.value)}"
        )
        try:
            self._write(_report_key(claim.identifier), update, condition)
        except ConditionFailed:
            raise ReportInFlight(
                f"report {claim.identifier}: attempt {claim.attempt} lost its lease to a newer one"
            ) from None

    def record_confirmation(
        self,
        identifier: str,
        *,
        status: ConfirmationStatus,
        observed: Decimal,
        expected: Decimal,
        now: int,
    ) -> ConfirmationStatus | None:
        """Write one confirmation check's verdict; answers the status it replaces."""
        update = Update().set("confirmation_status", status.value)
        update.set("confirmation_observed", str(observed))
        update.set("confirmation_expected", str(expected))
        update.set("confirmation_checked_at", now).increment("confirmation_checks")
        if status is ConfirmationStatus.CONFIRMED:
            update.set_if_missing("confirmed_at", now)
        elif status is ConfirmationStatus.MISSING:
            update.set_if_missing("confirmation_missing_at", now)
        try:
            answer = self._write(_report_key(identifier), update, "attribute_exists(pk)", "ALL_OLD")
        except ConditionFailed:
            return None
        previous = decode(answer.get("Attributes") or {}).get("confirmation_status")
        return ConfirmationStatus(previous) if previous else None

    def record_reconciliation(self, identifier: str, verdict: Reconciliation) -> None:
        update = Update().set_all(
            {
                "reconciliation_status": verdict.status.value,
                "invoiced_quantity": _text(verdict.invoiced),
                "expected_quantity": _text(verdict.expected),
                "source_quantity": _text(verdict.source),
                "mismatch_reason": verdict.reason,
                "reconciled_at": verdict.reconciled_at,
            }
        )
        self._write(_report_key(identifier), update)

    def mark_suspect(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool:
        """Stripe rejected some event of the v2 stream request that carried this report,
        without saying which: unconfirmed until a confirmation check proves it counted."""
        update = Update().set("confirmation_status", ConfirmationStatus.SUSPECT.value)
        update.set("stripe_error_code", code).set("stripe_error_event_id", event_id)
        update.set("last_error", message[:1000]).set("updated_at", iso(now))
        status = update.name("confirmation_status")
        condition = (
            f"attribute_exists(pk) AND (attribute_not_exists({status})"
            f" OR {status} <> {update.value(ConfirmationStatus.CONFIRMED.value)})"
        )
        return self._write_if(_report_key(identifier), update, condition)

    def record_stream_request(self, key: str, identifiers: list[str], now: int) -> None:
        """Which reports one v2 stream request carried (its idempotency key → identifiers)."""
        item = {
            PARTITION_KEY: f"{STREAM}#{key}",
            SORT_KEY: STREAM,
            "identifiers": identifiers,
            "sent_at": now,
            TTL_ATTRIBUTE: now + STREAM_MEMORY_SECONDS,
        }
        self._put(item)

    def stream_request(self, key: str) -> list[str]:
        item = self._get({PARTITION_KEY: f"{STREAM}#{key}", SORT_KEY: STREAM})
        return [str(identifier) for identifier in (item or {}).get("identifiers") or []]

    def mark_rejected(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool:
        """Stripe refused a sent report asynchronously (a meter error report): it is failed,
        whatever its status said. False when the identifier is not a ledger report."""
        update = Update().set("status", ReportStatus.FAILED.value)
        update.set("failure_class", FailureClass.REJECTED.value).set("stripe_error_code", code)
        update.set("stripe_error_event_id", event_id).set("last_error", message[:1000])
        update.set("updated_at", iso(now)).remove("lease_expires_at")
        return self._write_if(_report_key(identifier), update, "attribute_exists(pk)")


class DynamoDbLedger(ReportItems):
    """The ledger: reports (ReportItems), invoices and processed Stripe events."""

    def invoice(self, invoice_id: str) -> InvoiceRecord | None:
        item = self._get(_invoice_key(invoice_id))
        return _invoice_record(item) if item else None

    def update_invoice(
        self,
        invoice_id: str,
        customer_id: str,
        changes: InvoiceChanges,
        now: int,
        *,
        created_event: str | None = None,
    ) -> None:
        """Set `changes` on the invoice's record, creating it; other attributes stay.

        `created_event`: the invoice.created event whose processing this write ends,
        remembered on the record so that a redelivery of it is recognised.
        """
        update = Update().set_if_missing(CREATED_AT, iso(now)).set("updated_at", iso(now))
        update.set(INVOICE_ID, invoice_id).set(CUSTOMER_ID, customer_id)
        update.set_all({name: _stored(value) for name, value in changes.assigned().items()})
        if changes.clear_reason and changes.reason is None:
            update.remove("reason")
        if changes.clear_confirmation_schedule:
            update.remove("confirmation_scheduled_at")
        if created_event is not None:
            update.add_to_set("created_events", [created_event])
        self._write(_invoice_key(invoice_id), update)

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
        update = Update().set("hold_status", HoldStatus.HOLDING.value)
        update.set_if_missing("held_at", now).set("hold_deadline", hold_deadline)
        update.set(INVOICE_ID, invoice_id).set(CUSTOMER_ID, customer_id)
        update.set_if_missing(CREATED_AT, iso(now)).set("updated_at", iso(now))
        if scheduled_finalization_at is not None:
            update.set("scheduled_finalization_at", scheduled_finalization_at)
        held = ", ".join(update.value(s.value) for s in HoldStatus if s.held)
        condition = (
            f"attribute_not_exists({update.name('hold_status')}) OR #hold_status IN ({held})"
        )
        return self._write_if(_invoice_key(invoice_id), update, condition)

    def invoice_reports(self, invoice_id: str) -> list[ReportRecord]:
        return self.invoice_view(invoice_id).reports

    def invoice_view(self, invoice_id: str) -> InvoiceView:
        """The invoice's record and every report of it (the by_invoice index)."""
        record, reports = self._records(self._query(BY_INVOICE_INDEX, INVOICE_ID, invoice_id))
        return InvoiceView(invoice_id, record[0] if record else None, reports)

    def customer_reports(self, customer_id: str, since: int) -> list[ReportRecord]:
        """The customer's reports claimed at or after `since` (the by_customer index)."""
        return self.customer_records(customer_id, iso(since))[1]

    def customer_records(
        self, customer_id: str, since: str | None = None
    ) -> tuple[list[InvoiceRecord], list[ReportRecord]]:
        """The customer's invoice records and reports, oldest first; `since` is ISO 8601
        text compared with their claim time (`created_at`)."""
        items = self._query(
            BY_CUSTOMER_INDEX,
            CUSTOMER_ID,
            customer_id,
            sort_at_least=(CREATED_AT, since) if since else None,
        )
        return self._records(items)

    @staticmethod
    def _records(
        items: Iterable[dict[str, Any]],
    ) -> tuple[list[InvoiceRecord], list[ReportRecord]]:
        invoices: list[InvoiceRecord] = []
        reports: list[ReportRecord] = []
        for item in items:
            if item.get(SORT_KEY) == REPORT:
                reports.append(_report_record(item))
            elif item.get(SORT_KEY) == INVOICE:
                invoices.append(_invoice_record(item))
        return invoices, reports

    # --- continuous reporting -----------------------------------------------------------

    def watermark(self, customer_id: str, meter_id: str) -> Watermark | None:
        item = self._get(_watermark_key(customer_id, meter_id))
        return _watermark_record(item) if item else None

    def save_watermark(self, mark: Watermark, expected: Watermark | None) -> bool:
        """Write `mark` if the stored watermark is still `expected` (None: none stored);
        False when another worker changed it first (the caller reads it again)."""
        item = {**_watermark_key(mark.customer_id, mark.meter_id), **_watermark_item(mark)}
        try:
            if expected is None:
                self._put(item, condition="attribute_not_exists(pk)")
            else:
                self._put(
                    item,
                    condition="#version = :version",
                    names={"#version": "version"},
                    values={":version": expected.version},
                )
        except ConditionFailed:
            return False
        return True

    # --- Stripe events ------------------------------------------------------------------

    def event_seen(self, event_id: str, now: int) -> bool:
        item = self._get(_event_key(event_id))
        # TTL deletion lags by up to days: an expired item no longer counts.
        return item is not None and int(item.get(TTL_ATTRIBUTE, now + 1)) > now

    def remember_event(self, event_id: str, event_type: str, now: int, memory_seconds: int) -> None:
        item = {
            **_event_key(event_id),
            "event_type": event_type,
            "processed_at": iso(now),
            TTL_ATTRIBUTE: now + memory_seconds,
        }
        self._put(item)


# --- records ⇄ items -------------------------------------------------------------------


def _planned_attributes(report: PlannedReport) -> dict[str, Any]:
    """A sweep's report has no invoice: no invoice_id at all (an index key cannot be empty),
    so the by_invoice index leaves it out."""
    return {
        "identifier": report.identifier,
        INVOICE_ID: report.invoice_id or None,
        "sweep": True if report.sweep else None,
        CUSTOMER_ID: report.customer_id,
        "subscription_items": list(report.subscription_items),
        "line_ids": list(report.line_ids),
        "meter_id": report.meter.id,
        "meter_event_name": report.meter.event_name,
        "period_start": report.period.start,
        "period_end": report.period.end,
        "finalizes_at": report.finalizes_at,
        "livemode": report.livemode,
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _stored(value: object) -> object:
    """Enum members are stored as their text, tuples as lists."""
    if isinstance(value, tuple):
        return list(value)
    return value.value if isinstance(value, Enum) else value


def _int(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return None if value is None or value == "" else int(value)


def _decimal(item: dict[str, Any], name: str) -> Decimal | None:
    value = item.get(name)
    return None if value is None or value == "" else Decimal(str(value))


def _report_record(item: dict[str, Any]) -> ReportRecord:
    confirmation = None
    if item.get("confirmation_status"):
        confirmation = Confirmation(
            status=ConfirmationStatus(item["confirmation_status"]),
            observed=_decimal(item, "confirmation_observed"),
            expected=_decimal(item, "confirmation_expected"),
            checks=int(item.get("confirmation_checks") or 0),
            checked_at=_int(item, "confirmation_checked_at"),
            confirmed_at=_int(item, "confirmed_at"),
            missing_at=_int(item, "confirmation_missing_at"),
        )
    reconciliation = None
    if item.get("reconciliation_status"):
        reconciliation = Reconciliation(
            status=ReconciliationStatus(item["reconciliation_status"]),
            invoiced=_decimal(item, "invoiced_quantity"),
            expected=_decimal(item, "expected_quantity"),
            source=_decimal(item, "source_quantity"),
            reason=item.get("mismatch_reason"),
            reconciled_at=_int(item, "reconciled_at"),
        )
    failure = item.get("failure_class")
    return ReportRecord(
        identifier=str(item.get("identifier") or item[PARTITION_KEY].split("#", 1)[1]),
        invoice_id=str(item.get(INVOICE_ID, "")),
        customer_id=str(item.get(CUSTOMER_ID, "")),
        meter_id=str(item.get("meter_id", "")),
        period=ServicePeriod(
            start=int(item.get("period_start") or 0), end=int(item.get("period_end") or 0)
        ),
        status=ReportStatus(item.get("status", ReportStatus.PENDING.value)),
        subscription_items=tuple(
            item.get("subscription_items")
            or ([item["subscription_item_id"]] if item.get("subscription_item_id") else [])
        ),
        line_ids=tuple(item.get("line_ids") or ()),
        also_billed_on=frozenset(item.get("also_billed_on") or ()),
        meter_event_name=item.get("meter_event_name"),
        value=_decimal(item, "value"),
        timestamp=_int(item, "timestamp"),
        failure_class=FailureClass(failure) if failure else None,
        last_error=item.get("last_error"),
        attempts=int(item.get("attempts") or 0),
        lease_expires_at=_int(item, "lease_expires_at"),
        finalizes_at=_int(item, "finalizes_at"),
        sent_at=_int(item, "sent_at"),
        send_started_at=_int(item, "send_started_at"),
        stripe_request_id=item.get("stripe_request_id"),
        duplicate=bool(item.get("duplicate")),
        livemode=bool(item.get("livemode")),
        created_at=str(item.get(CREATED_AT, "")),
        updated_at=str(item.get("updated_at", "")),
        confirmation=confirmation,
        reconciliation=reconciliation,
        stripe_error_code=item.get("stripe_error_code"),
        stripe_error_event_id=item.get("stripe_error_event_id"),
        sweep=bool(item.get("sweep")),
    )


def _watermark_item(mark: Watermark) -> dict[str, Any]:
    pending, period = mark.pending, mark.pending_period
    return {
        "watermark_customer": mark.customer_id,
        "meter_id": mark.meter_id,
        "position": mark.position,
        "pending_start": pending.start if pending else None,
        "pending_end": pending.end if pending else None,
        "pending_period_start": period.start if period else None,
        "pending_period_end": period.end if period else None,
        "period_start": mark.period_start,
        "period_reports": mark.period_reports,
        "period_total": str(mark.period_total),
        "version": mark.version,
        "updated_at": mark.updated_at,
    }


def _watermark_record(item: dict[str, Any]) -> Watermark:
    pending = period = None
    if item.get("pending_start") is not None:
        pending = ServicePeriod(start=int(item["pending_start"]), end=int(item["pending_end"]))
        period = ServicePeriod(
            start=int(item["pending_period_start"]), end=int(item["pending_period_end"])
        )
    return Watermark(
        customer_id=str(item.get("watermark_customer", "")),
        meter_id=str(item.get("meter_id", "")),
        position=int(item.get("position") or 0),
        pending=pending,
        pending_period=period,
        period_start=_int(item, "period_start"),
        period_reports=int(item.get("period_reports") or 0),
        period_total=_decimal(item, "period_total") or Decimal(0),
        version=int(item.get("version") or 0),
        updated_at=str(item.get("updated_at", "")),
    )


def _invoice_record(item: dict[str, Any]) -> InvoiceRecord:
    status, hold = item.get("status"), item.get("hold_status")
    action, reconciled = item.get("release_action"), item.get("reconciliation_status")
    return InvoiceRecord(
        invoice_id=str(item.get(INVOICE_ID) or item[PARTITION_KEY].split("#", 1)[1]),
        customer_id=str(item.get(CUSTOMER_ID, "")),
        status=InvoiceStatus(status) if status else None,
        reason=item.get("reason"),
        report_count=int(item.get("report_count") or 0),
        created_events=frozenset(item.get("created_events") or ()),
        guard_mode=item.get("guard_mode"),
        confirmation_scheduled_at=_int(item, "confirmation_scheduled_at"),
        hold_status=HoldStatus(hold) if hold else None,
        hold_reason=item.get("hold_reason"),
        held_at=_int(item, "held_at"),
        hold_deadline=_int(item, "hold_deadline"),
        scheduled_finalization_at=_int(item, "scheduled_finalization_at"),
        released_at=_int(item, "released_at"),
        release_action=ReleaseAction(action) if action else None,
        reconciliation_status=ReconciliationStatus(reconciled) if reconciled else None,
        reconciled_lines=int(item.get("reconciled_lines") or 0),
        mismatched_lines=int(item.get("mismatched_lines") or 0),
        reconciled_at=_int(item, "reconciled_at"),
        findings=tuple(item.get("findings") or ()),
        created_at=str(item.get(CREATED_AT, "")),
        updated_at=str(item.get("updated_at", "")),
    )
