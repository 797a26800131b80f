"""The guard's pure rules: summary windows, expected aggregates, line verdicts, check timing."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterbridge.domain.guard import (
    SQS_MAX_DELAY_SECONDS,
    SentUsage,
    confirmation_at_risk,
    expected_aggregate,
    in_window,
    line_is_right,
    next_check_delay,
    same_value,
    summary_window,
)
from meterbridge.domain.invoices import InvoiceLine, ServicePeriod


@given(st.integers(0, 2_000_000_000), st.integers(1, 40 * 86_400))
def test_summary_window_is_whole_minutes_covering_the_period(start: int, length: int) -> None:
    period = ServicePeriod(start=start, end=start + length)
    low, high = summary_window(period)
    assert (low % 60, high % 60) == (0, 0)
    assert low <= period.start < period.end <= high
    assert max(period.start - low, high - period.end) < 60
    assert in_window(period.end - 1, (low, high))  # the report's own timestamp


def test_previous_periods_report_can_share_an_unaligned_window() -> None:
    period = ServicePeriod(start=1_000_030, end=1_002_630)
    window = summary_window(period)
    assert in_window(period.start - 1, window)  # last period's `end - 1` timestamp


def test_expected_aggregate_follows_the_meter_formula() -> None:
    usage = [
        SentUsage(timestamp=10, value=Decimal("2.5"), sent_at=1),
        SentUsage(timestamp=20, value=Decimal(4), sent_at=2),
        SentUsage(timestamp=20, value=Decimal(7), sent_at=3),
    ]
    assert expected_aggregate("sum", usage) == Decimal("13.5")
    assert expected_aggregate("count", usage) == 3
    assert expected_aggregate("last", usage) == 7  # latest timestamp, then latest send
    assert expected_aggregate("last", []) == 0


def test_pre_aggregation_windows_keep_the_newest_event_of_each_window() -> None:
    hour = 3600
    usage = [
        SentUsage(timestamp=10 * hour + 5, value=Decimal(4), sent_at=1),
        SentUsage(timestamp=10 * hour + 5, value=Decimal(6), sent_at=2),  # a correction
        SentUsage(timestamp=11 * hour, value=Decimal(1), sent_at=3),  # the next hour
    ]
    assert expected_aggregate("sum", usage) == 11
    assert expected_aggregate("sum", usage, "hour") == 7  # the correction replaced the 4
    assert expected_aggregate("sum", usage, "day") == 1  # one day: the newest event only
    assert expected_aggregate("last", usage, "hour") == 1


def test_values_compare_at_stripes_precision() -> None:
    assert same_value(Decimal(str(0.1 + 0.2)), Decimal("0.3"))
    assert not same_value(Decimal("1200"), Decimal("1201"))
    assert same_value(Decimal("123456789012345"), Decimal("123456789012345.0"))


def test_line_verdict_uses_decimal_quantities_and_truncates_integer_ones() -> None:
    """An integer-only `quantity` is `quantity_decimal` truncated (docs/stripe.md#S-QTY-1)."""
    assert line_is_right(Decimal("0.75"), Decimal("0.75"), integer_quantity=False)
    assert line_is_right(Decimal(0), Decimal("0.75"), integer_quantity=True)
    assert not line_is_right(Decimal(1), Decimal("0.75"), integer_quantity=True)
    assert line_is_right(Decimal(4310), Decimal("4310.5"), integer_quantity=True)
    assert not line_is_right(Decimal(4311), Decimal("4310.5"), integer_quantity=True)
    assert line_is_right(Decimal(0), Decimal(-5), integer_quantity=False)  # bills as 0
    assert not line_is_right(Decimal(0), Decimal(1200), integer_quantity=False)


def test_line_reads_quantity_decimal_before_quantity() -> None:
    base = {"id": "il_1", "period": {"start": 0, "end": 60}}
    line = InvoiceLine.from_stripe({**base, "quantity": 1, "quantity_decimal": "0.75"})
    assert (line.quantity, line.quantity_is_integer) == (Decimal("0.75"), False)
    line = InvoiceLine.from_stripe({**base, "quantity": 3})
    assert (line.quantity, line.quantity_is_integer) == (Decimal(3), True)
    assert InvoiceLine.from_stripe(base).quantity is None


def test_checks_back_off_but_never_past_the_margin_or_the_hold_limit() -> None:
    delays = [next_check_delay(n, base_seconds=60, max_seconds=900) for n in range(1, 7)]
    assert delays == [60, 120, 240, 480, 900, 900]
    assert next_check_delay(5, base_seconds=60, max_seconds=5000) == SQS_MAX_DELAY_SECONDS
    assert next_check_delay(4, base_seconds=60, max_seconds=900, until_margin=100) == 100
    assert next_check_delay(4, base_seconds=60, max_seconds=900, until_hold_limit=30) == 30
    # A moment already passed does not shorten the wait to nothing.
    assert next_check_delay(1, base_seconds=60, max_seconds=900, until_margin=-10) == 60


def test_confirmation_is_at_risk_only_within_the_margin() -> None:
    assert confirmation_at_risk(invoice_now=1000, finalizes_at=1500, margin_seconds=600)
    assert not confirmation_at_risk(invoice_now=1000, finalizes_at=2000, margin_seconds=600)
    assert not confirmation_at_risk(invoice_now=1000, finalizes_at=None, margin_seconds=600)
