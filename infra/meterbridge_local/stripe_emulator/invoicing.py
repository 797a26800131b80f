"""Invoices and invoice items: lines, pricing from the meters, finalization, previews.

Lines keep private bookkeeping (keys starting with `_`, never served): `_kind` says how a line
is priced — "metered" (the meter's aggregate over the line's period, recomputed until the
invoice finalizes), "licensed" (`_quantity` units) or "fixed" (an invoice item's amount,
fixed when the item was created); `_billed` is metered usage of the period an earlier
threshold invoice already billed.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

from . import objects
from .config import EmulatorConfig
from .errors import invalid, required
from .metering import Metering
from .store import Obj, Store, customer_now, paginate, public
from .webhooks import Events
from .wire import as_bool, as_int, merge_metadata

EMBEDDED_LINES = 10  # Stripe embeds the first 10 lines; the rest via /lines


def set_quantity(line: Obj, quantity: Decimal) -> None:
    """`quantity_decimal` and the integer `quantity`, which is the decimal truncated, not
    rounded (docs/stripe.md#S-QTY-1): 4310.5 shows as 4310."""
    line["quantity_decimal"] = format(quantity.normalize(), "f")
    line["quantity"] = int(quantity)


def amount_of(quantity: Decimal, price: Obj) -> int:
    """Half-up rounding of the amount to the cent is an assumption (docs/stripe.md#S-QTY-3)."""
    unit = Decimal(price.get("unit_amount_decimal") or 0)
    return int((quantity * unit).to_integral_value(ROUND_HALF_UP))


def is_metered(price: Obj) -> bool:
    return (price.get("recurring") or {}).get("usage_type") == "metered"


class Invoicing:
    """Invoices of subscriptions and the customer's pending invoice items; callers hold no
    locks. `on_created` lets the test clocks find new invoices (their drafts finalize as the
    clock passes them)."""

    def __init__(
        self,
        store: Store,
        config: EmulatorConfig,
        events: Events,
        metering: Metering,
        on_created: Callable[[Obj], None],
    ) -> None:
        self.store = store
        self.config = config
        self.events = events
        self.metering = metering
        self._on_created = on_created

    # ---- lines --------------------------------------------------------------------------

    def item_line(self, invoice_id: str, item: Obj, period: tuple[int, int]) -> Obj:
        """A line billing a subscription item over `period`."""
        line = objects.invoice_line(self.store.new_id("il"), invoice_id, item, period)
        line["description"] = item["price"].get("nickname") or item["price"]["id"]
        if is_metered(item["price"]):
            line["_kind"] = "metered"
            line["_billed"] = item.get("_billed", 0)  # by threshold invoices this period
        else:
            line["_kind"] = "licensed"
            line["_quantity"] = int(item.get("quantity") or 1)
        return line

    def invoice_item_line(self, invoice_id: str, invoice_item: Obj) -> Obj:
        """A line carrying a pending invoice item; its shape follows
        `removed_usage_line_parent` (docs/stripe.md#S-CHANGE-3)."""
        subscription = (invoice_item["parent"] or {}).get("subscription_details") or {}
        line = objects.invoice_item_line(
            self.store.new_id("il"),
            invoice_id,
            invoice_item,
            subscription.get("subscription"),
            subscription.get("subscription_item"),
            as_subscription_item=self.config.removed_usage_line_parent
            == "subscription_item_details",
        )
        line["_kind"] = "fixed"
        return line

    def create_invoice_item(  # noqa: PLR0917
        self,
        customer: Obj,
        subscription: Obj,
        item: Obj,
        period: tuple[int, int],
        quantity: Decimal,
        now: int,
    ) -> Obj:
        """A pending invoice item for usage aggregated when a metered price left a
        subscription (docs/stripe.md#S-CHANGE-1): billed on the subscription's next invoice."""
        price = item["price"]
        invoice_item = objects.invoice_item(
            self.store.new_id("ii"),
            now,
            customer,
            subscription["id"],
            item["id"],
            price,
            period,
            amount_of(quantity, price),
        )
        set_quantity(invoice_item, quantity)
        invoice_item["description"] = f"Usage of {price.get('nickname') or price['id']}"
        return self.store.put("invoiceitem", invoice_item)

    def pending_items(self, customer_id: str, subscription_id: str | None) -> list[Obj]:
        """Pending invoice items a subscription's next invoice takes: its own and those of
        the customer that name no subscription."""
        found = []
        for invoice_item in self.store.all("invoiceitem"):
            if invoice_item["customer"] != customer_id or invoice_item["invoice"] is not None:
                continue
            details = (invoice_item["parent"] or {}).get("subscription_details") or {}
            if details.get("subscription") in (None, subscription_id):
                found.append(invoice_item)
        return found

    # ---- invoices -----------------------------------------------------------------------

    def new_invoice(  # noqa: PLR0917
        self,
        customer: Obj,
        subscription: Obj | None,
        billing_reason: str,
        created: int,
        period: tuple[int, int],
        items: list[tuple[Obj, tuple[int, int]]],
        *,
        pending: bool = True,
        finalizes_at: int | None = None,
    ) -> Obj:
        """A draft with a line per (subscription item, period) and, with `pending`, the
        pending invoice items it takes; stored, announced (`invoice.created`)."""
        invoice = objects.invoice(self.store.new_id("in"), created, customer, subscription)
        invoice["billing_reason"] = billing_reason
        if subscription is not None:
            invoice["currency"] = subscription["currency"]
            invoice["collection_method"] = subscription["collection_method"]
        invoice["period_start"], invoice["period_end"] = period
        invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
        lines = [self.item_line(invoice["id"], item, span) for item, span in items]
        if pending:
            subscription_id = subscription["id"] if subscription else None
            for invoice_item in self.pending_items(customer["id"], subscription_id):
                invoice_item["invoice"] = invoice["id"]
                lines.append(self.invoice_item_line(invoice["id"], invoice_item))
        invoice["_lines"] = lines
        self.price_lines(invoice, usage=billing_reason != "subscription_create")
        invoice["automatically_finalizes_at"] = finalizes_at
        self.store.put("invoice", invoice)
        self._on_created(invoice)
        if subscription is not None:
            subscription["latest_invoice"] = invoice["id"]
        self.events.snapshot("invoice.created", self.render_invoice(invoice), created)
        return invoice

    def price_lines(self, invoice: Obj, *, usage: bool) -> None:
        """Quantities and amounts: metered lines from the meter's aggregate for the customer
        over the line's period (docs/stripe.md#S-AGG-1), less what a threshold invoice
        already billed; licensed lines from the item quantity; invoice items as they are."""
        total = 0
        for line in invoice["_lines"]:
            kind = line.get("_kind", "fixed")
            if kind == "fixed":
                total += int(line.get("amount") or 0)
                continue
            price = self.store.find("price", line["pricing"]["price_details"]["price"]) or {}
            if kind == "metered":
                quantity = Decimal(0)
                if usage:
                    quantity = self.line_usage(invoice["customer"], line, price)
            else:
                quantity = Decimal(line.get("_quantity") or 1)
            amount = amount_of(quantity, price)
            set_quantity(line, quantity)
            line["amount"] = line["subtotal"] = amount
            total += amount
        for key in ("amount_due", "amount_remaining", "subtotal", "subtotal_excluding_tax"):
            invoice[key] = total
        invoice["total"] = invoice["total_excluding_tax"] = total

    def line_usage(self, customer_id: str, line: Obj, price: Obj) -> Decimal:
        meter = self.store.find("billing.meter", (price.get("recurring") or {}).get("meter") or "")
        if meter is None:
            return Decimal(0)
        period = line["period"]
        quantity = self.metering.aggregate(meter, customer_id, period["start"], period["end"])
        quantity -= Decimal(line.get("_billed") or 0)
        return max(quantity, Decimal(0))  # a negative cycle total bills as 0 (S-AGG-4)

    def finalize(self, invoice: Obj, now: int) -> None:
        if invoice["status"] != "draft":
            return
        if invoice.get("_lines"):
            # "During finalization, Stripe updates the invoice to reflect the latest quantity
            # for its billing period" (docs/stripe.md#S-GRACE-1).
            self.price_lines(invoice, usage=invoice["billing_reason"] != "subscription_create")
        customer = self.store.find("customer", invoice["customer"]) or {}
        sequence = customer.get("next_invoice_sequence", 1)
        if customer:
            customer["next_invoice_sequence"] = sequence + 1
        invoice["number"] = f"{customer.get('invoice_prefix', 'EMU')}-{sequence:04d}"
        invoice["status"] = "open"
        invoice["status_transitions"]["finalized_at"] = now
        invoice["effective_at"] = now
        invoice["automatically_finalizes_at"] = None
        invoice["webhooks_delivered_at"] = invoice["webhooks_delivered_at"] or now
        # Collection follows auto_advance: with false Stripe attempts no payment and sends no
        # dunning (docs/stripe.md#S-FIN-1), so no payment attempt is scheduled. With true the
        # emulator shows the attempt due at once; it does not simulate payments.
        charged = invoice["collection_method"] == "charge_automatically"
        collects = invoice["auto_advance"] and charged and invoice["amount_due"] > 0
        invoice["next_payment_attempt"] = now if collects else None
        self.events.snapshot("invoice.finalized", self.render_invoice(invoice), now)

    def finalize_invoice(self, invoice_id: str, params: Obj) -> Obj:
        """`POST /v1/invoices/{id}/finalize`: `auto_advance` given here is what the finalized
        invoice keeps; omitted, the draft's own value stays (docs/stripe.md#S-FIN-1)."""
        auto_advance = as_bool(params, "auto_advance")
        with self.store.lock:
            invoice = self.store.get("invoice", invoice_id)
            if invoice.get("status") != "draft":
                raise invalid(
                    "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                    code="invoice_unexpected_status",
                )
            if auto_advance is not None:
                invoice["auto_advance"] = auto_advance
            self.finalize(invoice, self._now_of(invoice))
            return invoice

    def update_invoice(self, invoice_id: str, params: Obj, request: Obj) -> Obj:
        with self.store.lock:
            invoice = self.store.get("invoice", invoice_id)
            now = self._now_of(invoice)
            previous: Obj = {}
            auto_advance = as_bool(params, "auto_advance")
            finalizes_at = as_int(params, "automatically_finalizes_at")
            if auto_advance is not None and invoice.get("status") not in ("draft", "open"):
                raise invalid(
                    f"auto_advance cannot be changed on a {invoice.get('status')} invoice.",
                    param="auto_advance",
                )
            if auto_advance is not None and auto_advance != invoice.get("auto_advance"):
                previous["auto_advance"] = invoice.get("auto_advance")
                invoice["auto_advance"] = auto_advance
                if invoice.get("status") == "open":
                    # On an open invoice auto_advance is automatic collection
                    # (docs/stripe.md#S-FIN-4): off, no payment attempt is scheduled.
                    charged = invoice["collection_method"] == "charge_automatically"
                    collects = auto_advance and charged and invoice["amount_due"] > 0
                    invoice["next_payment_attempt"] = now if collects else None
            if invoice.get("status") == "draft" and (
                "auto_advance" in previous or finalizes_at is not None
            ):
                previous.setdefault(
                    "automatically_finalizes_at", invoice.get("automatically_finalizes_at")
                )
                # Re-enabled without a time, Stripe sets one from the grace period, counted
                # from now (docs/stripe.md#S-FIN-2); turned off, nothing is scheduled.
                invoice["automatically_finalizes_at"] = (
                    (finalizes_at or now + self.config.grace_period_seconds)
                    if invoice["auto_advance"]
                    else None
                )
            if "metadata" in params:
                previous["metadata"] = dict(invoice.get("metadata") or {})
                update = params["metadata"] if isinstance(params["metadata"], dict) else {}
                invoice["metadata"] = (
                    {} if params["metadata"] == "" else merge_metadata(invoice["metadata"], update)
                )
            for key in ("description", "footer"):
                if key in params:
                    previous[key] = invoice.get(key)
                    invoice[key] = params[key] or None
            self.events.snapshot(
                "invoice.updated",
                self.render_invoice(invoice),
                now,
                previous_attributes=previous,
                request=request,
            )
            return invoice

    def _now_of(self, invoice: Obj) -> int:
        return customer_now(self.store, self.store.find("customer", invoice.get("customer") or ""))

    def render_invoice(self, invoice: Obj) -> Obj:
        rendered = public(invoice)
        if "_lines" in invoice:
            lines = invoice["_lines"]
            rendered["lines"] = {
                "object": "list",
                "data": [public(line) for line in lines[:EMBEDDED_LINES]],
                "has_more": len(lines) > EMBEDDED_LINES,
                "url": f"/v1/invoices/{invoice['id']}/lines",
            }
        return rendered

    def lines_page(self, invoice_id: str, params: Obj) -> Obj:
        with self.store.lock:
            invoice = self.store.get("invoice", invoice_id)
            return paginate(
                invoice.get("_lines", []), params, f"/v1/invoices/{invoice['id']}/lines", public
            )

    # ---- invoice items ------------------------------------------------------------------

    def list_invoice_items(self, params: Obj) -> Obj:
        pending = as_bool(params, "pending")
        with self.store.lock:
            found = [
                ii
                for ii in reversed(self.store.all("invoiceitem"))
                if (not params.get("customer") or ii["customer"] == params["customer"])
                and (not params.get("invoice") or ii["invoice"] == params["invoice"])
                and (pending is None or (ii["invoice"] is None) == pending)
            ]
            return paginate(found, params, "/v1/invoiceitems")

    # ---- previews -----------------------------------------------------------------------

    def preview(
        self,
        params: Obj,
        spans_of: Callable[[str], tuple[list[tuple[Obj, tuple[int, int]]], tuple[int, int]]],
    ) -> Obj:
        """`POST /v1/invoices/create_preview`: the subscription's next invoice as it stands,
        metered lines billing the usage aggregated so far (docs/stripe.md#S-PREVIEW-1). Not
        stored: previews cannot be retrieved, listed, paid or edited."""
        customer_id = params.get("customer")
        subscription_id = params.get("subscription")
        if not customer_id and not subscription_id:
            raise required("customer")
        with self.store.lock:
            subscription = (
                self.store.get("subscription", subscription_id) if subscription_id else None
            )
            if subscription is not None and customer_id and subscription["customer"] != customer_id:
                raise invalid("The subscription does not belong to that customer.", "subscription")
            customer = self.store.get("customer", customer_id or subscription["customer"])  # type: ignore[index]
            spans: list[tuple[Obj, tuple[int, int]]] = []
            period = (customer_now(self.store, customer),) * 2
            if subscription is not None and subscription["status"] == "active":
                spans, period = spans_of(subscription["id"])
            invoice = objects.invoice(
                self.store.new_id("upcoming_in", 24), period[1], customer, subscription
            )
            invoice["billing_reason"] = "upcoming"
            invoice["period_start"], invoice["period_end"] = period
            lines = [self.item_line(invoice["id"], item, span) for item, span in spans]
            for invoice_item in self.pending_items(
                customer["id"], subscription["id"] if subscription else None
            ):
                lines.append(self.invoice_item_line(invoice["id"], invoice_item))
            invoice["_lines"] = lines
            self.price_lines(invoice, usage=True)
            rendered = self.render_invoice(invoice)
            rendered["lines"]["data"] = [public(line) for line in lines]
            rendered["lines"]["has_more"] = False
            return rendered
