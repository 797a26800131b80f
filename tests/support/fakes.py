"""In-memory stand-ins behind the worker's ports (functions/meterbridge/worker/ports.py), for
unit tests of the business rules without moto or the emulator.

FakeLedger keeps the DynamoDB ledger's semantics (conditional claims, leases, closed
failures); tests/integration/test_ledger_contract.py runs the same checks on both, so the
fake cannot drift from the real thing. FakeStripe keeps only what the worker reads and
writes, as plain dicts: it is a test double, not an emulator (that is the Stripe billing
emulator's job, in the integration suite).
"""

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from meterbridge.adapters.ledger import ReportInFlight, iso
from meterbridge.adapters.stripe_gateway import MeterEventReceipt, Page
from meterbridge.domain.guard import SentUsage, expected_aggregate, in_window
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import (
    Claim,
    Confirmation,
    ConfirmationStatus,
    FailureClass,
    HoldStatus,
    InvoiceChanges,
    InvoiceRecord,
    Reconciliation,
    ReportRecord,
    ReportStatus,
    Watermark,
)
from meterbridge.domain.reports import PlannedReport
from meterbridge.errors import PermanentError
from meterbridge.messages import ConfirmRequest

# --- ledger ------------------------------------------------------------------------------


class FakeLedger:
    """The ledger in a dict, with the conditional writes of adapters/ledger.py."""

    def __init__(self) -> None:
        self.items: dict[str, ReportRecord] = {}
        self.invoices: dict[str, InvoiceRecord] = {}
        self.events: dict[str, int] = {}  # event id → expires at
        self.streams: dict[str, list[str]] = {}  # v2 stream request key → identifiers
        # Reports the by_invoice and by_customer indexes do not show yet: DynamoDB's global
        # secondary indexes are eventually consistent (reads by key are not).
        self.unindexed: set[str] = set()
        self.watermarks: dict[tuple[str, str], Watermark] = {}
        self._lock = threading.RLock()

    # reports
    def report(self, identifier: str) -> ReportRecord | None:
        return self.items.get(identifier)

    def reports(self, identifiers: list[str]) -> dict[str, ReportRecord]:
        return {i: self.items[i] for i in identifiers if i in self.items}

    def claim(self, report: PlannedReport, now: int, lease_seconds: int) -> Claim | ReportRecord:
        with self._lock:
            current = self.items.get(report.identifier)
            if current is not None:
                if current.status.done or current.closed:
                    return current
                if (
                    current.status is ReportStatus.PENDING
                    and (current.lease_expires_at or 0) >= now
                ):
                    raise ReportInFlight(f"report {report.identifier} is being sent")
            base = current or _planned(report, now)
            record = dataclasses.replace(
                _with_plan(base, report),
                status=ReportStatus.PENDING,
                lease_expires_at=now + lease_seconds,
                attempts=base.attempts + 1,
                updated_at=iso(now),
            )
            self.items[report.identifier] = record
            reusable = (
                record.value is not None and record.failure_class is not FailureClass.PERMANENT
            )
            return Claim(
                report.identifier,
                record.attempts,
                record.value if reusable else None,
                record.timestamp if reusable else None,
                record.send_started_at,
            )

    def claim_new(
        self, report: PlannedReport, value: Decimal, timestamp: int, now: int, lease_seconds: int
    ) -> Claim | None:
        with self._lock:
            if report.identifier in self.items:
                return None
            self.items[report.identifier] = dataclasses.replace(
                _with_plan(_planned(report, now), report),
                status=ReportStatus.PENDING,
                lease_expires_at=now + lease_seconds,
                attempts=1,
                value=value,
                timestamp=timestamp,
                send_started_at=now,
            )
            return Claim(report.identifier, 1, value, timestamp, now)

    def note_also_billed(self, identifier: str, invoice_id: str, now: int) -> None:
        with self._lock:
            current = self.items.get(identifier)
            if current is not None:
                self.items[identifier] = dataclasses.replace(
                    current,
                    also_billed_on=current.also_billed_on | {invoice_id},
                    updated_at=iso(now),
                )

    def record_value(self, claim: Claim, value: Decimal, timestamp: int, now: int) -> None:
        def change(r: ReportRecord) -> ReportRecord:
            started = r.send_started_at if r.send_started_at is not None else now
            return dataclasses.replace(
                r, value=value, timestamp=timestamp, updated_at=iso(now), send_started_at=started
            )

        self._update_claimed(claim, change)

    def mark_sent(
        self, claim: Claim, *, late: bool, request_id: str | None, duplicate: bool, now: int
    ) -> None:
        self._update_claimed(
            claim,
            lambda r: dataclasses.replace(
                r,
                status=ReportStatus.LATE if late else ReportStatus.SENT,
                sent_at=now,
                stripe_request_id=request_id or "",
                duplicate=duplicate,
                updated_at=iso(now),
                lease_expires_at=None,
                failure_class=None,
                last_error=None,
            ),
        )

    def mark_failed(
        self, claim: Claim, *, failure_class: FailureClass, reason: str, now: int
    ) -> None:
        def change(r: ReportRecord) -> ReportRecord:
            started = None if failure_class is FailureClass.PERMANENT else r.send_started_at
            return dataclasses.replace(
                r,
                status=ReportStatus.FAILED,
                failure_class=failure_class,
                last_error=reason[:1000],
                updated_at=iso(now),
                lease_expires_at=None,
                send_started_at=started,
            )

        self._update_claimed(claim, change)

    def mark_skipped(self, claim: Claim, *, reason: str, now: int) -> None:
        self._update_claimed(
            claim,
            lambda r: dataclasses.replace(
                r,
                status=ReportStatus.SKIPPED,
                last_error=reason,
                updated_at=iso(now),
                lease_expires_at=None,
            ),
        )

    def _update_claimed(self, claim: Claim, change: Callable[[ReportRecord], ReportRecord]) -> None:
        with self._lock:
            current = self.items.get(claim.identifier)
            if (
                current is None
                or current.attempts != claim.attempt
                or current.status is not ReportStatus.PENDING
            ):
                raise ReportInFlight(f"report {claim.identifier}: attempt {claim.attempt} lost")
            self.items[claim.identifier] = change(current)

    def record_confirmation(
        self,
        identifier: str,
        *,
        status: ConfirmationStatus,
        observed: Decimal,
        expected: Decimal,
        now: int,
    ) -> ConfirmationStatus | None:
        with self._lock:
            current = self.items.get(identifier)
            if current is None:
                return None
            before = current.confirmation or Confirmation(status=ConfirmationStatus.PENDING)
            confirmed_at = before.confirmed_at
            missing_at = before.missing_at
            if status is ConfirmationStatus.CONFIRMED and confirmed_at is None:
                confirmed_at = now
            if status is ConfirmationStatus.MISSING and missing_at is None:
                missing_at = now
            self.items[identifier] = dataclasses.replace(
                current,
                confirmation=Confirmation(
                    status=status,
                    observed=observed,
                    expected=expected,
                    checks=before.checks + 1,
                    checked_at=now,
                    confirmed_at=confirmed_at,
                    missing_at=missing_at,
                ),
            )
            return current.confirmation_status

    def record_reconciliation(self, identifier: str, verdict: Reconciliation) -> None:
        with self._lock:
            current = self.items[identifier]
            self.items[identifier] = dataclasses.replace(current, reconciliation=verdict)

    def mark_rejected(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool:
        with self._lock:
            current = self.items.get(identifier)
            if current is None:
                return False
            self.items[identifier] = dataclasses.replace(
                current,
                status=ReportStatus.FAILED,
                failure_class=FailureClass.REJECTED,
                stripe_error_code=code,
                stripe_error_event_id=event_id,
                last_error=message[:1000],
                updated_at=iso(now),
                lease_expires_at=None,
            )
            return True

    def mark_suspect(
        self, identifier: str, *, code: str, message: str, event_id: str, now: int
    ) -> bool:
        with self._lock:
            current = self.items.get(identifier)
            if current is None or current.confirmed:
                return False
            # Only the status: the last check's numbers stay, as on DynamoDB.
            before = current.confirmation or Confirmation(status=ConfirmationStatus.SUSPECT)
            self.items[identifier] = dataclasses.replace(
                current,
                confirmation=dataclasses.replace(before, status=ConfirmationStatus.SUSPECT),
                stripe_error_code=code,
                stripe_error_event_id=event_id,
                last_error=message[:1000],
                updated_at=iso(now),
            )
            return True

    def record_stream_request(self, key: str, identifiers: list[str], now: int) -> None:
        self.streams[key] = list(identifiers)

    def stream_request(self, key: str) -> list[str]:
        return list(self.streams.get(key, []))

    # invoices
    def invoice(self, invoice_id: str) -> InvoiceRecord | None:
        return self.invoices.get(invoice_id)

    def update_invoice(
        self,
        invoice_id: str,
        customer_id: str,
        changes: InvoiceChanges,
        now: int,
        *,
        created_event: str | None = None,
    ) -> None:
        with self._lock:
            current = self.invoices.get(invoice_id) or InvoiceRecord(
                invoice_id, customer_id, created_at=iso(now)
            )
            assigned: dict[str, Any] = dict(changes.assigned())
            if changes.clear_reason and changes.reason is None:
                assigned["reason"] = None
            if changes.clear_confirmation_schedule:
                assigned["confirmation_scheduled_at"] = None
            events = current.created_events | ({created_event} if created_event else set())
            self.invoices[invoice_id] = dataclasses.replace(
                current,
                customer_id=customer_id,
                updated_at=iso(now),
                created_events=frozenset(events),
                **assigned,
            )

    def begin_hold(
        self,
        invoice_id: str,
        customer_id: str,
        *,
        hold_deadline: int,
        scheduled_finalization_at: int | None,
        now: int,
    ) -> bool:
        with self._lock:
            current = self.invoices.get(invoice_id) or InvoiceRecord(
                invoice_id, customer_id, created_at=iso(now)
            )
            if current.hold_status is not None and not current.hold_status.held:
                return False
            self.invoices[invoice_id] = dataclasses.replace(
                current,
                customer_id=customer_id,
                hold_status=HoldStatus.HOLDING,
                held_at=current.held_at if current.held_at is not None else now,
                hold_deadline=hold_deadline,
                scheduled_finalization_at=scheduled_finalization_at
                if scheduled_finalization_at is not None
                else current.scheduled_finalization_at,
                updated_at=iso(now),
            )
            return True

    def invoice_reports(self, invoice_id: str) -> list[ReportRecord]:
        return [r for r in self._indexed() if r.invoice_id == invoice_id]

    def customer_reports(self, customer_id: str, since: int) -> list[ReportRecord]:
        """Oldest claim first, as the by_customer index sorts them."""
        found = [
            r
            for r in self._indexed()
            if r.customer_id == customer_id and r.created_at >= iso(since)
        ]
        return sorted(found, key=lambda r: r.created_at)

    def _indexed(self) -> list[ReportRecord]:
        return [r for r in self.items.values() if r.identifier not in self.unindexed]

    # continuous reporting
    def watermark(self, customer_id: str, meter_id: str) -> Watermark | None:
        return self.watermarks.get((customer_id, meter_id))

    def save_watermark(self, mark: Watermark, expected: Watermark | None) -> bool:
        with self._lock:
            key = (mark.customer_id, mark.meter_id)
            current = self.watermarks.get(key)
            if (current is None) != (expected is None):
                return False
            if current is not None and expected is not None and current.version != expected.version:
                return False
            self.watermarks[key] = mark
            return True

    # events
    def event_seen(self, event_id: str, now: int) -> bool:
        return self.events.get(event_id, 0) > now

    def remember_event(self, event_id: str, event_type: str, now: int, memory_seconds: int) -> None:
        self.events[event_id] = now + memory_seconds


def _planned(report: PlannedReport, now: int) -> ReportRecord:
    return ReportRecord(
        identifier=report.identifier,
        invoice_id=report.invoice_id,
        customer_id=report.customer_id,
        meter_id=report.meter.id,
        period=report.period,
        status=ReportStatus.PENDING,
        created_at=iso(now),
        updated_at=iso(now),
        sweep=report.sweep,
    )


def _with_plan(record: ReportRecord, report: PlannedReport) -> ReportRecord:
    return dataclasses.replace(
        record,
        invoice_id=report.invoice_id,
        customer_id=report.customer_id,
        subscription_items=report.subscription_items,
        line_ids=report.line_ids,
        meter_id=report.meter.id,
        meter_event_name=report.meter.event_name,
        period=report.period,
        finalizes_at=report.finalizes_at,
        livemode=report.livemode,
        sweep=report.sweep,
    )


# --- Stripe ------------------------------------------------------------------------------


@dataclasses.dataclass
class SentEvent:
    event_name: str
    customer: str
    value: Decimal
    identifier: str
    timestamp: int


class FakeStripe:
    """Invoices, prices, meters and meter events as dicts; `fail` makes the next calls of a
    method raise the given error, `watch` runs something when a method is called (before
    any failure: what changed in Stripe meanwhile). Every meter event is counted at once
    (no aggregation lag) unless `counting` is switched off."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.meters: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.clocks: dict[str, int] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.subscription_objects: list[dict[str, Any]] = []  # oldest first
        self.sent: list[SentEvent] = []
        self._identifiers: set[str] = set()
        self.latency = 0.0  # seconds each meter event takes (time.sleep)
        self.counting = True
        self.calls: list[str] = []
        self.attempts: list[int] = []  # create_meter_event's `attempt`, call by call
        self._failures: dict[str, list[Exception]] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._ids = itertools.count(1)

    def fail(self, method: str, *errors: Exception) -> None:
        self._failures.setdefault(method, []).extend(errors)

    def watch(self, method: str, action: Callable[[], None]) -> None:
        self._watchers.setdefault(method, []).append(action)

    def _call(self, method: str) -> None:
        self.calls.append(method)
        for action in self._watchers.get(method, []):
            action()
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    # building
    def add_meter(self, event_name: str, formula: str = "sum", **extra: Any) -> dict[str, Any]:
        meter = {
            "id": f"mtr_{next(self._ids)}",
            "object": "billing.meter",
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            "customer_mapping": {"event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
            "status": "active",
            **extra,
        }
        self.meters[meter["id"]] = meter
        return meter

    def add_price(self, meter: dict[str, Any] | None) -> dict[str, Any]:
        recurring: dict[str, Any] = {"interval": "month", "usage_type": "licensed"}
        if meter is not None:
            recurring = {"interval": "month", "usage_type": "metered", "meter": meter["id"]}
        price_id = f"price_{next(self._ids)}"
        price = {"id": price_id, "object": "price", "recurring": recurring}
        self.prices[price_id] = price
        return price

    # reads
    def event(self, event_id: str) -> dict[str, Any]:
        self._call("event")
        return dict(self.events[event_id])

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        self._call("invoice")
        return self.invoices[invoice_id]

    def invoice_lines(
        self, invoice_id: str, starting_after: str | None
    ) -> Iterator[dict[str, Any]]:
        self._call("invoice_lines")
        lines = self.invoices[invoice_id]["lines"]["data"]
        ids = [line["id"] for line in lines]
        start = ids.index(starting_after) + 1 if starting_after in ids else 0
        yield from lines[start:]

    def customer(self, customer_id: str) -> dict[str, Any]:
        self._call("customer")
        if customer_id not in self.customers:
            raise PermanentError(f"no customer {customer_id}")
        return self.customers[customer_id]

    def subscriptions(
        self,
        *,
        starting_after: str | None = None,
        test_clock: str | None = None,
        limit: int = 100,
        expand_customers: bool = False,
    ) -> Page:
        """Newest first, not canceled; test-clock subscriptions only with `test_clock`
        (docs/stripe.md#S-LIST-1, #S-LIST-3)."""
        self._call("subscriptions")
        listed = [
            s
            for s in reversed(self.subscription_objects)
            if s["status"] != "canceled" and s.get("test_clock") == test_clock
        ]
        ids = [s["id"] for s in listed]
        start = ids.index(starting_after) + 1 if starting_after in ids else 0
        page = [dict(s) for s in listed[start : start + limit]]
        if expand_customers:
            for subscription in page:
                subscription["customer"] = self.customers[subscription["customer"]]
        return Page(page, start + limit < len(listed))

    def subscribe(
        self,
        customer: str,
        prices: list[dict[str, Any]],
        *,
        period: ServicePeriod,
        test_clock: str | None = None,
        status: str = "active",
    ) -> dict[str, Any]:
        """A subscription whose items are in `period` (items carry their period, basil)."""
        subscription = {
            "id": f"sub_{next(self._ids)}",
            "object": "subscription",
            "customer": customer,
            "status": status,
            "livemode": False,
            "test_clock": test_clock,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{next(self._ids)}",
                        "object": "subscription_item",
                        "price": price,
                        "current_period_start": period.start,
                        "current_period_end": period.end,
                    }
                    for price in prices
                ],
            },
        }
        self.subscription_objects.append(subscription)
        return subscription

    def price(self, price_id: str) -> dict[str, Any]:
        self._call("price")
        return self.prices[price_id]

    def meter(self, meter_id: str) -> dict[str, Any]:
        self._call("meter")
        return self.meters[meter_id]

    def test_clock_time(self, clock_id: str) -> int:
        self._call("test_clock_time")
        return self.clocks[clock_id]

    def meter_usage(self, meter_id: str, customer_id: str, start: int, end: int) -> Decimal:
        self._call("meter_usage")
        meter = self.meters[meter_id]
        counted = [
            SentUsage(e.timestamp, e.value, index)
            for index, e in enumerate(self.sent)
            if self.counting
            and e.event_name == meter["event_name"]
            and e.customer == customer_id
            and in_window(e.timestamp, (start, end))
        ]
        return expected_aggregate(meter["default_aggregation"]["formula"], counted)

    def thin_event(self, notification: str | None, event_id: str) -> dict[str, Any]:
        self._call("thin_event")
        return self.events[event_id]

    # writes
    def create_meter_event(
        self,
        *,
        event_name: str,
        payload: dict[str, str],
        identifier: str,
        timestamp: int,
        attempt: int = 1,
    ) -> MeterEventReceipt:
        self.attempts.append(attempt)
        self._call("create_meter_event")
        if self.latency:
            time.sleep(self.latency)
        if identifier in self._identifiers:
            return MeterEventReceipt(request_id=f"req_{next(self._ids)}", duplicate=True)
        customer = payload.get("stripe_customer_id", "")
        self._identifiers.add(identifier)
        self.sent.append(
            SentEvent(event_name, customer, Decimal(payload["value"]), identifier, timestamp)
        )
        return MeterEventReceipt(request_id=f"req_{next(self._ids)}")

    def hold_invoice(self, invoice_id: str) -> dict[str, Any]:
        self._call("hold_invoice")
        invoice = self.invoices[invoice_id]
        invoice.update(auto_advance=False, automatically_finalizes_at=None)
        return invoice

    def resume_invoice(self, invoice_id: str) -> dict[str, Any]:
        self._call("resume_invoice")
        invoice = self.invoices[invoice_id]
        invoice["auto_advance"] = True
        invoice["automatically_finalizes_at"] = invoice.get("_schedule")
        return invoice

    def finalize_invoice(self, invoice_id: str) -> dict[str, Any]:
        """The gateway finalizes with auto_advance=true (so that Stripe collects it)."""
        self._call("finalize_invoice")
        invoice = self.invoices[invoice_id]
        invoice.update(status="open", auto_advance=True, automatically_finalizes_at=None)
        return invoice

    # invoices
    def draft(
        self,
        customer: str,
        prices: list[dict[str, Any]],
        *,
        period: ServicePeriod,
        created: int,
        finalizes_at: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A renewal draft with one line per price (new API shape)."""
        invoice_id = f"in_{next(self._ids)}"
        lines = [
            {
                "id": f"il_{next(self._ids)}",
                "object": "line_item",
                "period": {"start": period.start, "end": period.end},
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {
                        "subscription": "sub_1",
                        "subscription_item": f"si_{next(self._ids)}",
                    },
                },
                "pricing": {"type": "price_details", "price_details": {"price": price["id"]}},
            }
            for price in prices
        ]
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer,
            "status": "draft",
            "billing_reason": "subscription_cycle",
            "created": created,
            "automatically_finalizes_at": finalizes_at,
            "_schedule": finalizes_at,
            "auto_advance": True,
            "livemode": False,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_1"},
            },
            "lines": {"object": "list", "data": lines, "has_more": False},
            **fields,
        }
        self.invoices[invoice_id] = invoice
        return invoice


class FakeQueue:
    """Confirmation checks, retry delays and messages sent, remembered in order."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[ConfirmRequest, int]] = []
        self.delays: list[tuple[str, int]] = []
        self.sent: list[tuple[str, dict[str, str], int]] = []

    def send(self, body: str, attributes: dict[str, str], delay_seconds: int = 0) -> str:
        self.sent.append((body, dict(attributes), delay_seconds))
        return f"msg-{len(self.sent)}"

    def send_batch(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        for body, attributes in messages:
            self.send(body, attributes)

    def schedule(self, request: ConfirmRequest, delay_seconds: int) -> None:
        self.scheduled.append((request, delay_seconds))

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.delays.append((receipt_handle, seconds))


class FakeUsage:
    """A usage source answering from a dict keyed by (customer, meter event name)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], object] = {}
        # Usage that knows when it happened: (customer, meter) → [(at, value)], summed over
        # the query's [start, end); takes precedence over `values`.
        self.records: dict[tuple[str, str], list[tuple[int, Decimal]]] = {}
        self.queries: list[Any] = []
        self._failures: list[Exception] = []

    def fail(self, *errors: Exception) -> None:
        self._failures.extend(errors)

    def record(self, customer: str, meter: str, at: int, value: str | int) -> None:
        self.records.setdefault((customer, meter), []).append((at, Decimal(value)))

    def usage(self, query: Any) -> object:
        self.queries.append(query)
        if self._failures:
            raise self._failures.pop(0)
        records = self.records.get((query.customer, query.meter))
        if records is not None:
            return str(sum((v for at, v in records if query.start <= at < query.end), Decimal(0)))
        return self.values.get((query.customer, query.meter), "0")
