"""The small interfaces the worker's steps depend on; the adapters satisfy them, and so do
the in-memory fakes of the unit tests (tests/support/fakes.py)."""

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

from meterbridge.adapters.stripe_gateway import MeterEventReceipt, Page
from meterbridge.domain.records import (
    Claim,
    ConfirmationStatus,
    FailureClass,
    InvoiceChanges,
    InvoiceRecord,
    Reconciliation,
    ReportRecord,
    Watermark,
)
from meterbridge.domain.reports import PlannedReport
from meterbridge.messages import ConfirmRequest


class Stripe(Protocol):
    """What the worker asks of Stripe (adapters/stripe_gateway.py); objects as plain dicts."""

    def event(self, event_id: str) -> dict[str, Any]: ...
    def invoice(self, invoice_id: str) -> dict[str, Any]: ...
    def invoice_lines(
        self, invoice_id: str, starting_after: str | None
    ) -> Iterator[dict[str, Any]]: ...
    def customer(self, customer_id: str) -> dict[str, Any]: ...
    def subscriptions(
        self,
        *,
        starting_after: str | None = None,
        test_clock: str | None = None,
        limit: int = 100,
        expand_customers: bool = False,
    ) -> Page: ...
    def price(self, price_id: str) -> dict[str, Any]: ...
    def meter(self, meter_id: str) -> dict[str, Any]: ...
    def test_clock_time(self, clock_id: str) -> int: ...
    def meter_usage(self, meter_id: str, customer_id: str, start: int, end: int) -> Decimal: ...
    def thin_event(self, notification: str | None, event_id: str) -> dict[str, Any]: ...
    def create_meter_event(
        self,
        *,
        event_name: str,
        payload: dict[str, str],
        identifier: str,
        timestamp: int,
        attempt: int = 1,
    ) -> MeterEventReceipt: ...
    def hold_invoice(self, invoice_id: str) -> dict[str, Any]: ...
    def resume_invoice(self, invoice_id: str) -> dict[str, Any]: ...
    def finalize_invoice(self, invoice_id: str) -> dict[str, Any]: ...


class ReportLedger(Protocol):
    """Claims and the moves of one report: pending → sent | late | skipped | failed."""

    def claim(
        self, report: PlannedReport, now: int, lease_seconds: int
    ) -> Claim | ReportRecord: ...
    def claim_new(
        self, report: PlannedReport, value: Decimal, timestamp: int, now: int, lease_seconds: int
    ) -> Claim | None: ...
    def record_value(self, claim: Claim, value: Decimal, timestamp: int, now: int) -> None: ...
    def note_also_billed(self, identifier: str, invoice_id: str, now: int) -> None: ...
    def mark_sent(
        self, claim: Claim, *, late: bool, request_id: str | None, duplicate: bool, now: int
    ) -> None: ...
    def mark_failed(
        self, claim: Claim, *, failure_class: FailureClass, reason: str, now: int
    ) -> None: ...
    def mark_skipped(self, claim: Claim, *, reason: str, now: int) -> None: ...


class InvoiceLedger(Protocol):
    """An invoice's own record."""

    def invoice(self, invoice_id: str) -> InvoiceRecord | None: ...
    def update_invoice(
        self,
        invoice_id: str,
        customer_id: str,
        changes: InvoiceChanges,
        now: int,
        *,
        created_event: str | None = None,
    ) -> None: ...


class ReportingLedger(InvoiceLedger, Protocol):
    """invoice.created: the invoice's record, and its reports' records in bulk on a retry."""

    def reports(self, identifiers: list[str]) -> dict[str, ReportRecord]: ...


class HoldLedger(InvoiceLedger, Protocol):
    def begin_hold(
        self,
        invoice_id: str,
        customer_id: str,
        *,
        hold_deadline: int,
        scheduled_finalization_at: int | None,
        now: int,
    ) -> bool: ...


class GuardLedger(InvoiceLedger, Protocol):
    """What confirmation and reconciliation read and record."""

    def reports(self, identifiers: list[str]) -> dict[str, ReportRecord]: ...
    def invoice_reports(self, invoice_id: str) -> list[ReportRecord]: ...
    def customer_reports(self, customer_id: str, since: int) -> list[ReportRecord]: ...
    def record_confirmation(
        self,
        identifier: str,
        *,
        status: ConfirmationStatus,
        observed: Decimal,
        expected: Decimal,
        now: int,
    ) -> ConfirmationStatus | None: ...
    def record_reconciliation(self, identifier: str, verdict: Reconciliation) -> None: ...


class RejectionLedger(Protocol):
    """Stripe's asynchronous verdicts on reports it accepted."""

    def mark_rejected(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool: ...
    def mark_suspect(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool: ...
    def stream_request(self, key: str) -> list[str]: ...


class WatermarkLedger(Protocol):
    """Continuous reporting's watermarks: every change a conditional write."""

    def watermark(self, customer_id: str, meter_id: str) -> Watermark | None: ...
    def save_watermark(self, mark: Watermark, expected: Watermark | None) -> bool: ...


class WindowLedger(WatermarkLedger, Protocol):
    """What reporting a window, and truing up a period, read."""

    def report(self, identifier: str) -> ReportRecord | None: ...
    def customer_reports(self, customer_id: str, since: int) -> list[ReportRecord]: ...


class EventLedger(Protocol):
    """Processed Stripe events other than invoice.created (those live on the invoice)."""

    def event_seen(self, event_id: str, now: int) -> bool: ...
    def remember_event(
        self, event_id: str, event_type: str, now: int, memory_seconds: int
    ) -> None: ...


class Ledger(
    ReportLedger,
    ReportingLedger,
    HoldLedger,
    GuardLedger,
    RejectionLedger,
    EventLedger,
    WindowLedger,
    Protocol,
):
    """Everything the worker's steps need together (the composition root's view)."""

    def record_stream_request(self, key: str, identifiers: list[str], now: int) -> None: ...


class ConfirmQueue(Protocol):
    """Delayed confirmation checks (adapters/queue.py)."""

    def schedule(self, request: ConfirmRequest, delay_seconds: int) -> None: ...


class MessageQueue(Protocol):
    """Sends a message as it is (adapters/queue.py): a continuation to the event queue, or a
    failed message to its dead-letter queue."""

    def send(self, body: str, attributes: dict[str, str], delay_seconds: int = 0) -> str: ...


class Pace(Protocol):
    """Waits for the next slot of a fixed pace (adapters/rate_limiter.py)."""

    def acquire(self) -> None: ...


class SweepQueue(Protocol):
    """A sweep's fan-out (adapters/queue.py): many messages at once."""

    def send_batch(self, messages: list[tuple[str, dict[str, str]]]) -> None: ...


class MessageVisibility(Protocol):
    """Pushes a failed message's next delivery into the future (adapters/queue.py)."""

    def delay(self, receipt_handle: str, seconds: int) -> None: ...
