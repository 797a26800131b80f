"""Planning an invoice's reports: which lines, which meters, which identifiers.

invoice → every line (paged) → each line's price → its meter → one PlannedReport per
(subscription item, service period) of a meter meterbridge reports (domain/reports.py).
Prices and meters are cached by the Stripe adapter: they never change.
"""

from meterbridge.domain.eligibility import reported_line_meters
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, MeteredPrice
from meterbridge.domain.reports import PlannedReport, plan_reports
from meterbridge.worker.invoices import InvoiceReader
from meterbridge.worker.policy import ReportingPolicy
from meterbridge.worker.ports import Stripe


class InvoicePlanner:
    def __init__(self, stripe: Stripe, invoices: InvoiceReader, policy: ReportingPolicy):
        self._stripe = stripe
        self._invoices = invoices
        self._policy = policy

    def plan(self, invoice: Invoice) -> list[PlannedReport]:
        lines = self._invoices.lines(invoice)
        meter_by_line = {line.id: self.meter_of(line) for line in lines}
        selected = reported_line_meters(lines, meter_by_line, self._policy.meter_event_names)
        return plan_reports(invoice, selected, self._policy.grace_period_seconds)

    def meter_of(self, line: InvoiceLine) -> Meter | None:
        price = line.price
        if price is None and line.price_id is not None:
            price = MeteredPrice.from_stripe(self._stripe.price(line.price_id))
        if price is None or not price.is_metered or price.meter_id is None:
            return None
        return Meter.from_stripe(self._stripe.meter(price.meter_id))
