"""One usage report: its identifier, timestamp, value and deadline. Pure rules, `now` passed in."""

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, ServicePeriod
from meterbridge.errors import PermanentError

IDENTIFIER_MAX_LENGTH = 100  # Stripe's limit on meter event identifiers
IDENTIFIER_PREFIX = "mb1"
# Stripe accepts meter event timestamps from 35 days ago up to 5 minutes ahead.
STRIPE_MAX_PAST_SECONDS = 35 * 24 * 3600
STRIPE_MAX_FUTURE_SECONDS = 5 * 60
MAX_SIGNIFICANT_DIGITS = 15  # Stripe's limit on meter event values
# Stripe drops a repeated identifier "within a rolling period of at least 24 hours". A
# report whose first send may have reached Stripe is resent under the same identifier only
# well inside that window (an hour kept for clock skew between us and Stripe).
SAFE_RESEND_SECONDS = 23 * 3600


class TimestampOutsideWindow(PermanentError):
    """No instant of the service period is one Stripe would accept as a timestamp now."""


class SendOutcomeUnknown(PermanentError):
    """An attempt may have reached Stripe, and Stripe no longer remembers the identifier:
    sending again could count the usage twice, not sending could lose it. A person decides."""


class InvalidUsageValue(PermanentError):
    """The usage source answered something Stripe cannot take as a meter event value."""


def report_identifier(subscription_item_id: str, period: ServicePeriod, revision: int = 0) -> str:
    """The meter event identifier (and idempotency key) of one report.

    The same inputs give the same identifier in every process, so a redelivered event,
    a second event for the same invoice or a DLQ replay all collide on it. Ids long enough
    to push it past Stripe's 100 characters are replaced by their SHA-256.
    """
    readable = f"{IDENTIFIER_PREFIX}-{subscription_item_id}-{period.start}-{period.end}-r{revision}"
    if len(readable) <= IDENTIFIER_MAX_LENGTH:
        return readable
    digest = hashlib.sha256(readable.encode()).hexdigest()
    return f"{IDENTIFIER_PREFIX}-h-{digest}"


def meter_event_timestamp(period: ServicePeriod, now: int, test_clock: str | None = None) -> int:
    """The latest instant inside the service period that is not after `now`.

    Inside the period, so Stripe counts the usage on this period's invoice; as late as
    possible, so it stays inside Stripe's 35-day window for as long as possible. The end
    is exclusive: the last instant is `end - 1`. A period that has not started yet (a test
    clock ahead of real time) has no such instant; its start is used if Stripe's 5-minute
    allowance for the future covers it, otherwise the report cannot be sent at all.
    """
    last_instant = max(period.start, period.end - 1)
    timestamp = min(last_instant, now)
    timestamp = max(timestamp, period.start)
    if timestamp > now + STRIPE_MAX_FUTURE_SECONDS:
        hint = (
            f" The invoice belongs to test clock {test_clock}, whose time runs ahead of real"
            " time: create test clocks with frozen_time about 32 days in the past so their"
            " periods are in Stripe's window."
            if test_clock
            else " Check the server clock and the subscription's billing period."
        )
        raise TimestampOutsideWindow(
            f"service period [{period.start}, {period.end}) starts {period.start - now} s"
            f" after now ({now}); Stripe accepts meter events at most"
            f" {STRIPE_MAX_FUTURE_SECONDS} s in the future.{hint}"
        )
    if timestamp < now - STRIPE_MAX_PAST_SECONDS:
        raise TimestampOutsideWindow(
            f"service period [{period.start}, {period.end}) ended {now - period.end} s before"
            f" now ({now}); Stripe rejects meter events older than 35 days. Report this usage"
            " by hand (invoice item) or adjust the invoice before it finalizes."
        )
    return timestamp


def check_resend(identifier: str, send_started_at: int | None, now: int) -> None:
    """Resending is safe while Stripe still drops the identifier as a duplicate."""
    if send_started_at is None or now - send_started_at < SAFE_RESEND_SECONDS:
        return
    raise SendOutcomeUnknown(
        f"report {identifier} was first sent at {send_started_at} and that attempt's outcome"
        f" is unknown; {now - send_started_at} s later Stripe may no longer drop the"
        " identifier as a duplicate, so it is not sent again. Check the customer's meter"
        " event summary in Stripe; if the usage is missing, send it with"
        " `meterbridge report --invoice <id> --force`."
    )


def usage_value(raw: object) -> Decimal:
    """A usage source's answer as a Stripe meter value: finite, ≤ 15 significant digits."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise InvalidUsageValue(f"usage value {raw!r} is not a decimal number")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidUsageValue(f"usage value {raw!r} is not a decimal number") from None
    if not value.is_finite():
        raise InvalidUsageValue(f"usage value {raw!r} is not finite")
    digits = len(value.normalize().as_tuple().digits) if value else 1
    if digits > MAX_SIGNIFICANT_DIGITS:
        raise InvalidUsageValue(
            f"usage value {raw!r} has {digits} significant digits; Stripe accepts at most"
            f" {MAX_SIGNIFICANT_DIGITS}"
        )
    return value


def stripe_value_text(value: Decimal) -> str:
    """Decimal text without exponent, as Stripe's payload wants it ("1E+3" → "1000")."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def finalizes_at(invoice: Invoice, grace_period_seconds: int) -> int:
    """When the draft finalizes: Stripe's schedule if it says, else creation + grace period."""
    if invoice.automatically_finalizes_at is not None:
        return invoice.automatically_finalizes_at
    return invoice.created + grace_period_seconds


def is_late(sent_at: int, deadline: int) -> bool:
    """Usage sent after finalization misses the invoice (STRIPE.md, grace period)."""
    return sent_at > deadline


@dataclass(frozen=True)
class PlannedReport:
    """Everything needed to report one line's usage and to record it in the ledger."""

    identifier: str
    invoice_id: str
    customer_id: str
    subscription_item_id: str
    meter: Meter
    period: ServicePeriod
    finalizes_at: int
    test_clock: str | None = None
    livemode: bool = False


def plan_reports(
    invoice: Invoice,
    line_meters: list[tuple[InvoiceLine, Meter]],
    grace_period_seconds: int,
    revision: int = 0,
) -> list[PlannedReport]:
    """One report per (subscription item, service period); repeated lines collapse."""
    deadline = finalizes_at(invoice, grace_period_seconds)
    planned: dict[str, PlannedReport] = {}
    for line, meter in line_meters:
        if line.subscription_item_id is None:  # reported_line_meters already drops these
            continue
        identifier = report_identifier(line.subscription_item_id, line.period, revision)
        planned.setdefault(
            identifier,
            PlannedReport(
                identifier=identifier,
                invoice_id=invoice.id,
                customer_id=invoice.customer_id,
                subscription_item_id=line.subscription_item_id,
                meter=meter,
                period=line.period,
                finalizes_at=deadline,
                test_clock=invoice.test_clock,
                livemode=invoice.livemode,
            ),
        )
    return list(planned.values())
