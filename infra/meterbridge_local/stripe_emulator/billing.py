"""Billing behaviour: subscriptions, test clocks and invoices, priced from the meters."""

from __future__ import annotations

import calendar
import heapq
import queue
import threading
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import objects
from .config import EmulatorConfig
from .errors import invalid, required
from .metering import Metering
from .store import Obj, Store, customer_now, public, wall_now
from .webhooks import Events
from .wire import as_bool, as_int, merge_metadata

EMBEDDED_LINES = 10  # Stripe embeds the first 10 lines; the rest via /lines


def add_interval(anchor: int, interval: str, count: int) -> int:
    """`anchor` moved by `count` intervals; months keep the anchor's day, clamped to month end."""
    if interval == "day":
        return anchor + count * 86400
    if interval == "week":
        return anchor + count * 7 * 86400
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def set_quantity(line: Obj, quantity: Decimal) -> None:
    """`quantity_decimal` and the integer `quantity`, which is the decimal truncated, not
    rounded (docs/stripe.md#S-QTY-1): 4310.5 shows as 4310."""
    line["quantity_decimal"] = format(quantity.normalize(), "f")
    line["quantity"] = int(quantity)


class Billing:
    """All stateful billing rules; callers hold no locks, every method takes the store's lock."""

    def __init__(self, store: Store, config: EmulatorConfig, events: Events) -> None:
        self.store = store
        self.config = config
        self.events = events
        self.metering = Metering(store, config, events)
        self._clock_subscriptions: dict[str, list[str]] = defaultdict(list)
        self._clock_invoices: dict[str, list[str]] = defaultdict(list)
        self._clock_jobs: queue.Queue[str | None] = queue.Queue()
        self._clock_thread = threading.Thread(
            target=self._run_clock_jobs, name="stripe-emu-clocks", daemon=True
        )
        self._clock_thread.start()

    # ---- time ---------------------------------------------------------------------------

    @staticmethod
    def wall_now() -> int:
        return wall_now()

    def customer_now(self, customer: Obj | None) -> int:
        return customer_now(self.store, customer)

    # ---- subscriptions ------------------------------------------------------------------

    def create_subscription(self, params: Obj, request: Obj) -> Obj:
        customer_id = params.get("customer")
        if not customer_id:
            raise required("customer")
        raw_items = params.get("items") or []
        if isinstance(raw_items, dict):
            raw_items = list(raw_items.values())
        if not raw_items:
            raise required("items")
        with self.store.lock:
            customer = self.store.get("customer", customer_id)
            prices: list[tuple[Obj, Any]] = []
            for index, raw in enumerate(raw_items):
                price_id = raw.get("price") if isinstance(raw, dict) else None
                if not price_id:
                    raise required(f"items[{index}][price]")
                if any(p["id"] == price_id for p, _ in prices):
                    # Stripe refuses one price twice in a subscription (docs/stripe.md#S-AGG-1).
                    raise invalid(
                        "Cannot add multiple subscription items with the same price.",
                        param=f"items[{index}][price]",
                    )
                price = self.store.get("price", price_id)
                if not price.get("recurring"):
                    raise invalid(
                        "The price specified is set to `type=one_time` but this field only "
                        "accepts prices with `type=recurring`.",
                        param=f"items[{index}][price]",
                    )
                prices.append((price, raw))
            now = self.customer_now(customer)
            subscription = objects.subscription(self.store.new_id("sub"), now, customer, params)
            subscription["metadata"] = {
                k: str(v) for k, v in (params.get("metadata") or {}).items()
            }
            recurring = prices[0][0]["recurring"]
            subscription["_interval"] = (recurring["interval"], int(recurring["interval_count"]))
            subscription["_period_index"] = 0
            subscription["currency"] = prices[0][0]["currency"]
            subscription["items"]["url"] = (
                f"/v1/subscription_items?subscription={subscription['id']}"
            )
            item_ids = []
            for price, raw in prices:
                item = objects.subscription_item(
                    self.store.new_id("si", 14), now, subscription["id"], public(price)
                )
                if price["recurring"].get("usage_type") != "metered":
                    item["quantity"] = int(raw.get("quantity") or 1)
                item["metadata"] = {k: str(v) for k, v in (raw.get("metadata") or {}).items()}
                self.store.put("subscription_item", item)
                item_ids.append(item["id"])
            subscription["_items"] = item_ids
            self.store.put("subscription", subscription)
            if subscription.get("test_clock"):
                self._clock_subscriptions[subscription["test_clock"]].append(subscription["id"])
            self._set_item_periods(subscription)
            self.events.snapshot(
                "customer.subscription.created",
                self.render_subscription(subscription),
                now,
                request=request,
            )
            first = self._new_invoice(
                subscription,
                customer,
                "subscription_create",
                now,
                self.current_period(subscription),
            )
            self._finalize(first, now)
            return subscription

    def current_period(self, subscription: Obj) -> tuple[int, int]:
        interval, count = subscription["_interval"]
        index = subscription["_period_index"]
        anchor = subscription["billing_cycle_anchor"]
        return add_interval(anchor, interval, index * count), add_interval(
            anchor, interval, (index + 1) * count
        )

    def _set_item_periods(self, subscription: Obj) -> None:
        start, end = self.current_period(subscription)
        for item_id in subscription["_items"]:
            item = self.store.get("subscription_item", item_id)
            item["current_period_start"], item["current_period_end"] = start, end

    def items_of(self, subscription: Obj) -> list[Obj]:
        return [
            item
            for item_id in subscription.get("_items", [])
            if (item := self.store.find("subscription_item", item_id)) is not None
        ]

    def render_subscription(self, subscription: Obj) -> Obj:
        rendered = public(subscription)
        if "_items" in subscription:
            items = [public(item) for item in self.items_of(subscription)]
            rendered["items"] = {
                "object": "list",
                "data": items,
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={subscription['id']}",
            }
        return rendered

    def cancel_subscription(self, subscription_id: str, request: Obj) -> Obj:
        with self.store.lock:
            subscription = self.store.get("subscription", subscription_id)
            customer = self.store.find("customer", subscription["customer"])
            now = self.customer_now(customer)
            subscription.update(status="canceled", canceled_at=now, ended_at=now)
            self.events.snapshot(
                "customer.subscription.deleted",
                self.render_subscription(subscription),
                now,
                request=request,
            )
            return subscription

    # ---- invoices -----------------------------------------------------------------------

    def _new_invoice(
        self,
        subscription: Obj,
        customer: Obj,
        billing_reason: str,
        created: int,
        usage_period: tuple[int, int],
    ) -> Obj:
        invoice = objects.invoice(self.store.new_id("in"), created, customer, subscription)
        invoice["billing_reason"] = billing_reason
        invoice["currency"] = subscription["currency"]
        invoice["collection_method"] = subscription["collection_method"]
        invoice["period_start"], invoice["period_end"] = (
            usage_period if billing_reason == "subscription_cycle" else (created, created)
        )
        invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
        lines = []
        for item in self.items_of(subscription):
            metered = item["price"]["recurring"].get("usage_type") == "metered"
            # Metered usage is billed in arrears for the period just ended; licensed in advance.
            period = usage_period if metered else self.current_period(subscription)
            line = objects.invoice_line(self.store.new_id("il"), invoice["id"], item, period)
            line["description"] = f"{item['price'].get('nickname') or item['price']['id']}"
            lines.append(line)
        invoice["_lines"] = lines
        self._price_lines(invoice, usage=billing_reason == "subscription_cycle")
        if billing_reason == "subscription_cycle":
            invoice["automatically_finalizes_at"] = created + self.config.grace_period_seconds
        self.store.put("invoice", invoice)
        self.track_invoice(invoice)
        subscription["latest_invoice"] = invoice["id"]
        self.events.snapshot("invoice.created", self.render_invoice(invoice), created)
        return invoice

    def _price_lines(self, invoice: Obj, *, usage: bool) -> None:
        """Quantities and amounts from the meters (metered lines) or the item quantity."""
        total = 0
        for line in invoice["_lines"]:
            details = (line.get("parent") or {}).get("subscription_item_details") or {}
            item = self.store.find("subscription_item", details.get("subscription_item") or "")
            if item is None:
                total += int(line.get("amount") or 0)
                continue
            price = item["price"]
            recurring = price.get("recurring") or {}
            if recurring.get("usage_type") == "metered":
                quantity = Decimal(0)
                meter = self.store.find("billing.meter", recurring.get("meter") or "")
                if usage and meter is not None:
                    period = line["period"]
                    quantity = self.metering.aggregate(
                        meter, invoice["customer"], period["start"], period["end"]
                    )
                quantity = max(quantity, Decimal(0))  # a negative cycle total bills as 0
            else:
                quantity = Decimal(item.get("quantity") or 1)
            unit = Decimal(price.get("unit_amount_decimal") or 0)
            # Half-up rounding of the amount to the cent is an assumption (S-QTY-3).
            amount = int((quantity * unit).to_integral_value(ROUND_HALF_UP))
            set_quantity(line, quantity)
            line["amount"] = line["subtotal"] = amount
            total += amount
        for key in ("amount_due", "amount_remaining", "subtotal", "subtotal_excluding_tax"):
            invoice[key] = total
        invoice["total"] = invoice["total_excluding_tax"] = total

    def _finalize(self, invoice: Obj, now: int) -> None:
        if invoice["billing_reason"] == "subscription_cycle" or invoice.get("_lines"):
            # "During finalization, Stripe updates the invoice to reflect the latest quantity."
            self._price_lines(invoice, usage=invoice["billing_reason"] != "subscription_create")
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

    def finalize_invoice(self, invoice_id: str, params: Obj, request: Obj) -> Obj:
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
            customer = self.store.find("customer", invoice.get("customer") or "")
            self._finalize(invoice, self.customer_now(customer))
            return invoice

    def update_invoice(self, invoice_id: str, params: Obj, request: Obj) -> Obj:
        with self.store.lock:
            invoice = self.store.get("invoice", invoice_id)
            customer = self.store.find("customer", invoice.get("customer") or "")
            now = self.customer_now(customer)
            previous: Obj = {}
            auto_advance = as_bool(params, "auto_advance")
            finalizes_at = as_int(params, "automatically_finalizes_at")
            if auto_advance is not None and auto_advance != invoice.get("auto_advance"):
                previous["auto_advance"] = invoice.get("auto_advance")
                invoice["auto_advance"] = auto_advance
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

    def render_invoice(self, invoice: Obj) -> Obj:
        rendered = public(invoice)
        if "_lines" in invoice:
            lines = invoice["_lines"]
            rendered["lines"] = {
                "object": "list",
                "data": [dict(line) for line in lines[:EMBEDDED_LINES]],
                "has_more": len(lines) > EMBEDDED_LINES,
                "url": f"/v1/invoices/{invoice['id']}/lines",
            }
        return rendered

    # ---- test clocks --------------------------------------------------------------------

    def advance_clock(self, clock_id: str, frozen_time: int) -> Obj:
        with self.store.lock:
            clock = self.store.get("test_helpers.test_clock", clock_id)
            if clock["status"] != "ready":
                raise invalid(
                    f"The test clock {clock_id} is {clock['status']}; wait until it is ready.",
                    code="test_clock_not_ready" if clock["status"] == "advancing" else None,
                )
            if frozen_time <= clock["frozen_time"]:
                raise invalid(
                    "The frozen_time must be after the test clock's current frozen_time.",
                    param="frozen_time",
                )
            clock["status"] = "advancing"
            clock["status_details"] = {"advancing": {"target_frozen_time": frozen_time}}
            clock["_target"] = frozen_time
        self._clock_jobs.put(clock_id)
        return clock

    def clocks_settled(self) -> bool:
        with self.store.lock:
            return self._clock_jobs.unfinished_tasks == 0 and all(
                c["status"] != "advancing" for c in self.store.all("test_helpers.test_clock")
            )

    def stop(self) -> None:
        self._clock_jobs.put(None)
        self._clock_thread.join(timeout=2)

    def _run_clock_jobs(self) -> None:
        while True:
            clock_id = self._clock_jobs.get()
            try:
                if clock_id is None:
                    return
                self._advance(clock_id)
            finally:
                self._clock_jobs.task_done()

    def _advance(self, clock_id: str) -> None:
        """Walk the clock through each due moment in order: finalizations first, then renewals.

        An agenda (heap) per advance keeps a month-start storm of many subscriptions linear.
        """
        with self.store.lock:
            clock = self.store.find("test_helpers.test_clock", clock_id)
            if clock is None:
                return
            target = clock["_target"]
            agenda: list[tuple[int, int, str]] = []
            for invoice_id in self._clock_invoices[clock_id]:
                self._plan_finalization(agenda, invoice_id, target)
            for subscription_id in self._clock_subscriptions[clock_id]:
                self._plan_renewal(agenda, subscription_id, target)
        while agenda:
            with self.store.lock:
                when, order, object_id = heapq.heappop(agenda)
                if order == 0:
                    invoice = self.store.find("invoice", object_id)
                    if invoice is None or not self._finalizes_at(invoice, when):
                        continue
                    clock["frozen_time"] = when
                    self._finalize(invoice, when)
                else:
                    subscription = self.store.find("subscription", object_id)
                    if subscription is None or subscription.get("status") != "active":
                        continue
                    if self.current_period(subscription)[1] != when:
                        continue
                    clock["frozen_time"] = when
                    draft = self._renew(subscription, when)
                    self._plan_finalization(agenda, draft["id"], target)
                    self._plan_renewal(agenda, object_id, target)
        with self.store.lock:
            clock["frozen_time"] = target
            clock["status"] = "ready"
            clock["status_details"] = {}
            self.events.snapshot("test_helpers.test_clock.ready", public(clock), target)

    @staticmethod
    def _finalizes_at(invoice: Obj, when: int) -> bool:
        return bool(
            invoice.get("status") == "draft"
            and invoice.get("auto_advance")
            and invoice.get("automatically_finalizes_at") == when
        )

    def _plan_finalization(
        self, agenda: list[tuple[int, int, str]], invoice_id: str, target: int
    ) -> None:
        invoice = self.store.find("invoice", invoice_id)
        if invoice is None:
            return
        when = invoice.get("automatically_finalizes_at")
        if when is not None and when <= target and self._finalizes_at(invoice, when):
            heapq.heappush(agenda, (when, 0, invoice_id))

    def _plan_renewal(
        self, agenda: list[tuple[int, int, str]], subscription_id: str, target: int
    ) -> None:
        subscription = self.store.find("subscription", subscription_id)
        if subscription is None or subscription.get("status") != "active":
            return
        if "_interval" not in subscription:
            return
        end = self.current_period(subscription)[1]
        if end <= target:
            heapq.heappush(agenda, (end, 1, subscription_id))

    def track_invoice(self, invoice: Obj) -> None:
        """Let a test clock find this invoice (its drafts finalize as the clock passes them)."""
        if invoice.get("test_clock"):
            with self.store.lock:
                self._clock_invoices[invoice["test_clock"]].append(invoice["id"])

    def _renew(self, subscription: Obj, boundary: int) -> Obj:
        previous = self.current_period(subscription)
        subscription["_period_index"] += 1
        self._set_item_periods(subscription)
        customer = self.store.get("customer", subscription["customer"])
        return self._new_invoice(subscription, customer, "subscription_cycle", boundary, previous)
