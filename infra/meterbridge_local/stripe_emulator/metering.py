"""Meter events: validation, 24-hour identifiers, asynchronous aggregation, error reports."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .config import EmulatorConfig
from .errors import StripeApiError, invalid, missing, required
from .store import Obj, Store, customer_now, wall_now
from .webhooks import Events, rfc3339
from .wire import as_int

# Identifiers are unique "within a rolling period of at least 24 hours" (docs/stripe.md#S-ME-2).
IDENTIFIER_MEMORY_SECONDS = 24 * 3600
# Timestamps: the past 35 days, at most 5 minutes ahead (S-TS-1).
WINDOW_PAST_SECONDS = 35 * 86400
WINDOW_FUTURE_SECONDS = 300
MAX_SIGNIFICANT_DIGITS = 15  # S-ME-3


@dataclass
class MeterEventRecord:
    """One meter event as received, whatever became of it."""

    identifier: str
    event_name: str
    payload: dict[str, Any]
    timestamp: int
    received_at: float
    idempotency_key: str | None
    source: str
    request_id: str = ""
    status: str = "accepted"  # accepted | rejected | duplicate | canceled
    error_code: str | None = None
    error_message: str | None = None
    meter: str | None = None
    customer: str | None = None
    value: Decimal = Decimal(0)
    sequence: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "event_name": self.event_name,
            "payload": dict(self.payload),
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "idempotency_key": self.idempotency_key,
            "source": self.source,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "meter": self.meter,
            "customer": self.customer,
            "value": str(self.value),
        }


@dataclass
class _ErrorReport:
    meter: str | None
    by_code: dict[str, list[MeterEventRecord]] = field(default_factory=lambda: defaultdict(list))


def parse_value(raw: Any) -> Decimal:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ValueError("value must be a number string")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"invalid value {raw!r}") from None
    if not value.is_finite():
        raise ValueError(f"invalid value {raw!r}")
    return value


def _pre_aggregated(records: list[MeterEventRecord], window: str | None) -> list[MeterEventRecord]:
    """With `event_time_window` hour or day, only the most recently received event of each
    window counts: "A newer event sent within the same hourly or daily window overwrites the
    previous one" (docs/stripe.md#S-WINDOW-1). Windows are taken as UTC hours and days [?]."""
    if window not in ("hour", "day"):
        return records
    size = 3600 if window == "hour" else 86400
    newest: dict[int, MeterEventRecord] = {}
    for record in records:
        key = record.timestamp // size
        if key not in newest or record.sequence > newest[key].sequence:
            newest[key] = record
    return sorted(newest.values(), key=lambda r: r.sequence)


def significant_digits(value: Decimal) -> int:
    return len(value.normalize().as_tuple().digits)


class Metering:
    """Meter events by customer and meter; callers hold no locks (the store's lock guards)."""

    def __init__(self, store: Store, config: EmulatorConfig, events: Events) -> None:
        self.store = store
        self.config = config
        self.events = events
        self.meter_events: list[MeterEventRecord] = []
        self._by_identifier: dict[str, MeterEventRecord] = {}
        self._usage: dict[tuple[str, str], list[MeterEventRecord]] = defaultdict(list)
        self._sequence = 0

    def record_meter_event(
        self,
        *,
        event_name: str,
        payload: dict[str, Any],
        identifier: str | None,
        timestamp: int | None,
        idempotency_key: str | None,
        source: str,
        request_id: str = "",
        reject_duplicates: bool,
    ) -> MeterEventRecord:
        """Validate like Stripe: duplicates (S-ME-2), and for v1 too many digits (S-ME-3), at
        once; the rest later (optionally timestamps too, S-TS-2). See docs/stripe.md.

        Asynchronous failures are recorded as `rejected` and reported through a thin
        `v1.billing.meter.error_report_triggered` event, as Stripe does.
        """
        now = time.time()
        with self.store.lock:
            self._sequence += 1
            record = MeterEventRecord(
                identifier=identifier or self.store.new_id("mev", 20),
                event_name=event_name,
                payload=dict(payload),
                timestamp=timestamp if timestamp is not None else 0,
                received_at=now,
                idempotency_key=idempotency_key,
                source=source,
                request_id=request_id,
                sequence=self._sequence,
            )
            self.meter_events.append(record)
            if len(record.identifier) > 100:
                record.status = "rejected"
                raise invalid("identifier must be at most 100 characters", param="identifier")
            earlier = self._by_identifier.get(record.identifier)
            if earlier is not None and now - earlier.received_at < IDENTIFIER_MEMORY_SECONDS:
                record.status = "duplicate"
                if reject_duplicates:
                    raise StripeApiError(
                        400,
                        f"An event already exists with identifier {record.identifier}.",
                        param="identifier",
                        should_retry=False,
                    )
                return record
            _meter, customer, error = self._resolve(record)
            reference = (
                customer_now(self.store, customer)
                if self.config.timestamp_reference == "clock"
                else wall_now()
            )
            if timestamp is None:
                record.timestamp = reference
            if (
                error is not None
                and error[0] == "meter_event_value_too_many_digits"
                and (reject_duplicates)
            ):
                # The synchronous (v1) API answers 400; the v2 stream reports it later
                # (docs/stripe.md#S-ME-3).
                record.status = "rejected"
                record.error_code, record.error_message = error
                raise StripeApiError(
                    400, error[1], code=error[0], param="payload", before_execution=True
                )
            window_error = self._window_error(record.timestamp, reference)
            if window_error is not None and self.config.timestamp_validation == "sync":
                record.status = "rejected"
                record.error_code, record.error_message = window_error
                raise invalid(window_error[1], param="timestamp", code=window_error[0])
            error = error or window_error
            self._by_identifier[record.identifier] = record
            if error is not None:
                record.status = "rejected"
                record.error_code, record.error_message = error
            else:
                self._usage[(record.meter or "", record.customer or "")].append(record)
        return record

    def _resolve(
        self, record: MeterEventRecord
    ) -> tuple[Obj | None, Obj | None, tuple[str, str] | None]:
        meters = [
            m for m in self.store.all("billing.meter") if m.get("event_name") == record.event_name
        ]
        if not meters:
            return None, None, ("no_meter", f"No meter found for event_name {record.event_name}.")
        active = [m for m in meters if m.get("status") == "active"]
        meter = (active or meters)[0]
        record.meter = meter["id"]
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer_id = record.payload.get(customer_key)
        customer = self.store.find("customer", customer_id) if customer_id else None
        if customer is not None:
            record.customer = customer["id"]
        if not active:
            return meter, customer, ("archived_meter", f"Meter {meter['id']} is inactive.")
        if not customer_id:
            return (
                meter,
                None,
                (
                    "meter_event_no_customer_defined",
                    f"Payload has no '{customer_key}' to identify the customer.",
                ),
            )
        if customer is None or customer.get("deleted"):
            return (
                meter,
                None,
                (
                    "meter_event_customer_not_found",
                    f"No customer found with id '{customer_id}'.",
                ),
            )
        value_key = meter["value_settings"]["event_payload_key"]
        raw_value = record.payload.get(value_key)
        if raw_value is None and meter["default_aggregation"]["formula"] == "count":
            raw_value = "1"
        try:
            record.value = parse_value(raw_value)
        except ValueError as exc:
            return meter, customer, ("meter_event_invalid_value", f"'{value_key}': {exc}.")
        if significant_digits(record.value) > MAX_SIGNIFICANT_DIGITS:
            return (
                meter,
                customer,
                (
                    "meter_event_value_too_many_digits",
                    f"'{value_key}' has more than {MAX_SIGNIFICANT_DIGITS} significant digits.",
                ),
            )
        return meter, customer, None

    @staticmethod
    def _window_error(timestamp: int, reference: int) -> tuple[str, str] | None:
        if timestamp < reference - WINDOW_PAST_SECONDS:
            return (
                "timestamp_too_far_in_past",
                f"Timestamp {timestamp} is more than 35 days before {reference}.",
            )
        if timestamp > reference + WINDOW_FUTURE_SECONDS:
            return (
                "timestamp_in_future",
                f"Timestamp {timestamp} is more than 5 minutes after {reference}.",
            )
        return None

    def report_errors(self, records: list[MeterEventRecord]) -> None:
        """One thin error event per meter for the failures of one request, with samples
        (docs/stripe.md#S-ERR-1)."""
        reports: dict[str | None, _ErrorReport] = {}
        for record in records:
            if record.status == "rejected" and record.error_code:
                report = reports.setdefault(record.meter, _ErrorReport(record.meter))
                report.by_code[record.error_code].append(record)
        for meter_id, report in reports.items():
            now = time.time()
            total = sum(len(group) for group in report.by_code.values())
            error_types = [
                {
                    "code": code,
                    "error_count": len(group),
                    "sample_errors": [
                        {
                            "error_message": sample.error_message,
                            # The failing *request*, by its idempotency key: for the v2 stream
                            # one key covers up to 100 events (docs/stripe.md#S-ERR-2).
                            # Without a key Stripe's answer is unknown: the request id [?].
                            "request": {"identifier": sample.idempotency_key or sample.request_id},
                        }
                        for sample in group[:5]
                    ],
                }
                for code, group in report.by_code.items()
            ]
            data = {
                "developer_message_summary": f"{total} meter event(s) failed validation.",
                "reason": {"error_count": total, "error_types": error_types},
                "validation_start": rfc3339(now - 60),
                "validation_end": rfc3339(now),
            }
            if meter_id is None:
                self.events.thin("v1.billing.meter.no_meter_found", None, data)
            else:
                related = {
                    "id": meter_id,
                    "type": "billing.meter",
                    "url": f"/v1/billing/meters/{meter_id}",
                }
                self.events.thin("v1.billing.meter.error_report_triggered", related, data)

    def cancel_meter_event(self, event_name: str, identifier: str) -> Obj:
        """A cancel adjustment: within 24 hours of receipt (docs/stripe.md#S-ME-6)."""
        with self.store.lock:
            record = self._by_identifier.get(identifier)
            if record is None or record.event_name != event_name:
                raise invalid(
                    f"No meter event found with identifier {identifier}.",
                    param="cancel[identifier]",
                )
            if time.time() - record.received_at > IDENTIFIER_MEMORY_SECONDS:
                raise invalid(
                    "Meter events can only be canceled within 24 hours of being received.",
                    param="cancel[identifier]",
                )
            if record.status == "accepted":
                record.status = "canceled"
        return {
            "object": "billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "event_name": event_name,
            "livemode": False,
            "status": "complete",
            "type": "cancel",
        }

    def aggregate(self, meter: Obj, customer_id: str, start: int, end: int) -> Decimal:
        """The meter's formula over this customer's counted events with start <= timestamp < end.

        Per customer and meter, never per subscription item: a meter event names no item, so
        every invoice line priced on the meter bills this whole aggregate for its period
        (docs/stripe.md#S-AGG-1). An event counts only once `aggregation_lag_seconds` of wall
        time have passed since it was received: Stripe aggregates asynchronously (S-AGG-3),
        the root of the naive integration's losses.
        """
        horizon = time.time() - self.config.aggregation_lag_seconds
        with self.store.lock:
            counted = [
                r
                for r in self._usage.get((meter["id"], customer_id), [])
                if r.status == "accepted" and r.received_at <= horizon
            ]
        counted = _pre_aggregated(counted, meter.get("event_time_window"))
        counted = [r for r in counted if start <= r.timestamp < end]
        formula = meter["default_aggregation"]["formula"]
        if formula == "count":  # counts events, ignores their value (S-AGG-2)
            return Decimal(len(counted))
        if formula == "last":  # the value of the last event in the range (S-AGG-2)
            if not counted:
                return Decimal(0)
            return max(counted, key=lambda r: (r.timestamp, r.sequence)).value
        return sum((r.value for r in counted), Decimal(0))

    def aggregation_settled(self) -> bool:
        horizon = time.time() - self.config.aggregation_lag_seconds
        with self.store.lock:
            return all(
                r.received_at <= horizon
                for r in self.meter_events[-10000:]
                if r.status == "accepted"
            )

    def summaries(self, meter_id: str, params: Obj) -> Obj:
        """Minute-aligned [start, end), optionally by UTC hour or day (docs/stripe.md#S-SUM-1)."""
        meter = self.store.get("billing.meter", meter_id, "billing.meter")
        customer = params.get("customer")
        if not customer:
            raise required("customer")
        start, end = as_int(params, "start_time"), as_int(params, "end_time")
        if start is None:
            raise required("start_time")
        if end is None:
            raise required("end_time")
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise invalid(f"{name} must be aligned to a minute boundary.", param=name)
        if end <= start:
            raise invalid("end_time must be after start_time.", param="end_time")
        windows = [(start, end)]
        grouping = params.get("value_grouping_window")
        if grouping in ("hour", "day"):
            size = 3600 if grouping == "hour" else 86400
            if start % size or end % size:
                raise invalid(
                    f"start_time and end_time must be aligned to {grouping} boundaries.",
                    param="value_grouping_window",
                )
            windows = [(t, t + size) for t in range(start, end, size)]
        data = [
            {
                "id": self.store.new_id("mtrusg", 20),
                "object": "billing.meter_event_summary",
                "aggregated_value": self.aggregate(meter, customer, s, e),
                "end_time": e,
                "livemode": False,
                "meter": meter_id,
                "start_time": s,
            }
            for s, e in windows
        ]
        if not self.store.find("customer", customer):
            raise missing("customer", customer, param="customer")
        return {
            "object": "list",
            "data": data[::-1],
            "has_more": False,
            "url": f"/v1/billing/meters/{meter_id}/event_summaries",
        }
