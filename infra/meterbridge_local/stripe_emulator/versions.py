"""API versions: objects are built in the newest shape and rendered down for older versions.

Stripe renders each answer in the request's `Stripe-Version` (else the account's default) and
each webhook in its endpoint's `api_version` (docs/stripe.md#S-VER-1). The emulator models the
one difference meterbridge depends on: invoice lines carry `quantity_decimal` only from
2026-03-25.dahlia; older versions show only the integer `quantity`, which is the decimal
truncated (docs/stripe.md#S-QTY-1, S-QTY-2).
"""

from __future__ import annotations

from typing import Any

DECIMAL_LINE_QUANTITY_SINCE = "2026-03-25"


def released(version: str) -> str:
    """The release date part of a version name ("2026-03-25.dahlia" → "2026-03-25")."""
    return version.split(".", 1)[0]


def render(value: Any, version: str) -> Any:
    """`value` as `version` shows it; the newest shape is returned as is (not copied)."""
    if released(version) >= DECIMAL_LINE_QUANTITY_SINCE:
        return value
    return _without_decimal_quantity(value)


def _without_decimal_quantity(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_decimal_quantity(item) for item in value]
    if not isinstance(value, dict):
        return value
    drop = value.get("object") == "line_item"
    return {
        key: _without_decimal_quantity(item)
        for key, item in value.items()
        if not (drop and key == "quantity_decimal")
    }
