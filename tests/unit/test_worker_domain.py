"""Pure worker rules: invoice shapes, eligibility, identifiers, the timestamp rule, values."""

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.adapters.rate_limiter import AdaptiveRateLimiter
from meterbridge.domain.eligibility import ineligibility_reason, reported_line_meters
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, MeteredPrice, ServicePeriod
from meterbridge.domain.reports import (
    IDENTIFIER_MAX_LENGTH,
    STRIPE_MAX_FUTURE_SECONDS,
    STRIPE_MAX_PAST_SECONDS,
    InvalidUsageValue,
    TimestampOutsideWindow,
    finalizes_at,
    is_late,
    meter_event_timestamp,
    plan_invoice,
    refusal,
    report_identifier,
    stripe_value_text,
    usage_value,
)
from meterbridge.errors import PermanentError

NOW = 1_760_000_000
PERIOD = ServicePeriod(start=NOW - 30 * 86400, end=NOW - 3600)


def basil_invoice(**overrides: Any) -> dict[str, Any]:
    """Shape of API version 2025-03-31.basil and later."""
    invoice: dict[str, Any] = {
        "object": "invoice",
        "id": "in_basil",
        "customer": "cus_1",
        "status": "draft",
        "billing_reason": "subscription_cycle",
        "created": NOW - 3600,
        "automatically_finalizes_at": NOW,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1"},
        },
        "lines": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "object": "line_item",
                    "id": "il_1",
                    "period": {"start": PERIOD.start, "end": PERIOD.end},
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {
                            "subscription": "sub_1",
                            "subscription_item": "si_1",
                        },
                    },
                    "pricing": {"type": "price_details", "price_details": {"price": "price_m"}},
                }
            ],
        },
    }
    invoice.update(overrides)
    return invoice


def legacy_invoice(**overrides: Any) -> dict[str, Any]:
    """Shape before basil: top-level subscription, expanded price on lines."""
    invoice: dict[str, Any] = {
        "object": "invoice",
        "id": "in_legacy",
        "customer": "cus_1",
        "status": "draft",
        "billing_reason": "subscription_cycle",
        "created": NOW - 3600,
        "subscription": "sub_1",
        "lines": {
            "object": "list",
            "has_more": True,
            "data": [
                {
                    "object": "line_item",
                    "id": "il_2",
                    "type": "subscription",
                    "subscription": "sub_1",
                    "subscription_item": "si_2",
                    "period": {"start": PERIOD.start, "end": PERIOD.end},
                    "price": {
                        "id": "price_m",
                        "object": "price",
                        "recurring": {"usage_type": "metered", "meter": "mtr_1"},
                    },
                }
            ],
        },
    }
    invoice.update(overrides)
    return invoice


def test_both_api_shapes_read_subscription_item_price_and_line_period() -> None:
    basil = Invoice.model_validate(basil_invoice())
    legacy = Invoice.model_validate(legacy_invoice())
    assert basil.subscription_id == legacy.subscription_id == "sub_1"
    assert basil.lines[0].subscription_item_id == "si_1"
    assert basil.lines[0].price_id == "price_m"
    assert basil.lines[0].price is None
    assert legacy.lines[0].subscription_item_id == "si_2"
    assert legacy.lines[0].price == MeteredPrice(
        id="price_m", meter_id="mtr_1", usage_type="metered"
    )
    assert legacy.lines_have_more
    assert not basil.lines_have_more
    assert basil.lines[0].period == PERIOD  # the line's period, not the invoice's


@pytest.mark.parametrize(
    ("overrides", "reason_part"),
    [
        ({"status": "open"}, "not 'draft'"),
        ({"billing_reason": "subscription_create"}, "billing_reason"),
        ({"parent": None}, "not a subscription invoice"),
    ],
)
def test_ineligible_invoices_say_why(overrides: dict[str, Any], reason_part: str) -> None:
    invoice = Invoice.model_validate(basil_invoice(**overrides))
    reason = ineligibility_reason(invoice, {"subscription_cycle"})
    assert reason is not None
    assert reason_part in reason


def test_billing_reasons_are_configurable() -> None:
    invoice = Invoice.model_validate(legacy_invoice(billing_reason="subscription_update"))
    assert ineligibility_reason(invoice, {"subscription_cycle"}) is not None
    assert ineligibility_reason(invoice, {"subscription_cycle", "subscription_update"}) is None


@pytest.mark.parametrize(
    ("billing_reason", "reported"),
    [
        ("subscription_cycle", True),
        ("subscription_update", True),  # a metered price removed or cancelled mid-period
        ("manual", True),
        ("subscription_create", False),  # finalizes at once; no past usage
        ("subscription_threshold", False),  # triggered by usage already in Stripe
        ("upcoming", False),
    ],
)
def test_by_default_any_draft_with_a_metered_line_is_reported(
    billing_reason: str, reported: bool
) -> None:
    invoice = Invoice.model_validate(basil_invoice(billing_reason=billing_reason))
    assert (ineligibility_reason(invoice, frozenset()) is None) is reported


def test_only_metered_lines_of_reported_meters_are_selected() -> None:
    api = Meter(id="mtr_api", event_name="api_calls")
    storage = Meter(id="mtr_gb", event_name="storage_gb")
    lines = [
        InvoiceLine(id="a", period=PERIOD, subscription_item_id="si_a"),
        InvoiceLine(id="b", period=PERIOD, subscription_item_id="si_b"),
        InvoiceLine(id="c", period=PERIOD, subscription_item_id="si_c"),  # licensed
        InvoiceLine(id="d", period=PERIOD, subscription_item_id=None),  # one-off item
    ]
    meters = {"a": api, "b": storage, "c": None, "d": api}
    # The one-off item stays: the plan says why no report can reach it.
    assert [x[0].id for x in reported_line_meters(lines, meters, None)] == ["a", "b", "d"]
    assert [x[0].id for x in reported_line_meters(lines, meters, {"storage_gb"})] == ["b"]


def test_meter_reads_custom_payload_keys() -> None:
    meter = Meter.from_stripe(
        {
            "id": "mtr",
            "event_name": "calls",
            "customer_mapping": {"event_payload_key": "customer", "type": "by_id"},
            "value_settings": {"event_payload_key": "count"},
        }
    )
    assert (meter.customer_payload_key, meter.value_payload_key) == ("customer", "count")


ids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=200)
instants = st.integers(min_value=0, max_value=4_000_000_000)


@given(
    customer=st.from_regex(r"cus_[A-Za-z0-9]{1,120}", fullmatch=True),
    meter=st.from_regex(r"mtr_[A-Za-z0-9]{1,60}", fullmatch=True),
    start=instants,
    length=instants,
)
def test_identifier_is_deterministic_and_fits_stripe(
    customer: str, meter: str, start: int, length: int
) -> None:
    period = ServicePeriod(start=start, end=start + length)
    identifier = report_identifier(customer, meter, period)
    same = report_identifier(customer, meter, ServicePeriod(start=start, end=start + length))
    assert identifier == same
    assert len(identifier) <= IDENTIFIER_MAX_LENGTH


@given(customer=ids, meter=ids, start=instants, revision=st.integers(0, 1000))
def test_identifier_changes_with_every_input(
    customer: str, meter: str, start: int, revision: int
) -> None:
    period = ServicePeriod(start=start, end=start + 100)
    identifier = report_identifier(customer, meter, period, revision)
    assert identifier != report_identifier(customer + "x", meter, period, revision)
    assert identifier != report_identifier(customer, meter + "x", period, revision)
    later = ServicePeriod(start=start, end=start + 101)
    assert identifier != report_identifier(customer, meter, later, revision)
    assert identifier != report_identifier(customer, meter, period, revision + 1)


def test_timestamp_is_last_second_of_a_past_period() -> None:
    assert meter_event_timestamp(PERIOD, NOW) == PERIOD.end - 1


def test_timestamp_is_now_while_the_period_runs() -> None:
    running = ServicePeriod(start=NOW - 10, end=NOW + 10)
    assert meter_event_timestamp(running, NOW) == NOW
    assert meter_event_timestamp(ServicePeriod(start=NOW, end=NOW + 10), NOW) == NOW


def test_period_end_is_exclusive() -> None:
    assert meter_event_timestamp(ServicePeriod(start=NOW - 100, end=NOW), NOW) == NOW - 1


def test_oldest_accepted_edge_and_one_second_beyond() -> None:
    edge = ServicePeriod(start=0, end=NOW - STRIPE_MAX_PAST_SECONDS + 1)
    assert meter_event_timestamp(edge, NOW) == NOW - STRIPE_MAX_PAST_SECONDS
    beyond = ServicePeriod(start=0, end=NOW - STRIPE_MAX_PAST_SECONDS)
    with pytest.raises(TimestampOutsideWindow, match="older than 35 days"):
        meter_event_timestamp(beyond, NOW)


def test_future_period_within_five_minutes_uses_its_start() -> None:
    soon = ServicePeriod(start=NOW + STRIPE_MAX_FUTURE_SECONDS, end=NOW + 86400)
    assert meter_event_timestamp(soon, NOW) == soon.start


def test_test_clock_period_in_the_real_future_fails_with_advice() -> None:
    future = ServicePeriod(start=NOW + STRIPE_MAX_FUTURE_SECONDS + 1, end=NOW + 30 * 86400)
    with pytest.raises(TimestampOutsideWindow) as raised:
        meter_event_timestamp(future, NOW, test_clock="clock_1")
    assert isinstance(raised.value, PermanentError)
    assert "clock_1" in str(raised.value)
    assert "frozen_time" in str(raised.value)


@given(
    start=instants, length=st.integers(0, 90 * 86400), offset=st.integers(-100 * 86400, 100 * 86400)
)
def test_timestamp_rule_always_lands_inside_period_and_window(
    start: int, length: int, offset: int
) -> None:
    period = ServicePeriod(start=start, end=start + length)
    now = start + offset
    try:
        timestamp = meter_event_timestamp(period, now)
    except TimestampOutsideWindow:
        last = max(period.start, period.end - 1)
        assert (
            period.start > now + STRIPE_MAX_FUTURE_SECONDS or last < now - STRIPE_MAX_PAST_SECONDS
        )
        return
    assert period.start <= timestamp <= max(period.start, period.end - 1)
    assert now - STRIPE_MAX_PAST_SECONDS <= timestamp <= now + STRIPE_MAX_FUTURE_SECONDS
    if period.start <= now:
        assert timestamp <= now


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12.50", "12.5"), (3, "3"), ("1E+3", "1000"), ("0", "0"), ("-2", "-2"), ("0.000", "0")],
)
def test_usage_values_become_plain_decimal_text(raw: object, expected: str) -> None:
    assert stripe_value_text(usage_value(raw)) == expected


@pytest.mark.parametrize("raw", ["abc", "NaN", "Infinity", None, True, "1234567890123456", [1]])
def test_bad_usage_values_are_permanent(raw: object) -> None:
    with pytest.raises(InvalidUsageValue):
        usage_value(raw)


def test_fifteen_significant_digits_are_accepted() -> None:
    assert usage_value("123456789012.345") == Decimal("123456789012.345")
    assert usage_value("1000000000000000000") == Decimal("1e18")  # one significant digit


def test_deadline_prefers_stripe_schedule_then_grace_period() -> None:
    scheduled = Invoice.model_validate(basil_invoice())
    unscheduled = Invoice.model_validate(legacy_invoice())
    assert finalizes_at(scheduled, 3600) == NOW
    assert finalizes_at(unscheduled, 7200) == NOW - 3600 + 7200
    assert is_late(NOW + 1, NOW)
    assert not is_late(NOW, NOW)


def test_repeated_lines_of_one_item_and_period_make_one_report() -> None:
    invoice = Invoice.model_validate(basil_invoice())
    meter = Meter(id="mtr", event_name="calls")
    line = invoice.lines[0]
    plan = plan_invoice(invoice, [(line, meter), (line, meter)], 3600)
    [report] = plan.reports
    assert report.identifier == report_identifier("cus_1", "mtr", PERIOD)
    assert report.finalizes_at == NOW
    assert plan.shared == []  # the same line twice is not two lines


def _line(line_id: str, period: ServicePeriod, item: str | None = "si") -> InvoiceLine:
    return InvoiceLine(id=line_id, period=period, subscription_item_id=item and f"{item}_{line_id}")


def test_two_lines_on_one_meter_are_one_report_and_a_shared_meter() -> None:
    invoice = Invoice.model_validate(basil_invoice())
    meter = Meter(id="mtr", event_name="calls")
    other = Meter(id="mtr_other", event_name="storage")
    lines = [_line("a", PERIOD), _line("b", PERIOD), _line("c", PERIOD)]
    plan = plan_invoice(invoice, [(lines[0], meter), (lines[1], meter), (lines[2], other)], 3600)
    assert sorted(len(r.line_ids) for r in plan.reports) == [1, 2]
    [shared] = plan.shared
    assert (shared.meter.id, shared.line_ids) == ("mtr", ("a", "b"))
    assert "priced on 2 lines" in shared.describe()


def test_overlapping_periods_on_one_meter_are_shared_adjacent_ones_are_not() -> None:
    invoice = Invoice.model_validate(basil_invoice())
    meter = Meter(id="mtr", event_name="calls")
    first = ServicePeriod(start=PERIOD.start, end=PERIOD.start + 1000)
    overlapping = ServicePeriod(start=PERIOD.start + 500, end=PERIOD.start + 1500)
    adjacent = ServicePeriod(start=PERIOD.start + 1000, end=PERIOD.start + 2000)
    shared = plan_invoice(
        invoice, [(_line("a", first), meter), (_line("b", overlapping), meter)], 0
    )
    assert [s.line_ids for s in shared.shared] == [("a", "b")]
    assert len(shared.reports) == 2
    apart = plan_invoice(invoice, [(_line("a", first), meter), (_line("b", adjacent), meter)], 0)
    assert apart.shared == []


def test_count_meters_are_refused_with_the_meter_and_formula_named() -> None:
    invoice = Invoice.model_validate(basil_invoice())
    counting = Meter(id="mtr_count", event_name="logins", formula="count")
    plan = plan_invoice(invoice, [(invoice.lines[0], counting)], 3600)
    assert plan.reports == []
    [refused] = plan.unreported
    assert "logins" in refused.reason
    assert "'count'" in refused.reason
    assert refusal(Meter(id="m", event_name="x", formula="last")) is None


def test_lines_no_report_can_reach_are_named_not_reported() -> None:
    invoice = Invoice.model_validate(basil_invoice())
    meter = Meter(id="mtr", event_name="calls")
    invoice_item = _line("item", PERIOD, item=None)
    future = _line("future", ServicePeriod(start=NOW - 100, end=NOW + 86_400))
    plan = plan_invoice(invoice, [(invoice_item, meter), (future, meter)], 3600)
    assert plan.reports == []
    reasons = {u.line_id: u.reason for u in plan.unreported}
    assert "invoice item" in reasons["item"]
    assert "had not ended" in reasons["future"]


# --- the adaptive meter-event rate limiter (fake clock: no waiting) ----------------------


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _limiter(rate: float, fake: _FakeTime) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(rate, clock=fake.clock, sleep=fake.sleep)


def test_limiter_spaces_requests_evenly() -> None:
    fake = _FakeTime()
    limiter = _limiter(10, fake)
    for _ in range(11):
        limiter.acquire()
    assert 0.9 <= fake.now <= 1.0  # 11 requests at 10/s (growing 10 %/s): about 1 s


def test_limiter_cuts_once_per_overload_below_what_was_accepted() -> None:
    fake = _FakeTime()
    limiter = _limiter(60, fake)
    for _ in range(20):
        limiter.acquire()
        limiter.on_success()
    fake.now = 0.99  # the overload shows a second after the first request
    for _ in range(10):  # the in-flight requests of one overload all answer 429
        limiter.on_rate_limited()
    # Accepted in the last second (20 in 0.99 s), not the 60/s asked for.
    ceiling = limiter.ceiling
    assert ceiling == pytest.approx(20, rel=0.02)
    assert ceiling is not None
    assert limiter.rate == pytest.approx(0.8 * ceiling)  # cut once, to 0.8 of it
    assert limiter.rate_limited == 10


def test_limiter_recovers_fast_to_the_ceiling_then_probes_slowly() -> None:
    fake = _FakeTime()
    limiter = _limiter(20, fake)
    for _ in range(20):
        limiter.acquire()
        limiter.on_success()
    limiter.on_rate_limited()
    ceiling = limiter.ceiling
    assert ceiling is not None
    assert 19 <= ceiling <= 22  # 20 requests in a bit under a second
    fake.now += 2
    assert 0.94 * ceiling <= limiter.rate <= 0.97 * ceiling  # back near 95 % within ~1 s
    fake.now += 10
    assert limiter.rate <= ceiling * 1.25  # then only +2 % of the ceiling per second
