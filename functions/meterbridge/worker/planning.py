"""Planning an invoice's reports: which lines, which meters, which identifiers.

invoice → every line (paged) → each line's price → its meter → one PlannedReport per
customer, meter and service period of a meter meterbridge reports, with the shared meters
and the lines no report can reach (domain/reports.plan_invoice). Prices and meters are
cached by the Stripe adapter: they never change.
"""

from meterbridge.domain.eligibility import reported_line_meters
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, MeteredPrice
from meterbridge.domain.reports import InvoicePlan, plan_invoice
from meterbridge.worker.invoices import InvoiceReader
from meterbridge.worker.policy import ReportingPolicy
from meterbridge.worker.ports import Stripe


class InvoicePlanner:
    def __init__(self, stripe: Stripe, invoices: InvoiceReader, policy: ReportingPolicy):
        self._stripe = stripe
        self._invoices = invoices
        self._policy = policy

    def plan(self, invoice: Invoice) -> InvoicePlan:
        return plan_invoice(invoice, self.metered_lines(invoice), self._policy.grace_period_seconds)

    def metered_lines(self, invoice: Invoice) -> list[tuple[InvoiceLine, Meter]]:
        """Every line priced on a meter meterbridge reports, with its meter."""
        lines = self._invoices.lines(invoice)
        meter_by_line = {line.id: self.meter_of(line) for line in lines}
        return reported_line_meters(lines, meter_by_line, self._policy.meter_event_names)

    def meter_of(self, line: InvoiceLine) -> Meter | None:
        price = line.price
        if price is None and line.price_id is not None:
            price = MeteredPrice.from_stripe(self._stripe.price(line.price_id))
        if price is None or not price.is_metered or price.meter_id is None:
            return None
        return Meter.from_stripe(self._stripe.meter(price.meter_id))
