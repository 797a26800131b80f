"""Subscriptions and test clocks: what Stripe bills when, for renewals, changes and cancellations.

Each subscription item keeps `_since`, the start of its usage not yet invoiced: the period
start, or the moment it was added or its price switched. A renewal bills each metered item over
[_since, period end); what else a change or cancellation bills follows docs/stripe.md
(S-CHANGE-*, S-CANCEL-*, S-THRESH-*). Invoices themselves live in invoicing.py.
"""

from __future__ import annotations

import calendar
import heapq
import queue
import threading
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import objects
from .config import EmulatorConfig
from .errors import invalid, required
from .invoicing import Invoicing, amount_of, is_metered
from .metering import Metering
from .store import Obj, Store, customer_now, public, wall_now
from .webhooks import Events
from .wire import as_bool, as_dict, as_int, as_list, merge_metadata

Span = tuple[int, int]
DAY = 86_400
PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")


def add_interval(anchor: int, interval: str, count: int) -> int:
    """`anchor` moved by `count` intervals; months keep the anchor's day, clamped to month end."""
    if interval == "day":
        return anchor + count * DAY
    if interval == "week":
        return anchor + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


class Billing:
    """All stateful billing rules; callers hold no locks, every method takes the store's lock."""

    def __init__(self, store: Store, config: EmulatorConfig, events: Events) -> None:
        self.store = store
        self.config = config
        self.events = events
        self.metering = Metering(store, config, events)
        self.invoicing = Invoicing(store, config, events, self.metering, self.track_invoice)
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
        raw_items = as_list(params, "items")
        if not raw_items:
            raise required("items")
        mode = as_dict(params, "billing_mode").get("type") or self.config.default_billing_mode
        if mode not in ("flexible", "classic"):
            raise invalid("billing_mode[type] must be flexible or classic.", "billing_mode[type]")
        with self.store.lock:
            customer = self.store.get("customer", customer_id)
            prices = [self._price_for(raw, index, []) for index, raw in enumerate(raw_items)]
            self._refuse_duplicates(prices)
            now = self.customer_now(customer)
            subscription = objects.subscription(self.store.new_id("sub"), now, customer, params)
            # Flexible is the default since 2025-09-30.clover (docs/stripe.md#S-MODE-1).
            subscription["billing_mode"] = objects.billing_mode(mode, now)
            subscription["billing_thresholds"] = _thresholds(params)
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
            subscription["_items"] = []
            for price, raw in prices:
                self._add_item(subscription, price, raw, now)
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
            # The first invoice finalizes at once (docs/stripe.md#S-GRACE-3): licensed items
            # in advance, metered ones at 0.
            period = self.current_period(subscription)
            first = self.invoicing.new_invoice(
                customer,
                subscription,
                "subscription_create",
                now,
                (now, now),
                [(item, period) for item in self.items_of(subscription)],
                pending=False,
            )
            self.invoicing.finalize(first, now)
            return subscription

    def _price_for(self, raw: Any, index: int, existing: list[Obj]) -> tuple[Obj, Obj]:
        if not isinstance(raw, dict) or not raw.get("price"):
            raise required(f"items[{index}][price]")
        price = self.store.get("price", raw["price"])
        if not price.get("recurring"):
            raise invalid(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=f"items[{index}][price]",
            )
        if any(item["price"]["id"] == price["id"] for item in existing):
            raise _duplicate_price(index)
        return price, raw

    @staticmethod
    def _refuse_duplicates(prices: list[tuple[Obj, Obj]]) -> None:
        """Stripe refuses one price twice in a subscription; two prices of one meter are
        allowed, and each line bills the whole aggregate (docs/stripe.md#S-AGG-1)."""
        seen: set[str] = set()
        for index, (price, _) in enumerate(prices):
            if price["id"] in seen:
                raise _duplicate_price(index)
            seen.add(price["id"])

    def _add_item(self, subscription: Obj, price: Obj, raw: Obj, now: int) -> Obj:
        item = objects.subscription_item(
            self.store.new_id("si", 14), now, subscription["id"], public(price)
        )
        if not is_metered(price):
            item["quantity"] = int(raw.get("quantity") or 1)
        item["metadata"] = {k: str(v) for k, v in (raw.get("metadata") or {}).items()}
        item["_since"] = now
        start, end = self.current_period(subscription) if "_interval" in subscription else (0, 0)
        item["current_period_start"], item["current_period_end"] = start, end
        subscription["_items"].append(item["id"])
        return self.store.put("subscription_item", item)

    def current_period(self, subscription: Obj) -> Span:
        interval, count = subscription["_interval"]
        index = subscription["_period_index"]
        anchor = subscription["billing_cycle_anchor"]
        return add_interval(anchor, interval, index * count), add_interval(
            anchor, interval, (index + 1) * count
        )

    def _set_item_periods(self, subscription: Obj) -> None:
        start, end = self.current_period(subscription)
        for item in self.items_of(subscription):
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

    # ---- changes ------------------------------------------------------------------------

    def update_subscription(self, subscription_id: str, params: Obj, request: Obj) -> Obj:
        """`POST /v1/subscriptions/{id}`: metadata, description, cancel_at_period_end,
        billing_thresholds and items (add, switch price, `deleted`), each change billed as
        Stripe bills it mid-period; one `customer.subscription.updated` with the previous
        values of what changed."""
        behavior = _proration_behavior(params)
        with self.store.lock:
            subscription = self._active(subscription_id)
            now = self._now(subscription)
            previous: Obj = {}
            if "metadata" in params:
                previous["metadata"] = dict(subscription["metadata"])
                subscription["metadata"] = merge_metadata(
                    subscription["metadata"], as_dict(params, "metadata")
                )
            if "description" in params:
                previous["description"] = subscription.get("description")
                subscription["description"] = params["description"] or None
            if "cancel_at" in params:
                raise invalid("cancel_at is not emulated; use cancel_at_period_end.", "cancel_at")
            at_period_end = as_bool(params, "cancel_at_period_end")
            if at_period_end is not None and at_period_end != subscription["cancel_at_period_end"]:
                previous["cancel_at_period_end"] = subscription["cancel_at_period_end"]
                previous["cancel_at"] = subscription["cancel_at"]
                subscription["cancel_at_period_end"] = at_period_end
                subscription["cancel_at"] = (
                    self.current_period(subscription)[1] if at_period_end else None
                )
            if "billing_thresholds" in params:
                previous["billing_thresholds"] = subscription["billing_thresholds"]
                subscription["billing_thresholds"] = _thresholds(params)
            raw_items = as_list(params, "items")
            if raw_items:
                previous["items"] = self.render_subscription(subscription)["items"]
                for index, raw in enumerate(raw_items):
                    self._change_item(subscription, raw, index, behavior, now)
                self._refuse_duplicates([(i["price"], i) for i in self.items_of(subscription)])
                self._invoice_now_if_asked(subscription, behavior, now)
            self._updated(subscription, previous, now, request)
            return subscription

    def add_item(self, params: Obj, request: Obj) -> Obj:
        """`POST /v1/subscription_items`: a new item accrues usage from now
        (docs/stripe.md#S-CHANGE-2)."""
        subscription_id = params.get("subscription")
        if not subscription_id:
            raise required("subscription")
        with self.store.lock:
            subscription = self._active(subscription_id)
            previous = {"items": self.render_subscription(subscription)["items"]}
            now = self._now(subscription)
            price, raw = self._price_for(params, 0, self.items_of(subscription))
            item = self._add_item(subscription, price, raw, now)
            self._updated(subscription, previous, now, request)
            return item

    def update_item(self, item_id: str, params: Obj, request: Obj) -> Obj:
        """`POST /v1/subscription_items/{id}`: a price switch or a new quantity."""
        behavior = _proration_behavior(params)
        with self.store.lock:
            item = self.store.get("subscription_item", item_id)
            subscription = self._active(item["subscription"])
            previous = {"items": self.render_subscription(subscription)["items"]}
            now = self._now(subscription)
            self._change_item(subscription, {**params, "id": item_id}, 0, behavior, now)
            self._invoice_now_if_asked(subscription, behavior, now)
            self._updated(subscription, previous, now, request)
            return item

    def delete_item(self, item_id: str, params: Obj, request: Obj) -> Obj:
        """`DELETE /v1/subscription_items/{id}`."""
        behavior = _proration_behavior(params)
        with self.store.lock:
            item = self.store.get("subscription_item", item_id)
            subscription = self._active(item["subscription"])
            previous = {"items": self.render_subscription(subscription)["items"]}
            now = self._now(subscription)
            self._change_item(subscription, {"id": item_id, "deleted": "true"}, 0, behavior, now)
            self._invoice_now_if_asked(subscription, behavior, now)
            self._updated(subscription, previous, now, request)
            return {"id": item_id, "object": "subscription_item", "deleted": True}

    def _change_item(
        self, subscription: Obj, raw: Any, index: int, behavior: str, now: int
    ) -> None:
        if not isinstance(raw, dict):
            raise invalid(f"Invalid items[{index}].", f"items[{index}]")
        item_id = raw.get("id")
        if not item_id:  # a new item
            price, raw = self._price_for(raw, index, self.items_of(subscription))
            self._add_item(subscription, price, raw, now)
            return
        item = self.store.get("subscription_item", item_id)
        if item["subscription"] != subscription["id"]:
            raise invalid(f"{item_id} belongs to another subscription.", f"items[{index}][id]")
        if as_bool(raw, "deleted"):
            self._bill_usage_so_far(subscription, item, behavior, now)
            subscription["_items"].remove(item_id)
            self.store.delete("subscription_item", item_id)
            return
        if raw.get("price") and raw["price"] != item["price"]["id"]:
            others = [i for i in self.items_of(subscription) if i["id"] != item_id]
            price, _ = self._price_for(raw, index, others)
            self._bill_usage_so_far(subscription, item, behavior, now)
            item["price"], item["plan"] = public(price), objects.plan_of(public(price))
            item["_since"] = now
            if is_metered(price):
                item.pop("quantity", None)
        if raw.get("quantity") not in (None, "") and not is_metered(item["price"]):
            item["quantity"] = as_int(raw, "quantity")
        if "metadata" in raw:
            item["metadata"] = merge_metadata(item["metadata"], as_dict(raw, "metadata"))

    def _bill_usage_so_far(self, subscription: Obj, item: Obj, behavior: str, now: int) -> None:
        """A metered price leaving the subscription mid-period. Flexible billing mode: an
        invoice item for the usage aggregated up to now, billed on the next invoice, unless
        proration_behavior=none (docs/stripe.md#S-CHANGE-1). Classic: that usage is never
        billed (S-CHANGE-2)."""
        if not is_metered(item["price"]) or now <= item["_since"]:
            return
        if subscription["billing_mode"]["type"] != "flexible" or behavior == "none":
            return
        customer = self.store.get("customer", subscription["customer"])
        span = (item["_since"], now)
        quantity = self._usage(customer["id"], item["price"], span) - item.get("_billed", 0)
        self.invoicing.create_invoice_item(
            customer, subscription, item, span, max(Decimal(quantity), Decimal(0)), now
        )

    def _invoice_now_if_asked(self, subscription: Obj, behavior: str, now: int) -> None:
        """proration_behavior=always_invoice: the pending items are invoiced at once."""
        if behavior != "always_invoice":
            return
        customer = self.store.get("customer", subscription["customer"])
        if not self.invoicing.pending_items(customer["id"], subscription["id"]):
            return
        invoice = self.invoicing.new_invoice(
            customer, subscription, "subscription_update", now, (now, now), []
        )
        self.invoicing.finalize(invoice, now)

    def _updated(self, subscription: Obj, previous: Obj, now: int, request: Obj | None) -> None:
        if previous:
            self._set_item_periods(subscription)
            self.events.snapshot(
                "customer.subscription.updated",
                self.render_subscription(subscription),
                now,
                previous_attributes=previous,
                request=request,
            )

    # ---- cancellation -------------------------------------------------------------------

    def cancel_subscription(self, subscription_id: str, params: Obj, request: Obj) -> Obj:
        """`DELETE /v1/subscriptions/{id}`: with invoice_now=true a final invoice bills the
        usage not yet invoiced and the pending items; by default that usage is discarded
        (docs/stripe.md#S-CANCEL-1). `prorate` credits are not emulated."""
        invoice_now = as_bool(params, "invoice_now", False)
        with self.store.lock:
            subscription = self._active(subscription_id)
            now = self._now(subscription)
            if invoice_now:
                customer = self.store.get("customer", subscription["customer"])
                final = self.invoicing.new_invoice(
                    customer,
                    subscription,
                    self.config.invoice_now_billing_reason,
                    now,
                    (self.current_period(subscription)[0], now),
                    self._metered_spans(subscription, now),
                    finalizes_at=None
                    if self.config.invoice_now_finalizes
                    else now + self.config.grace_period_seconds,
                )
                if self.config.invoice_now_finalizes:
                    self.invoicing.finalize(final, now)
            self._end(subscription, now, request)
            return subscription

    def _end(self, subscription: Obj, now: int, request: Obj | None = None) -> None:
        subscription.update(status="canceled", canceled_at=now, ended_at=now)
        subscription["cancellation_details"]["reason"] = "cancellation_requested"
        self.events.snapshot(
            "customer.subscription.deleted",
            self.render_subscription(subscription),
            now,
            request=request,
        )

    def _metered_spans(self, subscription: Obj, end: int) -> list[tuple[Obj, Span]]:
        return [
            (item, (item["_since"], end))
            for item in self.items_of(subscription)
            if is_metered(item["price"])
        ]

    # ---- renewals -----------------------------------------------------------------------

    def _renew(self, subscription: Obj, boundary: int) -> Obj:
        """The period ends: a draft billing each metered item's usage in arrears and each
        licensed item for the next period, finalizing after the grace period
        (docs/stripe.md#S-GRACE-1). A subscription set to cancel at period end gets its final
        invoice instead (S-CANCEL-2)."""
        customer = self.store.get("customer", subscription["customer"])
        previous = self.current_period(subscription)
        finalizes_at = boundary + self.config.grace_period_seconds
        if subscription["cancel_at_period_end"]:
            final = self.invoicing.new_invoice(
                customer,
                subscription,
                self.config.period_end_cancel_billing_reason,
                boundary,
                previous,
                self._metered_spans(subscription, boundary),
                finalizes_at=finalizes_at,
            )
            self._end(subscription, boundary)
            return final
        before = {
            "items": self.render_subscription(subscription)["items"],
            "latest_invoice": subscription["latest_invoice"],
        }
        subscription["_period_index"] += 1
        self._set_item_periods(subscription)
        draft = self.invoicing.new_invoice(
            customer,
            subscription,
            "subscription_cycle",
            boundary,
            previous,
            self._renewal_spans(subscription, boundary),
            finalizes_at=finalizes_at,
        )
        for item in self.items_of(subscription):
            item["_since"], item["_billed"] = boundary, 0
        # A renewal changes the items' periods and the latest invoice: Stripe announces it
        # (docs/stripe.md#S-CANCEL-5).
        self._updated(subscription, before, boundary, None)
        return draft

    def _renewal_spans(self, subscription: Obj, boundary: int) -> list[tuple[Obj, Span]]:
        """Metered items over [_since, boundary); licensed ones over the period to come."""
        upcoming = self.current_period(subscription)
        return [
            (item, (item["_since"], boundary) if is_metered(item["price"]) else upcoming)
            for item in self.items_of(subscription)
        ]

    def preview_spans(self, subscription_id: str) -> tuple[list[tuple[Obj, Span]], Span]:
        """What the next invoice bills if nothing changes, for create_preview
        (docs/stripe.md#S-PREVIEW-1): metered usage since `_since`, aggregated so far."""
        subscription = self.store.get("subscription", subscription_id)
        end = self.current_period(subscription)[1]
        if subscription["cancel_at_period_end"]:
            return self._metered_spans(subscription, end), self.current_period(subscription)
        interval, count = subscription["_interval"]
        upcoming = (end, add_interval(end, interval, count))
        spans = [
            (item, (item["_since"], end) if is_metered(item["price"]) else upcoming)
            for item in self.items_of(subscription)
        ]
        return spans, self.current_period(subscription)

    # ---- billing thresholds -------------------------------------------------------------

    def _check_thresholds(self, subscription: Obj, now: int) -> None:
        """billing_thresholds[amount_gte]: once the metered amount accrued this period
        reaches it, a threshold invoice bills that usage; the period's invoice later bills
        the rest (docs/stripe.md#S-THRESH-1). Not evaluated in the period's last 24 hours.
        The emulator evaluates when a test clock advances, as of the clock's time then."""
        thresholds = subscription.get("billing_thresholds") or {}
        limit = thresholds.get("amount_gte")
        if not limit or subscription.get("status") != "active":
            return
        if now >= self.current_period(subscription)[1] - DAY:
            return
        customer = self.store.get("customer", subscription["customer"])
        accrued: list[tuple[Obj, Decimal]] = []
        for item in self.items_of(subscription):
            if is_metered(item["price"]) and now > item["_since"]:
                used = self._usage(customer["id"], item["price"], (item["_since"], now))
                accrued.append((item, used - item.get("_billed", 0)))
        amount = sum(amount_of(max(q, Decimal(0)), i["price"]) for i, q in accrued)
        if amount < limit:
            return
        invoice = self.invoicing.new_invoice(
            customer,
            subscription,
            "subscription_threshold",
            now,
            (min(item["_since"] for item, _ in accrued), now),
            [(item, (item["_since"], now)) for item, _ in accrued],
            pending=False,
            finalizes_at=now + self.config.grace_period_seconds,
        )
        invoice["threshold_reason"] = {"amount_gte": limit, "item_reasons": []}
        for line in invoice["_lines"]:
            line["_kind"] = "fixed"  # what the threshold billed stays billed [?]
        for item, quantity in accrued:
            item["_billed"] = item.get("_billed", 0) + max(quantity, Decimal(0))

    def _usage(self, customer_id: str, price: Obj, span: Span) -> Decimal:
        meter = self.store.find("billing.meter", (price.get("recurring") or {}).get("meter") or "")
        if meter is None:
            return Decimal(0)
        return self.metering.aggregate(meter, customer_id, span[0], span[1])

    # ---- helpers ------------------------------------------------------------------------

    def _active(self, subscription_id: str) -> Obj:
        subscription = self.store.get("subscription", subscription_id)
        if subscription.get("status") == "canceled":
            raise invalid(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        return subscription

    def _now(self, subscription: Obj) -> int:
        return self.customer_now(self.store.find("customer", subscription["customer"]))

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
            for subscription_id in self._clock_subscriptions[clock_id]:
                subscription = self.store.find("subscription", subscription_id)
                if subscription is not None:
                    self._check_thresholds(subscription, clock["frozen_time"])
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
                    self.invoicing.finalize(invoice, when)
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


def _proration_behavior(params: Obj) -> str:
    behavior = params.get("proration_behavior") or "create_prorations"
    if behavior not in PRORATION_BEHAVIORS:
        raise invalid(
            f"proration_behavior must be one of {', '.join(PRORATION_BEHAVIORS)}.",
            "proration_behavior",
        )
    return str(behavior)


def _thresholds(params: Obj) -> Obj | None:
    raw = params.get("billing_thresholds")
    if not raw:
        return None
    amount = as_int(as_dict(params, "billing_thresholds"), "amount_gte")
    reset = as_bool(as_dict(params, "billing_thresholds"), "reset_billing_cycle_anchor", False)
    if reset:
        raise invalid(
            "reset_billing_cycle_anchor is not emulated.",
            "billing_thresholds[reset_billing_cycle_anchor]",
        )
    return {"amount_gte": amount, "reset_billing_cycle_anchor": False}


def _duplicate_price(index: int) -> Exception:
    return invalid(
        "Cannot add multiple subscription items with the same price.",
        param=f"items[{index}][price]",
    )
