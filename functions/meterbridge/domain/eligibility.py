"""Which invoices and lines meterbridge reports usage for."""

from collections.abc import Collection, Mapping

from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter

# Without BILLING_REASONS, every draft that carries a line priced on a meter is reported,
# except these: a subscription's first invoice finalizes at once and bills no past usage,
# a threshold invoice is triggered by usage already in Stripe (docs/stripe.md#S-THRESH-1),
# and `upcoming` is only ever a preview.
EXCLUDED_BILLING_REASONS = frozenset({"subscription_create", "subscription_threshold", "upcoming"})


def ineligibility_reason(invoice: Invoice, billing_reasons: Collection[str]) -> str | None:
    """Why this invoice gets no usage report, or None when it should get one.

    Only a draft can still take usage: a finalized invoice is frozen. `billing_reasons`
    narrows the reasons reported (empty: any but EXCLUDED_BILLING_REASONS).
    """
    if invoice.status != "draft":
        return f"invoice status is {invoice.status!r}, not 'draft'"
    if invoice.subscription_id is None:
        return "not a subscription invoice"
    if billing_reasons and invoice.billing_reason not in billing_reasons:
        allowed = ", ".join(sorted(billing_reasons))
        return f"billing_reason {invoice.billing_reason!r} is not one of: {allowed}"
    if not billing_reasons and invoice.billing_reason in EXCLUDED_BILLING_REASONS:
        return f"billing_reason {invoice.billing_reason!r} carries no usage to report"
    return None


def reported_line_meters(
    lines: Collection[InvoiceLine],
    meter_by_line: Mapping[str, Meter | None],
    meter_event_names: Collection[str] | None,
) -> list[tuple[InvoiceLine, Meter]]:
    """The lines priced on a meter meterbridge reports, each with its meter.

    `meter_by_line` maps line id to the price's meter (None when not metered); every meter
    is reported unless `meter_event_names` narrows it. Lines without a subscription item
    are kept: the plan says why they cannot be reported (domain/reports.plan_invoice).
    """
    selected = []
    for line in lines:
        meter = meter_by_line.get(line.id)
        if meter is None:
            continue
        if meter_event_names and meter.event_name not in meter_event_names:
            continue
        selected.append((line, meter))
    return selected
