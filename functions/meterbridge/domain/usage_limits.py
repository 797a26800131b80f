"""What a usage source's answer may carry on: a plausible value, and short, scrubbed text.

Stripe takes any decimal of up to 15 significant digits, negatives included (docs/stripe.md#S-ME-3,
"Meter events"), so `-5`, `1e20` or `1e400` from a broken usage source would be billed.
Negative values are corrections only some products make on purpose; a ceiling says what no
customer can plausibly use in one period, per meter or for all.

A usage source's error page ends up in the ledger and the logs as the report's reason; one
contained a customer's e-mail address (issue 13). `scrub_usage_source_text` keeps the first
200 characters with e-mail addresses, tokens and long numbers blanked out.

Pure: no settings reads.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from meterbridge.errors import PermanentError

ANY_METER = "*"


class ImplausibleUsageValue(PermanentError):
    """The usage source answered a value outside the range allowed for the meter."""


def check_usage_value(
    value: Decimal, *, meter_event_name: str, ceiling: Decimal | None, allow_negative: bool
) -> None:
    """Raise ImplausibleUsageValue unless `value` is finite, not negative (unless allowed)
    and not above `ceiling` (None: no ceiling)."""
    if not value.is_finite():
        raise ImplausibleUsageValue(
            f"usage value {_shown(value)} for meter {meter_event_name} is not a finite number"
        )
    if value < 0 and not allow_negative:
        raise ImplausibleUsageValue(
            f"usage value {_shown(value)} for meter {meter_event_name} is negative; the lowest"
            " allowed is 0 (negative usage is refused unless allowed by configuration)"
        )
    if ceiling is not None and value > ceiling:
        raise ImplausibleUsageValue(
            f"usage value {_shown(value)} for meter {meter_event_name} is above its ceiling"
            f" {_shown(ceiling)} (USAGE_VALUE_CEILING); check the usage source, or raise the"
            " ceiling if the value is real"
        )


def _shown(value: Decimal) -> str:
    """The value as text short enough for a log line and a ledger item (1e400 has 401 digits
    written out)."""
    text = str(value)
    return text if len(text) <= 40 else f"{value:.6E}"


@dataclass(frozen=True)
class UsageValueCeilings:
    """Ceilings per meter event name, and for every other meter (`default`; None: none)."""

    per_meter: Mapping[str, Decimal] = field(default_factory=dict)
    default: Decimal | None = None

    def for_meter(self, meter_event_name: str) -> Decimal | None:
        return self.per_meter.get(meter_event_name, self.default)


def parse_usage_value_ceilings(text: str) -> UsageValueCeilings:
    """Read a setting like `1e12` (every meter) or `api_requests=1e9,storage_gb=1e6,*=1e12`
    (per meter; `*` or a bare number: every meter not named). Empty: no ceiling.
    Raises ValueError saying which part is wrong."""
    per_meter: dict[str, Decimal] = {}
    default: Decimal | None = None
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        name, separator, number = part.rpartition("=")
        name = name.strip() if separator else ANY_METER
        if not name:
            raise ValueError(f"{part!r}: expected METER=NUMBER, *=NUMBER or NUMBER")
        ceiling = _ceiling(number.strip(), part)
        if name == ANY_METER:
            if default is not None:
                raise ValueError(f"{part!r}: the ceiling for every other meter is given twice")
            default = ceiling
        elif name in per_meter:
            raise ValueError(f"{part!r}: meter {name} is given twice")
        else:
            per_meter[name] = ceiling
    return UsageValueCeilings(per_meter=per_meter, default=default)


def _ceiling(number: str, part: str) -> Decimal:
    try:
        ceiling = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"{part!r}: {number!r} is not a number") from None
    if not ceiling.is_finite() or ceiling <= 0:
        raise ValueError(f"{part!r}: a ceiling must be a finite number above 0")
    return ceiling


ERROR_TEXT_LIMIT = 200

_SCRUBBERS = (
    # e-mail addresses
    (re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+"), "[email]"),
    # Authorization values: "Bearer abc…", "Basic …"
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[\w.~+/=-]+"), r"\1\2[redacted]"),
    # key=value / "key": "value" secrets
    (
        re.compile(
            r"(?i)\b((?:api[_-]?)?key|token|secret|password|passwd|authorization|credentials?)"
            r"(\"?\s*[:=]\s*\"?)[^\s\",;&]+"
        ),
        r"\1\2[redacted]",
    ),
    # JSON web tokens, Stripe-style keys (sk_live_…, rk_test_…, whsec_…)
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), "[token]"),
    (re.compile(r"\b(?:sk|rk|pk|whsec)_\w{8,}"), "[token]"),
    # card, account, phone and other long numbers (9+ digits, spaces or dashes between)
    (re.compile(r"(?<!\w)\d(?:[ -]?\d){8,}(?!\w)"), "[number]"),
)


def scrub_usage_source_text(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """`text` from a usage source (an error page, an exception message) made fit for the
    ledger and logs: one line, e-mail addresses, tokens, secrets and long numbers replaced,
    at most `limit` characters."""
    text = " ".join(text[: limit * 10].split())  # one line; enough left to cut to `limit`
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
