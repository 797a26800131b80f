"""The invoice guard's rules: when a report counts as confirmed, when to look again, and
whether a finalized line is right. Pure: `now` and Stripe's numbers are passed in.

Confirmation rule ("Stripe's aggregate includes the report"). Stripe's event summaries
answer one number per (meter, customer, minute-aligned window), not per event, and a
customer may have several reports in one window: two subscription items on one meter,
or the previous period's report whose timestamp (`end - 1` of that period) falls in the
minute the window is widened by. So a report is confirmed when the summary over its
window equals the meter's formula applied to *every* report the ledger sent for that
meter and customer with a timestamp inside the window — it included. Equal means all of
them are counted; below means some are not aggregated yet; above means Stripe counts
usage meterbridge did not send (another sender, or an identifier re-counted after
Stripe's 24 h memory). Neither of the last two confirms anything, and both numbers are
recorded so an operator sees which case it is.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Literal

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import ReportRecord

GuardMode = Literal["off", "confirm", "hold"]

MINUTE = 60
SQS_MAX_DELAY_SECONDS = 900
# Stripe will not finalize a draft while an invoice.created webhook is unanswered for up to
# 72 h, and the grace period is at most 72 h (docs/stripe.md#S-GRACE-1): a hold must end
# before that.
STRIPE_MAX_HOLD_SECONDS = 72 * 3600
# Stripe's values carry at most 15 significant digits; summaries come back as JSON numbers
# (binary floats), so equality is judged to that precision.
_RELATIVE_TOLERANCE = Decimal("1e-12")


def summary_window(period: ServicePeriod) -> tuple[int, int]:
    """The event-summary bounds covering the service period: Stripe wants whole minutes
    (start inclusive, end exclusive), so the period is widened to the minutes around it."""
    start = period.start - period.start % MINUTE
    end = period.end + (-period.end) % MINUTE
    return start, max(end, start + MINUTE)


@dataclass(frozen=True)
class SentUsage:
    """One meter event as the ledger knows it: what Stripe should be counting."""

    timestamp: int
    value: Decimal
    sent_at: int = 0  # tie-break for the `last` formula: the later send wins


PRE_AGGREGATION_SECONDS = {"hour": 3600, "day": 86_400}


def sent_usage(report: ReportRecord) -> SentUsage:
    """What Stripe should be counting for a report, as the guard's rules take it."""
    return SentUsage(
        timestamp=report.timestamp or 0,
        value=report.value if report.value is not None else Decimal(0),
        sent_at=report.sent_at or 0,
    )


def expected_aggregate(
    formula: str, usage: Iterable[SentUsage], event_time_window: str | None = None
) -> Decimal:
    """What the meter makes of these events: its pre-aggregation window first (the newest
    event of each hour or day replaces the older ones), then its formula (sum, count or
    last) — docs/stripe.md#S-AGG-2, #S-WINDOW-1."""
    events = list(usage)
    size = PRE_AGGREGATION_SECONDS.get(event_time_window or "")
    if size is not None:
        newest: dict[int, SentUsage] = {}
        for event in events:
            bucket = event.timestamp // size
            kept = newest.get(bucket)
            if kept is None or (event.timestamp, event.sent_at) >= (kept.timestamp, kept.sent_at):
                newest[bucket] = event
        events = list(newest.values())
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        if not events:
            return Decimal(0)
        return max(events, key=lambda event: (event.timestamp, event.sent_at)).value
    return sum((event.value for event in events), Decimal(0))


def in_window(timestamp: int, window: tuple[int, int]) -> bool:
    return window[0] <= timestamp < window[1]


def same_value(observed: Decimal, expected: Decimal) -> bool:
    """Equal to Stripe's precision (the summary travelled as a float)."""
    scale = max(abs(expected), Decimal(1))
    return abs(observed - expected) <= scale * _RELATIVE_TOLERANCE


def billed_quantity(aggregate: Decimal, *, integer_quantity: bool = False) -> Decimal:
    """What a line bills for an aggregate: a negative cycle total bills as 0; a line that
    shows only the integer `quantity` (older API versions) shows `quantity_decimal`
    truncated, not rounded (docs/stripe.md#S-QTY-1)."""
    billed = max(aggregate, Decimal(0))
    return billed.to_integral_value(ROUND_DOWN) if integer_quantity else billed


def line_is_right(invoiced: Decimal, expected: Decimal, *, integer_quantity: bool) -> bool:
    """Does a finalized metered line bill `expected` usage?"""
    return same_value(invoiced, billed_quantity(expected, integer_quantity=integer_quantity))


def next_check_delay(
    checks_done: int,
    *,
    base_seconds: int,
    max_seconds: int,
    until_margin: int | None = None,
    until_hold_limit: int | None = None,
) -> int:
    """Seconds until the next confirmation check: base * 2^(checks-1), capped by SQS's
    15-minute message delay, and never past the moments that matter — the start of the
    confirmation margin (the alarm must fire while someone can still act) or the end of a
    hold (the invoice must be released on time)."""
    exponent = min(max(checks_done, 1) - 1, 20)
    delay = min(base_seconds * 2**exponent, max_seconds, SQS_MAX_DELAY_SECONDS)
    for moment in (until_margin, until_hold_limit):
        if moment is not None and moment > 0:
            delay = min(delay, moment)
    return max(int(delay), 0)


def confirmation_at_risk(
    *, invoice_now: int, finalizes_at: int | None, margin_seconds: int
) -> bool:
    """Unconfirmed usage is an emergency once the draft finalizes within the margin."""
    return finalizes_at is not None and finalizes_at - invoice_now <= margin_seconds


class NextStep(StrEnum):
    """What a confirmation check does once it has looked at Stripe's aggregates."""

    HAND_OVER = "hand_over"  # no longer a draft: reconciliation takes over
    RELEASE = "release"  # held, and every report is confirmed
    RELEASE_AT_LIMIT = "release_at_limit"  # held, unconfirmed, and the hold limit has come
    DONE = "done"  # not held, and every report is confirmed
    ABANDON = "abandon"  # not held, and the checks are exhausted
    CHECK_AGAIN = "check_again"


@dataclass(frozen=True)
class CheckState:
    """One check's view of an invoice, as the decision needs it."""

    draft: bool
    held: bool  # held by meterbridge, and Stripe still says auto_advance=false
    all_confirmed: bool
    checks_done: int
    max_checks: int
    invoice_now: int  # the invoice's clock
    hold_deadline: int | None = None
    finalizes_at: int | None = None  # None while held: Stripe will not finalize it


@dataclass(frozen=True)
class Decision:
    step: NextStep
    delay_seconds: int | None = None  # for CHECK_AGAIN


def decide_after_check(
    state: CheckState,
    *,
    base_seconds: int,
    max_seconds: int,
    margin_seconds: int,
) -> Decision:
    """The next step after a check: release, stop, or look again — and when."""
    if not state.draft:
        return Decision(NextStep.HAND_OVER)
    if state.held:
        if state.all_confirmed:
            return Decision(NextStep.RELEASE)
        if state.hold_deadline is not None and state.invoice_now >= state.hold_deadline:
            return Decision(NextStep.RELEASE_AT_LIMIT)
    elif state.all_confirmed:
        return Decision(NextStep.DONE)
    elif state.checks_done >= state.max_checks:
        return Decision(NextStep.ABANDON)
    until_margin = (
        state.finalizes_at - margin_seconds - state.invoice_now
        if state.finalizes_at is not None
        else None
    )
    until_hold = (
        state.hold_deadline - state.invoice_now if state.held and state.hold_deadline else None
    )
    delay = next_check_delay(
        state.checks_done,
        base_seconds=base_seconds,
        max_seconds=max_seconds,
        until_margin=until_margin,
        until_hold_limit=until_hold,
    )
    return Decision(NextStep.CHECK_AGAIN, delay)
