"""One usage report: its identifier, timestamp, value and deadline. Pure rules, `now` passed in."""

import hashlib
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, ServicePeriod
from meterbridge.domain.usage_limits import scrub_usage_source_text
from meterbridge.errors import PermanentError

IDENTIFIER_MAX_LENGTH = 100  # Stripe's limit on meter event identifiers
# mb2: one report per customer, meter and service period (mb1 was per subscription item,
# which billed a meter shared by two items twice over: docs/stripe.md#S-AGG-1).
IDENTIFIER_PREFIX = "mb2"
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


def report_identifier(
    customer_id: str, meter_id: str, period: ServicePeriod, revision: int = 0
) -> str:
    """The meter event identifier of one report: customer, meter and service period.

    Stripe aggregates meter events per customer and meter and knows no subscription item
    (docs/stripe.md#S-AGG-1), so that is what a report is keyed on. The same inputs
    give the same identifier in every process, so a redelivered event, a second event for
    the same invoice, a second subscription on the same meter or a DLQ replay all collide
    on it. Ids long enough to push it past Stripe's 100 characters are replaced by their
    SHA-256.
    """
    readable = (
        f"{IDENTIFIER_PREFIX}-{customer_id}-{meter_id}-{period.start}-{period.end}-r{revision}"
    )
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
    """A usage source's answer as a Stripe meter value: finite, ≤ 15 significant digits.
    What the source answered is quoted scrubbed and cut short: it reaches the ledger."""
    shown = scrub_usage_source_text(repr(raw), 60)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise InvalidUsageValue(f"usage value {shown} is not a decimal number")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidUsageValue(f"usage value {shown} is not a decimal number") from None
    if not value.is_finite():
        raise InvalidUsageValue(f"usage value {shown} is not finite")
    digits = len(value.normalize().as_tuple().digits) if value else 1
    if digits > MAX_SIGNIFICANT_DIGITS:
        raise InvalidUsageValue(
            f"usage value {shown} has {digits} significant digits; Stripe accepts at most"
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
    """Usage sent after finalization misses the invoice (docs/stripe.md#S-GRACE-1)."""
    return sent_at > deadline


@dataclass(frozen=True)
class PlannedReport:
    """Everything needed to report one customer, meter and period and to record it."""

    identifier: str
    invoice_id: str
    customer_id: str
    meter: Meter
    period: ServicePeriod
    finalizes_at: int
    test_clock: str | None = None
    livemode: bool = False
    line_ids: tuple[str, ...] = ()  # the invoice's lines this usage is billed on
    subscription_items: tuple[str, ...] = ()
    revision: int = 0
    # A continuous-reporting sweep's window (invoice_id empty, `period` the window).
    sweep: bool = False
    # The meter event timestamp when the plan fixes it (sweeps, the renewal's true-up);
    # otherwise the latest instant of `period` not after now (`meter_event_timestamp`).
    timestamp: int | None = None

    @property
    def shared(self) -> bool:
        """More than one line bills this usage: Stripe bills it on each of them."""
        return len(self.line_ids) > 1

    def revised(self, revision: int) -> "PlannedReport":
        """The same report under a later revision (an operator's correction)."""
        identifier = report_identifier(self.customer_id, self.meter.id, self.period, revision)
        return replace(self, identifier=identifier, revision=revision)


@dataclass(frozen=True)
class SharedMeter:
    """One customer's meter priced on several invoice lines for overlapping periods.

    Stripe bills every such line the customer's whole aggregate for its period, whatever
    is reported (docs/stripe.md#S-AGG-1): the usage is billed more than once."""

    customer_id: str
    meter: Meter
    line_ids: tuple[str, ...]
    invoice_ids: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f" on invoices {', '.join(self.invoice_ids)}" if self.invoice_ids else ""
        return (
            f"meter {self.meter.event_name} ({self.meter.id}) of customer {self.customer_id} is"
            f" priced on {len(self.line_ids)} lines{where} for overlapping periods"
            f" ({', '.join(self.line_ids)}): Stripe bills the usage on each of them"
        )


@dataclass(frozen=True)
class UnreportedLine:
    """A line priced on a meter that meterbridge cannot report for, and why."""

    line_id: str
    meter: Meter
    period: ServicePeriod
    reason: str


@dataclass(frozen=True)
class InvoicePlan:
    reports: list[PlannedReport]
    shared: list[SharedMeter]
    unreported: list[UnreportedLine]  # refused meters, lines Stripe already fixed


# Meters whose formula a usage total cannot express (docs/stripe.md#S-AGG-2, #S-WINDOW-1).
UNSUPPORTED_FORMULAS = {
    "count": "counts meter events and ignores their value, so no single usage total can"
    " be reported for it; use a sum or last meter (or report one event per unit yourself)",
}


def refusal(meter: Meter) -> str | None:
    """Why meterbridge cannot report this meter, or None."""
    explanation = UNSUPPORTED_FORMULAS.get(meter.formula)
    if explanation is None:
        return None
    return (
        f"meter {meter.event_name} ({meter.id}) aggregates with {meter.formula!r}: it {explanation}"
    )


def plan_invoice(
    invoice: Invoice,
    line_meters: list[tuple[InvoiceLine, Meter]],
    grace_period_seconds: int,
) -> InvoicePlan:
    """One report per (meter, service period) of the invoice's metered lines.

    Lines that bill the same meter for overlapping periods are a shared meter: the usage is
    reported once, and the set-up is flagged. Lines of refused meters, lines without a
    subscription item (an invoice item Stripe created with its quantity fixed, e.g. when a
    metered price was removed mid-period) and lines whose period had not ended when the
    invoice was created are not reported, each with its reason.
    """
    deadline = finalizes_at(invoice, grace_period_seconds)
    groups: dict[tuple[str, ServicePeriod], list[tuple[InvoiceLine, Meter]]] = {}
    unreported: list[UnreportedLine] = []
    seen: set[str] = set()
    for line, meter in line_meters:
        if line.id in seen:
            continue
        seen.add(line.id)
        reason = refusal(meter) or _unreportable(line, invoice)
        if reason is not None:
            unreported.append(UnreportedLine(line.id, meter, line.period, reason))
            continue
        groups.setdefault((meter.id, line.period), []).append((line, meter))
    reports = [
        PlannedReport(
            identifier=report_identifier(invoice.customer_id, meter_id, period),
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            meter=members[0][1],
            period=period,
            finalizes_at=deadline,
            test_clock=invoice.test_clock,
            livemode=invoice.livemode,
            line_ids=tuple(line.id for line, _ in members),
            subscription_items=tuple(
                line.subscription_item_id for line, _ in members if line.subscription_item_id
            ),
        )
        for (meter_id, period), members in groups.items()
    ]
    return InvoicePlan(reports, _shared_meters(invoice, line_meters), unreported)


def _unreportable(line: InvoiceLine, invoice: Invoice) -> str | None:
    if line.subscription_item_id is None:
        return (
            "an invoice item, not a subscription item: Stripe fixed its quantity when it created"
            " it (a metered price removed or switched mid-period), so no report can reach it"
        )
    if line.period.end > invoice.created:
        return (
            f"its period [{line.period.start}, {line.period.end}) had not ended when the invoice"
            f" was created ({invoice.created}): its usage belongs to a later invoice"
        )
    return None


def _shared_meters(
    invoice: Invoice, line_meters: list[tuple[InvoiceLine, Meter]]
) -> list[SharedMeter]:
    by_meter: dict[str, list[tuple[InvoiceLine, Meter]]] = {}
    for line, meter in {line.id: (line, meter) for line, meter in line_meters}.values():
        by_meter.setdefault(meter.id, []).append((line, meter))
    shared = []
    for members in by_meter.values():
        overlapping = _overlapping([line for line, _ in members])
        if overlapping:
            shared.append(
                SharedMeter(
                    invoice.customer_id,
                    members[0][1],
                    tuple(line.id for line, _ in members if line.id in overlapping),
                )
            )
    return shared


def _overlapping(lines: list[InvoiceLine]) -> set[str]:
    """Ids of the lines whose period overlaps another line's: one sweep in start order
    (an invoice may carry thousands of lines on one meter)."""
    found: set[str] = set()
    reach: InvoiceLine | None = None  # the line seen so far that ends last
    for line in sorted(lines, key=lambda line: (line.period.start, line.period.end)):
        if reach is not None and line.period.start < reach.period.end:
            found.update((line.id, reach.id))
        if reach is None or line.period.end > reach.period.end:
            reach = line
    return found


def overlaps(first: ServicePeriod, second: ServicePeriod) -> bool:
    return first.start < second.end and second.start < first.end
