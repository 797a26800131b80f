"""Invoices as meterbridge reads them: only the fields it needs, in both API shapes.

Stripe's 2025-03-31.basil version moved the subscription to
`invoice.parent.subscription_details.subscription`, a line's subscription item to
`line.parent.subscription_item_details.subscription_item` and its price to
`line.pricing.price_details.price` (an id). Older versions carry `invoice.subscription`,
`line.subscription_item` and an expanded `line.price`. Endpoints keep the version they
were created with, so both shapes arrive in production and both are read here.
"""

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _dig(document: Any, *path: str) -> Any:
    """Follow `path` through nested mappings; None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


VERIFY_METADATA_KEY = "meterbridge_verify"


def is_verification(metadata: Any) -> bool:
    """Subscription metadata that `meterbridge verify` sets on what it creates."""
    return isinstance(metadata, Mapping) and bool(metadata.get(VERIFY_METADATA_KEY))


def _id_of(reference: Any) -> str | None:
    """Stripe references are ids, or the whole object when expanded."""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, Mapping) and isinstance(reference.get("id"), str):
        return str(reference["id"])
    return None


class ServicePeriod(BaseModel):
    """What a line bills for: `start` inclusive, `end` exclusive (unix seconds)."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int


class MeteredPrice(BaseModel):
    """The part of a price that matters here: is it metered, and by which meter."""

    model_config = ConfigDict(frozen=True)

    id: str
    meter_id: str | None = None
    usage_type: str | None = None

    @property
    def is_metered(self) -> bool:
        return self.usage_type == "metered" and self.meter_id is not None

    @classmethod
    def from_stripe(cls, price: Mapping[str, Any]) -> "MeteredPrice":
        return cls(
            id=str(price.get("id")),
            meter_id=_id_of(_dig(price, "recurring", "meter")),
            usage_type=_dig(price, "recurring", "usage_type"),
        )


class Meter(BaseModel):
    """A billing meter and the payload keys its events must use."""

    model_config = ConfigDict(frozen=True)

    id: str
    event_name: str
    customer_payload_key: str = "stripe_customer_id"
    value_payload_key: str = "value"
    status: str = "active"
    formula: str = "sum"  # default_aggregation.formula: sum | count | last
    event_time_window: str | None = None  # hour | day: pre-aggregation windows

    @classmethod
    def from_stripe(cls, meter: Mapping[str, Any]) -> "Meter":
        return cls(
            id=str(meter.get("id")),
            event_name=str(meter.get("event_name")),
            customer_payload_key=_dig(meter, "customer_mapping", "event_payload_key")
            or "stripe_customer_id",
            value_payload_key=_dig(meter, "value_settings", "event_payload_key") or "value",
            status=meter.get("status") or "active",
            formula=_dig(meter, "default_aggregation", "formula") or "sum",
            event_time_window=meter.get("event_time_window") or None,
        )


class InvoiceLine(BaseModel):
    """One invoice line: its own service period, subscription item and price."""

    model_config = ConfigDict(frozen=True)

    id: str
    period: ServicePeriod
    subscription_item_id: str | None = None
    price_id: str | None = None
    # Present when the price came expanded on the line (pre-basil shape): saves a fetch.
    price: MeteredPrice | None = None
    # What the line bills: `quantity_decimal` where Stripe sends it, else the integer
    # `quantity` (then `quantity_is_integer`); None when the line has no quantity.
    quantity: Decimal | None = None
    quantity_is_integer: bool = False

    @classmethod
    def from_stripe(cls, line: Mapping[str, Any]) -> "InvoiceLine":
        subscription_item = _dig(line, "parent", "subscription_item_details", "subscription_item")
        if subscription_item is None:
            subscription_item = line.get("subscription_item")
        price_reference = _dig(line, "pricing", "price_details", "price")
        if price_reference is None:
            price_reference = line.get("price")
        expanded = (
            MeteredPrice.from_stripe(price_reference)
            if isinstance(price_reference, Mapping) and "recurring" in price_reference
            else None
        )
        quantity, is_integer = _quantity_of(line)
        return cls(
            id=str(line.get("id")),
            period=ServicePeriod.model_validate(line.get("period")),
            subscription_item_id=_id_of(subscription_item),
            price_id=_id_of(price_reference),
            price=expanded,
            quantity=quantity,
            quantity_is_integer=is_integer,
        )


def _quantity_of(line: Mapping[str, Any]) -> tuple[Decimal | None, bool]:
    for key, is_integer in (("quantity_decimal", False), ("quantity", True)):
        raw = line.get(key)
        if raw is None or isinstance(raw, bool):
            continue
        try:
            return Decimal(str(raw)), is_integer
        except InvalidOperation:
            continue
    return None, False


class Invoice(BaseModel):
    """A draft invoice as `invoice.created` delivers it (first page of lines included)."""

    model_config = ConfigDict(frozen=True)

    id: str
    customer_id: str
    status: str | None = None
    billing_reason: str | None = None
    subscription_id: str | None = None
    created: int
    automatically_finalizes_at: int | None = None
    auto_advance: bool | None = None
    test_clock: str | None = None
    livemode: bool = False
    lines: tuple[InvoiceLine, ...] = ()
    lines_have_more: bool = False
    # `meterbridge verify` marks its own subscription: the stack it checks leaves its
    # invoices alone (no report, no ledger record, no metric).
    verification: bool = False

    @model_validator(mode="before")
    @classmethod
    def _read_stripe_shape(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or value.get("object") != "invoice":
            return value
        return cls.stripe_fields(value)

    @staticmethod
    def stripe_fields(invoice: Mapping[str, Any]) -> dict[str, Any]:
        subscription = _dig(invoice, "parent", "subscription_details", "subscription")
        if subscription is None:
            subscription = invoice.get("subscription")
        listed = invoice.get("lines")
        lines: Mapping[str, Any] = listed if isinstance(listed, Mapping) else {}
        return {
            "id": invoice.get("id"),
            "customer_id": _id_of(invoice.get("customer")),
            "status": invoice.get("status"),
            "billing_reason": invoice.get("billing_reason"),
            "subscription_id": _id_of(subscription),
            "created": invoice.get("created"),
            "automatically_finalizes_at": invoice.get("automatically_finalizes_at"),
            "auto_advance": invoice.get("auto_advance"),
            "test_clock": _id_of(invoice.get("test_clock")),
            "livemode": bool(invoice.get("livemode")),
            "verification": is_verification(
                _dig(invoice, "parent", "subscription_details", "metadata")
                or _dig(invoice, "subscription_details", "metadata")
            ),
            "lines": tuple(InvoiceLine.from_stripe(line) for line in lines.get("data") or ()),
            "lines_have_more": bool(lines.get("has_more")),
        }
