"""Reading invoices from Stripe as the worker's steps need them: every line, and 'now' as
the invoice sees it (a test clock runs weeks behind real time)."""

from typing import Any

from pydantic import ValidationError

from meterbridge.domain.invoices import Invoice, InvoiceLine
from meterbridge.errors import PermanentError
from meterbridge.worker.ports import Stripe


def parse_invoice(document: dict[str, Any]) -> Invoice:
    try:
        return Invoice.model_validate(document)
    except ValidationError as error:
        raise PermanentError(f"invoice {document.get('id')} is not readable: {error}") from None


def invoice_of_event(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The invoice a snapshot event carries (`data.object`)."""
    document = (event.get("data") or {}).get("object")
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise PermanentError(f"event {event_id} carries no invoice")
    return document


class InvoiceReader:
    def __init__(self, stripe: Stripe):
        self._stripe = stripe

    def read(self, invoice_id: str) -> Invoice:
        return parse_invoice(self._stripe.invoice(invoice_id))

    def lines(self, invoice: Invoice) -> list[InvoiceLine]:
        """Every line: the event embeds the first page, the rest are fetched page by page."""
        lines = list(invoice.lines)
        if invoice.lines_have_more:
            after = lines[-1].id if lines else None
            lines += [
                InvoiceLine.from_stripe(x) for x in self._stripe.invoice_lines(invoice.id, after)
            ]
        return lines

    def now(self, invoice: Invoice, now: int) -> int:
        """'Now' as the invoice sees it: its test clock's frozen time, else real time."""
        if invoice.test_clock:
            return self._stripe.test_clock_time(invoice.test_clock)
        return now
