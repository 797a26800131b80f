"""StripeGateway: the only code that talks to Stripe; hides the SDK behind plain dicts.

Timeouts, retries and error classes are decided here so the worker never sees an SDK type:
- the SDK's default 80 s HTTP timeout is far beyond a Lambda's budget, so it is explicit;
- the SDK retries connection errors, 409 and 5xx (`max_network_retries`) but never 429,
  so 429 gets its own jittered exponential back-off before becoming a TransientError;
- a 400 saying an event with this identifier already exists means Stripe holds the report
  (docs/stripe.md#S-ME-2): AlreadyDelivered, never a failure.
"""

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import stripe

from meterbridge.adapters.rate_limiter import AdaptiveRateLimiter
from meterbridge.adapters.stripe_http import stripe_http_client
from meterbridge.errors import AlreadyDelivered, PermanentError, TransientError

T = TypeVar("T")

LINES_PAGE_SIZE = 100
SUBSCRIPTIONS_PAGE_SIZE = 100  # Stripe's largest page


class UnknownStripeObject(PermanentError):
    """Stripe answered 404: the object (customer, price, meter, event) does not exist."""


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


STREAM_KEY_PREFIX = "mbs-"

# Called with (idempotency key, identifiers) before each v2 stream request is sent: Stripe's
# asynchronous error reports name only that key, so the ledger must know what it carried.
StreamRequestHook = Callable[[str, list[str]], None]


def _is_duplicate_identifier(error: stripe.InvalidRequestError) -> bool:
    message = (error.user_message or str(error) or "").lower()
    return "already exists" in message and "identifier" in message


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
        base_addresses: Any = {"api": api_base, "meter_events": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,
            max_network_retries=max_network_retries,
            http_client=stripe_http_client(timeout_seconds, pool_size),
        )
        self._rate_limit_retries = rate_limit_retries
        self._rate_limit_backoff = rate_limit_backoff_seconds
        self._sleep = sleep
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        # One pace for every thread of the process (module docstring of rate_limiter).
        self.meter_event_limiter = AdaptiveRateLimiter(meter_event_rate, sleep=sleep)
        self._stream = (
            MeterEventStream(self, linger_seconds=stream_linger_seconds)
            if meter_event_api == "v2"
            else None
        )
        self._on_stream_request = on_stream_request
        self._session_lock = threading.Lock()
        self._session: tuple[str, float] | None = None  # (token, expires at, unix seconds)

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
            return self._stream.send(
                {
                    "event_name": event_name,
                    "payload": payload,
                    "identifier": identifier,
                    "timestamp": datetime.fromtimestamp(timestamp, UTC)
                    .isoformat()
                    .replace("+00:00", "Z"),
                }
            )
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

    def stream_meter_events(self, events: list[dict[str, Any]]) -> None:
        """One v2 meter_event_stream request (≤ 100 events) on the meter_events host,
        authenticated by the cached session token; Stripe validates the events later.

        Each request has a key of its own (never one whose saved answer is a failure), told
        to `on_stream_request` first: Stripe's error reports name only that key."""
        key = f"{STREAM_KEY_PREFIX}{uuid.uuid4().hex}"
        if self._on_stream_request is not None:
            self._on_stream_request(key, [str(e["identifier"]) for e in events])
        params: Any = {"events": events}
        for renewed in (False, True):
            token = self._session_token(renew=renewed)
            try:
                self._call(
                    lambda token=token: self._client.v2.billing.meter_event_stream.create(  # type: ignore[misc]
                        params, {"api_key": token, "idempotency_key": key}
                    ),
                    limited=True,
                )
                return
            except PermanentError as error:
                # stripe-python raises TemporarySessionExpiredError for v2's
                # temporary_session_expired, AuthenticationError for a revoked token.
                expired = (stripe.AuthenticationError, stripe.TemporarySessionExpiredError)
                if renewed or not isinstance(error.__cause__, expired):
                    raise
                # The session expired early (or was revoked): one retry with a new token.

    def _session_token(self, *, renew: bool = False) -> str:
        """A meter event session token, valid 15 minutes: reused until a minute before."""
        with self._session_lock:
            now = time.time()
            if renew or self._session is None or self._session[1] - 60 <= now:
                session = self._call(self._client.v2.billing.meter_event_session.create)
                expires = datetime.fromisoformat(str(session.expires_at)).timestamp()
                self._session = (session.authentication_token, expires)
            return self._session[0]

    def _call(self, request: Callable[[], T], *, limited: bool = False) -> T:
        """Run one SDK call; 429s are retried here (the SDK does not). `limited` calls are
        meter-event writes: they wait for the limiter's slot, and a 429 slows it down."""
        limiter = self.meter_event_limiter if limited else None
        attempt = 0
        while True:
            if limiter is not None:
                limiter.acquire()
            try:
                answer = request()
            except stripe.RateLimitError as error:
                if limiter is not None:
                    limiter.on_rate_limited()
                if attempt >= self._rate_limit_retries:
                    raise TransientError(
                        f"Stripe rate limit (429) after {attempt + 1} attempts"
                    ) from error
                if limiter is None:
                    # Full jitter keeps many concurrent workers from retrying in lock step.
                    self._sleep(random.uniform(0, self._rate_limit_backoff * 2**attempt))
                attempt += 1
                continue
            except stripe.StripeError as error:
                raise classify(error) from error
            if limiter is not None:
                limiter.on_success()
            return answer


@dataclass(eq=False)  # identity: two equal events are still two reports
class _Pending:
    event: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class MeterEventStream:
    """Gathers the meter events of concurrent threads into v2 stream requests of ≤ 100.

    Each report's thread hands its event in and waits: the request leaves when 100 events
    are waiting, or when the oldest has waited `linger_seconds` (so a lone report is not
    held back). Every event of a request shares its outcome — accepted, or the request's
    error — so each thread still moves its own ledger report to `sent` or `failed`.
    """

    def __init__(
        self, gateway: StripeGateway, *, linger_seconds: float = 0.05, max_events: int = 100
    ):
        self._gateway = gateway
        self._linger = linger_seconds
        self._max = max_events
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []

    def send(self, event: dict[str, Any]) -> MeterEventReceipt:
        item = _Pending(event)
        with self._lock:
            self._pending.append(item)
            chunk = self._take() if len(self._pending) >= self._max else None
        if chunk is None and not item.done.wait(self._linger):
            with self._lock:
                chunk = self._take() if item in self._pending else None
        if chunk is not None:
            self._flush(chunk)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return MeterEventReceipt(request_id=None)

    def _take(self) -> list[_Pending]:
        chunk, self._pending = self._pending[: self._max], self._pending[self._max :]
        return chunk

    def _flush(self, chunk: list[_Pending]) -> None:
        error: Exception | None = None
        try:
            self._gateway.stream_meter_events([item.event for item in chunk])
        except Exception as failure:  # every event of the request shares its fate
            error = failure
        for item in chunk:
            item.error = error
            item.done.set()


ATTEMPT_SEPARATOR = ":a"


def request_key(identifier: str, attempt: int) -> str:
    """The idempotency key of one attempt to send a report (≤ 255 characters)."""
    return f"{identifier}{ATTEMPT_SEPARATOR}{attempt}"


def identifier_of_request_key(key: str) -> str:
    """The report identifier behind a meter event request's idempotency key."""
    identifier, separator, attempt = key.rpartition(ATTEMPT_SEPARATOR)
    return identifier if separator and attempt.isdigit() else key


class StripeDuplicate(AlreadyDelivered):
    """AlreadyDelivered carrying Stripe's request id."""

    def __init__(self, message: str, request_id: str | None):
        super().__init__(message)
        self.request_id = request_id


class IdempotencyKeyReused(PermanentError):
    """The idempotency key was used before with different parameters."""


def classify(error: stripe.StripeError) -> Exception:
    """Map an SDK error to meterbridge's failure classes (retries already spent by the SDK)."""
    status = error.http_status
    detail = f"Stripe {type(error).__name__} ({status}): {error.user_message or error}"
    if isinstance(error, stripe.InvalidRequestError) and _is_duplicate_identifier(error):
        return StripeDuplicate(detail, error.request_id)
    if isinstance(error, stripe.IdempotencyError) and status == 400:
        return IdempotencyKeyReused(detail)
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return TransientError(detail)
    if status is not None and (status >= 500 or status in {409, 429}):
        return TransientError(detail)
    if status == 404:
        return UnknownStripeObject(detail)
    # 400 validation, 401 bad key, 403 permissions: retrying as-is cannot help.
    return PermanentError(detail)
