"""Continuous reporting's pure rules (domain/continuous.py): windows, values, timestamps,
identifiers, the true-up, and which pairs a page of subscriptions bills."""

from decimal import Decimal
from typing import Any

import pytest

from meterbridge.domain.continuous import (
    next_window,
    pairs_of,
    period_closed,
    true_up_value,
    window_begun,
    window_end,
    window_ended,
    window_identifier,
    window_timestamp,
)
from meterbridge.domain.guard import SentUsage
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.records import Watermark
from meterbridge.domain.reports import report_identifier

HOUR = 3600
DAY = 86_400
NOW = 1_800_000_000
PERIOD = ServicePeriod(start=NOW - 10 * DAY + 17, end=NOW + 20 * DAY + 17)
SUM = Meter(id="mtr_sum", event_name="calls")
LAST = Meter(id="mtr_last", event_name="seats", formula="last")
HOURLY = Meter(id="mtr_hour", event_name="gauge", event_time_window="hour")


def test_a_window_ends_a_settle_delay_before_the_sweep_on_a_whole_minute() -> None:
    assert window_end(NOW + 10 * 60 + 7, 10 * 60) == NOW - NOW % 60
    assert window_end(NOW, 0) % 60 == 0


def test_windows_start_at_the_watermark_and_never_cross_the_period_end() -> None:
    assert next_window(None, PERIOD, NOW) == ServicePeriod(start=PERIOD.start, end=NOW)
    mark = Watermark("cus", "mtr_sum", position=NOW - HOUR)
    assert next_window(mark, PERIOD, NOW) == ServicePeriod(start=NOW - HOUR, end=NOW)
    assert next_window(mark, PERIOD, PERIOD.end + DAY) == ServicePeriod(
        start=NOW - HOUR, end=PERIOD.end
    )
    # Caught up, or the watermark of an earlier period: nothing, or from this period's start.
    assert next_window(Watermark("cus", "m", position=NOW), PERIOD, NOW) is None
    old = Watermark("cus", "m", position=PERIOD.start - DAY)
    assert next_window(old, PERIOD, NOW) == ServicePeriod(start=PERIOD.start, end=NOW)


def test_sum_windows_are_timestamped_at_their_last_second_others_at_the_period_anchor() -> None:
    window = ServicePeriod(start=NOW - HOUR, end=NOW)
    assert window_timestamp(SUM, PERIOD, window, NOW + 60) == NOW - 1
    assert window_timestamp(LAST, PERIOD, window, NOW + 60) == NOW - 1
    # Pre-aggregated: the first whole hour inside the period, every sweep of the period.
    anchor = PERIOD.start + (-PERIOD.start) % HOUR
    assert PERIOD.start < anchor < PERIOD.start + HOUR
    assert window_timestamp(HOURLY, PERIOD, window, NOW + 60) == anchor
    # Not yet reachable (Stripe takes at most 5 minutes ahead), or out of its 35 days soon.
    early = ServicePeriod(start=PERIOD.start, end=PERIOD.start + 60)
    assert window_timestamp(HOURLY, PERIOD, early, PERIOD.start + 60) is None
    assert window_timestamp(HOURLY, PERIOD, window, PERIOD.start + 33 * DAY) is None


def test_a_whole_period_window_never_shares_the_renewals_identifier() -> None:
    assert window_identifier("cus", "mtr", PERIOD) != report_identifier("cus", "mtr", PERIOD)
    assert window_identifier("cus", "mtr", PERIOD).endswith("-w")
    long = window_identifier("cus_" + "x" * 80, "mtr", PERIOD)
    assert len(long) <= 100


@pytest.mark.parametrize(
    ("meter", "events", "at", "expected"),
    [
        # sum: the remainder over everything reported in the period
        (SUM, [(NOW - 2 * HOUR, "100"), (NOW - HOUR, "20")], NOW, "10"),
        # last: the true-up is the period's latest event: the source itself
        (LAST, [(NOW - 2 * HOUR, "100")], NOW, "130"),
        # pre-aggregated: its own hour's event is replaced, the remainder over the others
        (HOURLY, [(NOW - 2 * HOUR, "100"), (NOW - 10, "20")], NOW - 1, "30"),
    ],
)
def test_the_true_up_makes_the_meter_bill_the_source(
    meter: Meter, events: list[tuple[int, str]], at: int, expected: str
) -> None:
    reported = [SentUsage(t, Decimal(v), i) for i, (t, v) in enumerate(events)]
    assert true_up_value(meter, Decimal(130), reported, at) == Decimal(expected)


def test_a_watermark_moves_only_when_its_window_ends() -> None:
    window = ServicePeriod(start=PERIOD.start, end=NOW)
    begun = window_begun(
        None, customer_id="cus", meter_id="m", window=window, period=PERIOD, now_text="t"
    )
    assert (begun.position, begun.pending, begun.version) == (PERIOD.start, window, 1)
    ended = window_ended(begun, advance=True, sent=Decimal(5), meter=SUM, now_text="t")
    assert (ended.position, ended.pending, ended.period_reports) == (NOW, None, 1)
    assert ended.period_total == Decimal(5)
    abandoned = window_ended(begun, advance=False, sent=None, meter=SUM, now_text="t")
    assert (abandoned.position, abandoned.pending) == (PERIOD.start, None)
    closed = period_closed(ended, "cus", "m", PERIOD.end, "t")
    assert closed.position == PERIOD.end
    assert closed.version == ended.version + 1


def _subscription(status: str, *prices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": f"sub_{status}",
        "status": status,
        "customer": fields.pop("customer", "cus_1"),
        "items": {
            "data": [
                {
                    "id": f"si_{i}",
                    "price": price,
                    "current_period_start": fields.get("start", PERIOD.start),
                    "current_period_end": fields.get("end", PERIOD.end),
                }
                for i, price in enumerate(prices)
            ]
        },
    }


METERED: dict[str, Any] = {
    "id": "price_m",
    "recurring": {"usage_type": "metered", "meter": "mtr_sum"},
}
LICENSED: dict[str, Any] = {"id": "price_l", "recurring": {"usage_type": "licensed"}}


def test_pairs_are_the_metered_items_of_subscriptions_that_bill_usage() -> None:
    found = pairs_of(
        [
            _subscription("active", METERED, LICENSED),
            _subscription("past_due", METERED, customer="cus_2"),
            _subscription("trialing", METERED, customer="cus_3"),
            _subscription("incomplete", METERED, customer="cus_4"),
        ]
    )
    assert [(p.customer_id, p.meter_id, p.period) for p, _ in found] == [
        ("cus_1", "mtr_sum", PERIOD),
        ("cus_2", "mtr_sum", PERIOD),
    ]


def test_one_meter_on_two_subscriptions_is_one_pair_inside_both_periods() -> None:
    later = ServicePeriod(start=PERIOD.start + DAY, end=PERIOD.end + DAY)
    first = _subscription("active", METERED)
    second = _subscription("active", METERED, start=later.start, end=later.end)
    [(pair, tenant)] = pairs_of([first, second])
    assert pair.period == ServicePeriod(start=later.start, end=PERIOD.end)
    assert len(pair.subscription_items) == 2
    assert tenant is None


def test_an_expanded_customer_gives_the_tenant() -> None:
    customer = {"id": "cus_9", "metadata": {"tenant": "acme"}}
    [(pair, tenant)] = pairs_of([_subscription("active", METERED, customer=customer)], "tenant")
    assert (pair.customer_id, tenant) == ("cus_9", "acme")
