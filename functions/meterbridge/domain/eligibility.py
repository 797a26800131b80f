"""Which invoices and lines meterbridge reports usage for."""

from collections.abc import Collection, Mapping

from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter

DEFAULT_BILLING_REASONS = frozenset({"subscription_cycle"})


def ineligibility_reason(invoice: Invoice, billing_reasons: Collection[str]) -> str | None:
    """Why this invoice gets no usage report, or None when it should get one.

    Only a subscription's draft renewal can still take usage for the period just ended:
    a finalized invoice is frozen, and the first invoice of a subscription finalizes at once.
    """
    if invoice.status != "draft":
        return f"invoice status is {invoice.status!r}, not 'draft'"
    if invoice.subscription_id is None:
        return "not a subscription invoice"
    if invoice.billing_reason not in billing_reasons:
        allowed = ", ".join(sorted(billing_reasons))
        return f"billing_reason {invoice.billing_reason!r} is not one of: {allowed}"
    return None


def reported_line_meters(
    lines: Collection[InvoiceLine],
    meter_by_line: Mapping[str, Meter | None],
    meter_event_names: Collection[str] | None,
) -> list[tuple[InvoiceLine, Meter]]:
    """The lines meterbridge reports, each with its meter.

    A line counts when it belongs to a subscription item, its price is metered
    (`meter_by_line` maps line id to the price's meter, None when not metered) and the
    meter is one meterbridge reports: every meter, unless `meter_event_names` narrows it.
    """
    selected = []
    for line in lines:
        meter = meter_by_line.get(line.id)
        if meter is None or line.subscription_item_id is None:
            continue
        if meter_event_names and meter.event_name not in meter_event_names:
            continue
        selected.append((line, meter))
    return selected
