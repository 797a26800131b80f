"""Continuous reporting's rules (docs/continuous.md): sweep windows, their values and
timestamps, and the renewal's true-up. Pure: `now` and the usage are passed in.

A sweep reports one customer's meter over the window [watermark, window end), never across
the service period of the item that bills it; the renewal then sends what the period still
lacks. Which value a window carries depends on how the meter aggregates
(docs/stripe.md#S-AGG-2, #S-WINDOW-1):

- `sum` without pre-aggregation: the window's own usage (a delta); Stripe adds them up;
- `last`, and any meter with `event_time_window`: the period-to-date usage, which replaces
  what was sent before (`last` by the latest timestamp; a pre-aggregated meter by the newest
  event of one fixed hour or day of the period, the period's *anchor*);
- `count`: refused, as at renewal (domain/reports.refusal).
"""

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from meterbridge.domain.guard import PRE_AGGREGATION_SECONDS, SentUsage, expected_aggregate
from meterbridge.domain.invoices import Meter, MeteredPrice, ServicePeriod
from meterbridge.domain.records import Watermark
from meterbridge.domain.reports import (
    IDENTIFIER_MAX_LENGTH,
    IDENTIFIER_PREFIX,
    STRIPE_MAX_FUTURE_SECONDS,
    STRIPE_MAX_PAST_SECONDS,
    meter_event_timestamp,
)

Cadence = Literal["off", "hourly", "daily", "true-up-only"]
MINUTE = 60
DAY = 86_400
# A pre-aggregated meter's anchor must stay inside Stripe's 35-day window until the period's
# true-up, which comes at most 72 h (the longest grace period) after the period ends.
ANCHOR_MARGIN_SECONDS = 3 * DAY
# Subscription statuses whose metered items bill usage at the next renewal.
SWEPT_STATUSES = frozenset({"active", "past_due"})


def sweeps(cadence: Cadence) -> bool:
    """The schedule sends sweeps (hourly, daily)."""
    return cadence in ("hourly", "daily")


def trues_up(cadence: Cadence) -> bool:
    """Renewals send the remainder, not the whole period: sweeps may have reported part of
    it. `true-up-only` keeps this while sweeps are switched off (docs/continuous.md)."""
    return cadence != "off"


@dataclass(frozen=True)
class SweepPair:
    """One customer's meter as a sweep finds it: the item's current service period."""

    customer_id: str
    meter_id: str
    period: ServicePeriod
    subscription_items: tuple[str, ...] = ()
    livemode: bool = False
    test_clock: str | None = None


def pairs_of(
    subscriptions: Iterable[Mapping[str, Any]], tenant_key: str | None = None
) -> list[tuple[SweepPair, str | None]]:
    """The (customer, meter) pairs a page of subscriptions bills, each with the service
    period every window must stay inside, and the customer's tenant when `tenant_key` is
    set and the customer came expanded.

    Only subscriptions whose items renew and bill usage (SWEPT_STATUSES) and items priced
    on a meter. One customer's items on one meter (a shared meter, alarmed at renewal) make
    one pair whose period is where all of theirs overlap: no window crosses any of their
    boundaries."""
    found: dict[tuple[str, str], tuple[SweepPair, str | None]] = {}
    for subscription in subscriptions:
        if subscription.get("status") not in SWEPT_STATUSES:
            continue
        customer = subscription.get("customer")
        tenant = None
        if isinstance(customer, Mapping):
            tenant = (customer.get("metadata") or {}).get(tenant_key) if tenant_key else None
            customer = customer.get("id")
        listed = subscription.get("items")
        items = listed.get("data") if isinstance(listed, Mapping) else None
        for item in items or ():
            price = item.get("price")
            if not isinstance(price, Mapping):
                continue
            metered = MeteredPrice.from_stripe(price)
            if not metered.is_metered or metered.meter_id is None:
                continue
            start = item.get("current_period_start") or subscription.get("current_period_start")
            end = item.get("current_period_end") or subscription.get("current_period_end")
            if start is None or end is None:
                continue
            pair = SweepPair(
                customer_id=str(customer),
                meter_id=metered.meter_id,
                period=ServicePeriod(start=int(start), end=int(end)),
                subscription_items=(str(item.get("id")),),
                livemode=bool(subscription.get("livemode")),
                test_clock=_id(subscription.get("test_clock")),
            )
            key = (pair.customer_id, pair.meter_id)
            if key in found:
                known = found[key][0]
                pair = replace(
                    known,
                    period=ServicePeriod(
                        start=max(known.period.start, pair.period.start),
                        end=min(known.period.end, pair.period.end),
                    ),
                    subscription_items=known.subscription_items + pair.subscription_items,
                )
            found[key] = (pair, str(tenant) if tenant else None)
    return list(found.values())


def _id(reference: Any) -> str | None:
    if isinstance(reference, Mapping):
        reference = reference.get("id")
    return str(reference) if reference else None


def window_end(at: int, settle_seconds: int) -> int:
    """The end of what a sweep at `at` reports: behind `at` by the settle delay (usage still
    arriving at the source is not cut off), on a whole minute."""
    end = at - settle_seconds
    return end - end % MINUTE


def next_window(mark: Watermark | None, period: ServicePeriod, end: int) -> ServicePeriod | None:
    """The window to report next: from the watermark (or the period's start: usage before it
    belongs to an earlier period, which its renewal trued up) to `end`, never past the
    period's end. None when there is nothing to report."""
    start = period.start if mark is None else max(mark.position, period.start)
    stop = min(end, period.end)
    return ServicePeriod(start=start, end=stop) if start < stop else None


def replaces(meter: Meter) -> bool:
    """Each event of this meter replaces the ones before (its value is period-to-date)."""
    return meter.formula != "sum" or meter.event_time_window is not None


def measured_span(meter: Meter, period: ServicePeriod, window: ServicePeriod) -> ServicePeriod:
    """What the usage source is asked for a window: the window itself, or from the period's
    start for meters whose events replace each other."""
    return ServicePeriod(start=period.start, end=window.end) if replaces(meter) else window


def anchor(meter: Meter, period: ServicePeriod) -> int | None:
    """A pre-aggregated meter's one hour or day of the period that every sweep's event goes
    to (the newest event of it counts): the first that starts inside the period, so it is
    never shared with the previous period's last events. None for other meters, and when the
    period holds no whole hour or day."""
    size = PRE_AGGREGATION_SECONDS.get(meter.event_time_window or "")
    if size is None:
        return None
    first = period.start + (-period.start) % size
    return first if first < period.end else None


def window_timestamp(
    meter: Meter, period: ServicePeriod, window: ServicePeriod, now: int
) -> int | None:
    """The meter event timestamp of a window, or None when no sweep can send it now (it is
    left to a later sweep, or to the renewal's true-up).

    Inside the window, as late as possible (`meter_event_timestamp`): the event lands in
    the window's service period. A pre-aggregated meter's events go to the period's anchor
    instead, which must lie inside Stripe's timestamp window (docs/stripe.md#S-TS-1) now and
    until the true-up."""
    if meter.event_time_window is None:
        return meter_event_timestamp(window, now)
    moment = anchor(meter, period)
    if moment is None or moment > now + STRIPE_MAX_FUTURE_SECONDS:
        return None
    if moment < now - STRIPE_MAX_PAST_SECONDS + ANCHOR_MARGIN_SECONDS:
        return None
    return moment


def window_identifier(customer_id: str, meter_id: str, window: ServicePeriod) -> str:
    """A sweep report's meter event identifier: customer, meter and window, marked `-w` so
    that a window covering a whole service period never collides with that period's own
    renewal report (`-r0`), which carries the true-up."""
    readable = f"{IDENTIFIER_PREFIX}-{customer_id}-{meter_id}-{window.start}-{window.end}-w"
    if len(readable) <= IDENTIFIER_MAX_LENGTH:
        return readable
    return f"{IDENTIFIER_PREFIX}-h-{hashlib.sha256(readable.encode()).hexdigest()}"


def total_after(meter: Meter, total: Decimal, value: Decimal) -> Decimal:
    """What Stripe counts for the period once this window's value is sent: a delta adds to
    what was sent, a period-to-date value replaces it."""
    return value if replaces(meter) else total + value


def period_total(mark: Watermark | None, period: ServicePeriod) -> Decimal:
    """What the sweeps reported for `period` so far, by the watermark's own count."""
    if mark is None or mark.period_start != period.start:
        return Decimal(0)
    return mark.period_total


def window_begun(
    mark: Watermark | None,
    *,
    customer_id: str,
    meter_id: str,
    window: ServicePeriod,
    period: ServicePeriod,
    now_text: str,
) -> Watermark:
    """The watermark once a sweep has claimed `window`: any other sweep finishes it first."""
    base = mark or Watermark(customer_id=customer_id, meter_id=meter_id, position=window.start)
    return replace(
        base,
        pending=window,
        pending_period=period,
        version=base.version + 1,
        updated_at=now_text,
    )


def window_ended(
    mark: Watermark, *, advance: bool, sent: Decimal | None, meter: Meter, now_text: str
) -> Watermark:
    """The watermark once its pending window is done: moved to the window's end (`advance`)
    or left where it was (the window was abandoned); `sent`: the value Stripe now holds for
    it, counted in the period's totals."""
    window, period = mark.pending, mark.pending_period
    assert window is not None  # only pending windows end
    assert period is not None
    changed = replace(
        mark,
        position=window.end if advance else mark.position,
        pending=None,
        pending_period=None,
        version=mark.version + 1,
        updated_at=now_text,
    )
    if sent is None:
        return changed
    before = period_total(mark, period)
    reports = mark.period_reports if mark.period_start == period.start else 0
    return replace(
        changed,
        period_start=period.start,
        period_reports=reports + 1,
        period_total=total_after(meter, before, sent),
    )


def period_closed(
    mark: Watermark | None, customer_id: str, meter_id: str, end: int, now_text: str
) -> Watermark:
    """The watermark moved to `end` without a report: a renewal has closed the period ending
    there (no sweep reports into it any more; the true-up sends what it lacks), or a window
    up to `end` had nothing new."""
    base = mark or Watermark(customer_id=customer_id, meter_id=meter_id, position=end)
    return replace(
        base, position=max(base.position, end), version=base.version + 1, updated_at=now_text
    )


def true_up_value(
    meter: Meter, source: Decimal, reported: Iterable[SentUsage], timestamp: int
) -> Decimal:
    """The renewal's one more report: the value that, sent at `timestamp` beside the reports
    already delivered for the period, makes the meter bill `source`.

    `sum`: the remainder, source - what was reported. `last`: the source itself (the true-up
    is the period's latest event). Pre-aggregated: the newest event of each hour or day
    counts, so the true-up replaces whatever lies in its own hour or day; the remainder is
    taken over the others."""
    if meter.formula == "last":
        return source
    events = list(reported)
    size = PRE_AGGREGATION_SECONDS.get(meter.event_time_window or "")
    if size is not None:
        events = [e for e in events if e.timestamp // size != timestamp // size]
    return source - expected_aggregate(meter.formula, events, meter.event_time_window)
