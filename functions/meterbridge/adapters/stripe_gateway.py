"""StripeGateway: the only code that talks to Stripe; hides the SDK behind plain dicts.

How each call is made (timeouts, 429 back-off, failure classes) is StripeCalls'
(adapters/stripe_calls.py); v2 meter events go through MeterEventStream
(adapters/meter_event_stream.py). The worker never sees an SDK type.
"""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from meterbridge.adapters.meter_event_stream import MeterEventStream, StreamRequestHook
from meterbridge.adapters.stripe_calls import IdempotencyKeyReused, StripeCalls, StripeDuplicate

LINES_PAGE_SIZE = 100
SUBSCRIPTIONS_PAGE_SIZE = 100  # Stripe's largest page


@dataclass(frozen=True)
class MeterEventReceipt:
    """What Stripe answered to a meter event: its request id, for the ledger and support."""

    request_id: str | None
    duplicate: bool = False


@dataclass(frozen=True)
class Page:
    """One page of a Stripe list: its objects as plain dicts, and whether more follow."""

    data: list[dict[str, Any]]
    has_more: bool


class StripeGateway:
    """Stripe calls meterbridge makes, with caches for objects that do not change (meters)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 10.0,
        max_network_retries: int = 2,
        rate_limit_retries: int = 3,
        rate_limit_backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 16,
        meter_event_api: str = "v1",
        meter_event_rate: float = 100.0,
        stream_linger_seconds: float = 0.05,
        on_stream_request: StreamRequestHook | None = None,
    ):
        self._calls = StripeCalls(
            api_key,
            api_base=api_base,
            timeout_seconds=timeout_seconds,
            max_network_retries=max_network_retries,
            rate_limit_retries=rate_limit_retries,
            rate_limit_backoff_seconds=rate_limit_backoff_seconds,
            sleep=sleep,
            pool_size=pool_size,
            meter_event_rate=meter_event_rate,
        )
        self._client = self._calls.client
        self._call = self._calls.call
        # One pace for every thread of the process (module docstring of rate_limiter).
        self.meter_event_limiter = self._calls.meter_event_limiter
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        self._stream = (
            MeterEventStream(
                self._calls, linger_seconds=stream_linger_seconds, on_request=on_stream_request
            )
            if meter_event_api == "v2"
            else None
        )

    # --- reads -------------------------------------------------------------------------

    def event(self, event_id: str) -> dict[str, Any]:
        return self._call(lambda: self._client.v1.events.retrieve(event_id)).to_dict()

    def invoice_lines(
        self, invoice_id: str, starting_after: str | None
    ) -> Iterator[dict[str, Any]]:
        """Every line after `starting_after`, following `has_more` page by page."""
        cursor = starting_after
        while True:
            params: dict[str, Any] = {"limit": LINES_PAGE_SIZE}
            if cursor:
                params["starting_after"] = cursor
            page = self._call(
                lambda p=params: self._client.v1.invoices.line_items.list(invoice_id, p)  # type: ignore[misc]
            )
            lines = [line.to_dict() for line in page.data]
            yield from lines
            if not page.has_more or not lines:
                return
            cursor = str(lines[-1]["id"])

    def customer(self, customer_id: str) -> dict[str, Any]:
        return self._call(lambda: self._client.v1.customers.retrieve(customer_id)).to_dict()

    def subscriptions(
        self,
        *,
        starting_after: str | None = None,
        test_clock: str | None = None,
        limit: int = SUBSCRIPTIONS_PAGE_SIZE,
        expand_customers: bool = False,
    ) -> Page:
        """A page of the subscriptions not canceled, items and prices included (S-LIST-1);
        customers expanded for their metadata (S-LIST-2); test-clock ones only with
        `test_clock` (docs/stripe.md#S-LIST-3)."""
        params: dict[str, Any] = {"limit": limit}
        if expand_customers:
            params["expand"] = ["data.customer"]
        optional = {"starting_after": starting_after, "test_clock": test_clock}
        params.update({name: value for name, value in optional.items() if value})
        page = self._call(lambda: self._client.v1.subscriptions.list(params))  # type: ignore[arg-type]
        return Page([s.to_dict() for s in page.data], bool(page.has_more))

    def price(self, price_id: str) -> dict[str, Any]:
        """Prices' `recurring.meter` never changes, so one fetch per process is enough."""
        return self._cached(
            "price", price_id, lambda: self._client.v1.prices.retrieve(price_id).to_dict()
        )

    def meter(self, meter_id: str) -> dict[str, Any]:
        """A meter's event name and payload keys are fixed at creation: cached per process."""
        return self._cached(
            "meter", meter_id, lambda: self._client.v1.billing.meters.retrieve(meter_id).to_dict()
        )

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._call(lambda: self._client.v1.invoices.retrieve(invoice_id)).to_dict()

    def test_clock_time(self, clock_id: str) -> int:
        """A test clock's frozen time: 'now' for the invoices of its customers."""
        clock = self._call(lambda: self._client.v1.test_helpers.test_clocks.retrieve(clock_id))
        return int(clock.frozen_time)

    def meter_usage(self, meter_id: str, customer_id: str, start: int, end: int) -> Decimal:
        """The meter's aggregated value for one customer over [start, end) (whole minutes)."""
        params: Any = {"customer": customer_id, "start_time": start, "end_time": end}
        page = self._call(
            lambda: self._client.v1.billing.meters.event_summaries.list(meter_id, params)
        )
        return sum((Decimal(str(summary.aggregated_value)) for summary in page.data), Decimal(0))

    def thin_event(self, notification: str | None, event_id: str) -> dict[str, Any]:
        """The full v2 event behind a thin notification (its signature was checked by the
        webhook, so the SDK's without-verification parser is the right door), or, when only
        the envelope travelled, the event fetched by id."""
        if notification is not None:
            parsed = self._client.parse_event_notification_without_verification(notification)
            fetched: Any = self._call(parsed.fetch_event)
        else:
            fetched = self._call(lambda: self._client.v2.core.events.retrieve(event_id))
        return dict(fetched.to_dict())

    # --- writes ------------------------------------------------------------------------

    # Hold, resume and finalize are safe to repeat, so they carry the SDK's own key (one per
    # call, reused by its retries): a fixed key would replay a saved 5xx to every later try
    # for at least 24 h (docs/stripe.md#S-IDEM-1).

    def hold_invoice(self, invoice_id: str) -> dict[str, Any]:
        """auto_advance=false: Stripe will not finalize the draft until told."""
        params: Any = {"auto_advance": False}
        return self._call(lambda: self._client.v1.invoices.update(invoice_id, params)).to_dict()

    def resume_invoice(self, invoice_id: str) -> dict[str, Any]:
        """auto_advance=true again: Stripe schedules finalization itself (docs/guard.md)."""
        params: Any = {"auto_advance": True}
        return self._call(lambda: self._client.v1.invoices.update(invoice_id, params)).to_dict()

    def finalize_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Finalize a held draft with auto_advance=true: an invoice finalized while
        auto_advance is false stays that way, and Stripe then never collects it — no payment
        attempt, no dunning, no e-mail (docs/stripe.md#S-FIN-1)."""
        params: Any = {"auto_advance": True}
        return self._call(
            lambda: self._client.v1.invoices.finalize_invoice(invoice_id, params)
        ).to_dict()

    def create_meter_event(
        self,
        *,
        event_name: str,
        payload: dict[str, str],
        identifier: str,
        timestamp: int,
        attempt: int = 1,
    ) -> MeterEventReceipt:
        """Send one meter event under the idempotency key `<identifier>:a<attempt>`.

        The SDK's own retries reuse the key; the next attempt (a later receive of the
        message) gets a new one, because Stripe saves a 5xx under its key and replays it to
        every retry for at least 24 h (docs/stripe.md#S-IDEM-1). Whether the event was
        already counted is the identifier's duplicate check's to say ("already exists"
        means delivered). Meter error reports name the key: `identifier_of_request_key`
        maps it back to the report.

        With METER_EVENT_API=v2 the event joins the process's stream batch and this call
        returns once the request carrying it (≤ 100 events) was accepted."""
        if self._stream is not None:
            self._stream.send(
                {
                    "event_name": event_name,
                    "payload": payload,
                    "identifier": identifier,
                    "timestamp": datetime.fromtimestamp(timestamp, UTC)
                    .isoformat()
                    .replace("+00:00", "Z"),
                }
            )
            return MeterEventReceipt(request_id=None)
        params: Any = {
            "event_name": event_name,
            "payload": payload,
            "identifier": identifier,
            "timestamp": timestamp,
        }
        try:
            try:
                key = request_key(identifier, attempt)
                created = self._call(
                    lambda: self._client.v1.billing.meter_events.create(
                        params, {"idempotency_key": key}
                    ),
                    limited=True,
                )
            except IdempotencyKeyReused:
                # An earlier request used this key with other parameters (e.g. usage recomputed
                # after a crash). Let Stripe's identifier check decide instead: it answers
                # "already exists" if the earlier one was accepted.
                created = self._call(
                    lambda: self._client.v1.billing.meter_events.create(params), limited=True
                )
        except StripeDuplicate as duplicate:
            return MeterEventReceipt(request_id=duplicate.request_id, duplicate=True)
        response = created.last_response
        return MeterEventReceipt(request_id=response.request_id if response else None)

    # --- plumbing ------------------------------------------------------------------------

    def _cached(self, kind: str, key: str, fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._cache_lock:
            hit = self._cache.get((kind, key))
        if hit is not None:
            return hit
        value = self._call(fetch)
        with self._cache_lock:
            self._cache[(kind, key)] = value
        return value


ATTEMPT_SEPARATOR = ":a"


def request_key(identifier: str, attempt: int) -> str:
    """The idempotency key of one attempt to send a report (≤ 255 characters)."""
    return f"{identifier}{ATTEMPT_SEPARATOR}{attempt}"


def identifier_of_request_key(key: str) -> str:
    """The report identifier behind a meter event request's idempotency key."""
    identifier, separator, attempt = key.rpartition(ATTEMPT_SEPARATOR)
    return identifier if separator and attempt.isdigit() else key
