"""The usage value range check and the USAGE_VALUE_CEILING setting's parser (pure)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.domain.usage_limits import (
    ImplausibleUsageValue,
    UsageValueCeilings,
    check_usage_value,
    parse_usage_value_ceilings,
    scrub_usage_source_text,
)
from meterbridge.errors import PermanentError

CEILING = Decimal("1e12")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-5", "usage value -5 for meter api_requests is negative; the lowest allowed is 0"),
        ("1e20", "usage value 1E+20 for meter api_requests is above its ceiling 1E+12"),
        ("1e400", "usage value 1E+400 for meter api_requests is above its ceiling 1E+12"),
        ("1" + "0" * 60, "usage value 1.000000E+60 for meter api_requests is above its ceiling"),
        ("Infinity", "usage value Infinity for meter api_requests is not a finite number"),
        ("NaN", "usage value NaN for meter api_requests is not a finite number"),
    ],
)
def test_the_values_found_by_the_fuzz_run_are_refused_naming_meter_value_and_limit(
    value: str, expected: str
) -> None:
    with pytest.raises(ImplausibleUsageValue) as refused:
        check_usage_value(
            Decimal(value), meter_event_name="api_requests", ceiling=CEILING, allow_negative=False
        )
    assert isinstance(refused.value, PermanentError)  # the worker's retry logic reads the type
    assert str(refused.value).startswith(expected)


def test_negative_values_pass_only_when_allowed_and_the_ceiling_is_inclusive() -> None:
    check_usage_value(Decimal("-5"), meter_event_name="m", ceiling=CEILING, allow_negative=True)
    check_usage_value(CEILING, meter_event_name="m", ceiling=CEILING, allow_negative=False)
    check_usage_value(Decimal("-0"), meter_event_name="m", ceiling=None, allow_negative=False)
    check_usage_value(Decimal("1e400"), meter_event_name="m", ceiling=None, allow_negative=False)


@given(
    value=st.decimals(allow_nan=True, allow_infinity=True),
    ceiling=st.none() | st.decimals(min_value=Decimal("1e-6"), max_value=Decimal("1e30")),
    allow_negative=st.booleans(),
)
def test_a_value_passes_exactly_when_finite_in_range_and_under_the_ceiling(
    value: Decimal, ceiling: Decimal | None, allow_negative: bool
) -> None:
    plausible = (
        value.is_finite()
        and (allow_negative or value >= 0)
        and (ceiling is None or value <= ceiling)
    )
    try:
        check_usage_value(
            value, meter_event_name="m", ceiling=ceiling, allow_negative=allow_negative
        )
    except ImplausibleUsageValue:
        assert not plausible
    else:
        assert plausible


def test_ceiling_setting_global_per_meter_and_default() -> None:
    assert parse_usage_value_ceilings("") == UsageValueCeilings()
    assert parse_usage_value_ceilings("  ").for_meter("api_requests") is None
    everything = parse_usage_value_ceilings("1e12")
    assert everything.for_meter("api_requests") == Decimal("1e12")
    per_meter = parse_usage_value_ceilings("api_requests=1e9, storage_gb = 1e6 ,*=1e12")
    assert per_meter.for_meter("api_requests") == Decimal("1e9")
    assert per_meter.for_meter("storage_gb") == Decimal("1e6")
    assert per_meter.for_meter("anything_else") == Decimal("1e12")
    only_named = parse_usage_value_ceilings("api_requests=1000")
    assert only_named.for_meter("api_requests") == Decimal(1000)
    assert only_named.for_meter("storage_gb") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("api=lots", "'lots' is not a number"),
        ("api=0", "above 0"),
        ("api=-1", "above 0"),
        ("api=Infinity", "finite"),
        ("=5", "expected METER=NUMBER"),
        ("api=1,api=2", "meter api is given twice"),
        ("1e12,*=1e9", "given twice"),
    ],
)
def test_ceiling_setting_errors_say_which_part_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_usage_value_ceilings(text)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1e20"), places=3),
        max_size=5,
    ),
    st.none() | st.decimals(min_value=Decimal(1), max_value=Decimal("1e15"), places=0),
)
def test_ceiling_setting_round_trips(
    per_meter: dict[str, Decimal], default: Decimal | None
) -> None:
    parts = [f"{name}={ceiling}" for name, ceiling in per_meter.items()]
    if default is not None:
        parts.append(f"*={default}")
    parsed = parse_usage_value_ceilings(",".join(parts))
    assert parsed == UsageValueCeilings(per_meter=per_meter, default=default)


# --- usage-source text on its way into the ledger and the logs ---------------------------


def test_usage_source_text_is_scrubbed_of_addresses_tokens_and_long_numbers() -> None:
    text = (
        "Customer jane.doe+billing@example.co.uk not found.\n"
        "Card 4242 4242 4242 4242, account 000123456789, IBAN-ish 1234-5678-9012.\n"
        'Headers: Authorization: Bearer abc.DEF-123_xyz; body {"api_key": "AKIA1234"}\n'
        "retry with token=s3cr3t&x=1 or sk_live_51HxYzAbCdEfGh, jwt eyJhbGc.eyJzdWI.sig"
    )
    scrubbed = scrub_usage_source_text(text, limit=1000)
    for leaked in (
        "jane",
        "example.co.uk",
        "4242",
        "123456789",
        "9012",
        "abc.DEF",
        "AKIA1234",
        "s3cr3t",
        "sk_live",
        "eyJ",
    ):
        assert leaked not in scrubbed
    assert scrubbed.startswith("Customer [email] not found. Card [number], account [number]")
    assert "\n" not in scrubbed


def test_usage_source_text_keeps_short_numbers_and_is_cut_to_the_limit() -> None:
    assert scrub_usage_source_text("HTTP 503 after 30 s, 2026-11-30") == (
        "HTTP 503 after 30 s, 2026-11-30"
    )
    cut = scrub_usage_source_text("x" * 5000)
    assert len(cut) == 200
    assert cut.endswith("…")


@given(st.text(max_size=3000))
def test_scrubbed_text_is_one_line_of_at_most_200_characters(text: str) -> None:
    scrubbed = scrub_usage_source_text(text)
    assert len(scrubbed) <= 200
    assert not any(character in scrubbed for character in "\n\r\t")
