"""The routes: one small function per Stripe endpoint, mapping parameters onto the billing model."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import objects
from .billing import Billing
from .errors import StripeApiError, invalid, invalid_param, missing, required
from .store import Obj, Store, paginate, public
from .webhooks import THIN_EVENT, rfc3339
from .wire import as_bool, as_dict, as_int, as_list, merge_metadata, need_int, need_str

SESSION_SECONDS = 15 * 60  # v2 session tokens (docs/stripe.md#S-ME-5)
STREAM_MAX_EVENTS = 100  # per v2 stream request (S-ME-5)


@dataclass
class Call:
    """One API request as the handlers see it."""

    method: str
    path: str
    params: dict[str, Any]
    path_args: tuple[str, ...]
    idempotency_key: str | None
    request_id: str
    api_key: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    api_version: str = ""

    @property
    def request(self) -> Obj:
        return {"id": self.request_id, "idempotency_key": self.idempotency_key}


Handler = Callable[["Api", Call], Any]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    compiled = re.compile("^" + re.sub(r"\{(\w+)\}", r"([^/]+)", pattern) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, compiled, handler))
        return handler

    return register


def match(method: str, path: str) -> tuple[Handler, tuple[str, ...]] | None:
    for route_method, pattern, handler in ROUTES:
        found = pattern.match(path)
        if found and route_method == method:
            return handler, found.groups()
    return None


def path_exists(path: str) -> bool:
    return any(pattern.match(path) for _, pattern, _ in ROUTES)


def _metadata(params: Obj) -> dict[str, str]:
    return {k: str(v) for k, v in as_dict(params, "metadata").items() if v != ""}


class Api:
    """Handlers bound to one emulator's store and billing model."""

    def __init__(self, store: Store, billing: Billing) -> None:
        self.store = store
        self.billing = billing
        self.sessions: dict[str, float] = {}

    # ---- customers, products, prices ----------------------------------------------------

    @route("POST", "/v1/customers")
    def create_customer(self, call: Call) -> Obj:
        params = call.params
        with self.store.lock:
            clock_id = params.get("test_clock") or None
            if clock_id:
                self.store.get("test_helpers.test_clock", clock_id, "test_clock")
            customer = objects.customer(self.store.new_id("cus", 14), 0, params, clock_id)
            customer["created"] = self.billing.customer_now(customer)
            customer["metadata"] = _metadata(params)
            self.store.put("customer", customer)
            self.billing.events.snapshot(
                "customer.created", public(customer), customer["created"], request=call.request
            )
            return public(customer)

    @route("GET", "/v1/customers")
    def list_customers(self, call: Call) -> Obj:
        filters = {k: call.params.get(k) for k in ("email", "test_clock") if call.params.get(k)}
        return self._list("customer", call, filters)

    @route("GET", "/v1/customers/{id}")
    def get_customer(self, call: Call) -> Obj:
        return public(self.store.get("customer", call.path_args[0]))

    @route("POST", "/v1/customers/{id}")
    def update_customer(self, call: Call) -> Obj:
        return self._update("customer", call, ("name", "email", "description", "phone"))

    @route("DELETE", "/v1/customers/{id}")
    def delete_customer(self, call: Call) -> Obj:
        return self.store.delete("customer", call.path_args[0])

    @route("POST", "/v1/products")
    def create_product(self, call: Call) -> Obj:
        need_str(call.params, "name")
        return public(self._create_product(call.params))

    def _create_product(self, params: Obj) -> Obj:
        with self.store.lock:
            product = objects.product(
                params.get("id") or self.store.new_id("prod", 14), Billing.wall_now(), params
            )
            product["metadata"] = _metadata(params)
            return self.store.put("product", product)

    @route("GET", "/v1/products")
    def list_products(self, call: Call) -> Obj:
        return self._list("product", call, {})

    @route("GET", "/v1/products/{id}")
    def get_product(self, call: Call) -> Obj:
        return public(self.store.get("product", call.path_args[0]))

    @route("POST", "/v1/products/{id}")
    def update_product(self, call: Call) -> Obj:
        return self._update("product", call, ("name", "description", "unit_label"))

    @route("DELETE", "/v1/products/{id}")
    def delete_product(self, call: Call) -> Obj:
        return self.store.delete("product", call.path_args[0])

    @route("POST", "/v1/prices")
    def create_price(self, call: Call) -> Obj:
        params = call.params
        with self.store.lock:
            product_id = params.get("product")
            if product_id:
                self.store.get("product", product_id)
            elif params.get("product_data"):
                product_id = self._create_product(as_dict(params, "product_data"))["id"]
            else:
                raise required("product")
            recurring = (
                self._recurring(as_dict(params, "recurring")) if "recurring" in params else None
            )
            lookup_key = params.get("lookup_key")
            if lookup_key:
                holders = [p for p in self.store.all("price") if p.get("lookup_key") == lookup_key]
                if holders and not as_bool(params, "transfer_lookup_key", False):
                    raise invalid(
                        f"A price (`{holders[0]['id']}`) already uses that lookup key.",
                        param="lookup_key",
                    )
                for holder in holders:
                    holder["lookup_key"] = None
            price = objects.price(
                self.store.new_id("price", 24), Billing.wall_now(), params, product_id, recurring
            )
            if params.get("unit_amount_decimal") not in (None, ""):
                price["unit_amount_decimal"] = str(params["unit_amount_decimal"])
                decimal_amount = price["unit_amount_decimal"]
                price["unit_amount"] = (
                    int(float(decimal_amount)) if float(decimal_amount).is_integer() else None
                )
            elif params.get("unit_amount") not in (None, ""):
                price["unit_amount"] = need_int(params, "unit_amount")
                price["unit_amount_decimal"] = str(price["unit_amount"])
            elif recurring is None or recurring.get("usage_type") != "metered":
                raise required("unit_amount")
            price["metadata"] = _metadata(params)
            return public(self.store.put("price", price))

    def _recurring(self, raw: Obj) -> Obj:
        interval = raw.get("interval")
        if interval not in ("day", "week", "month", "year"):
            raise invalid(
                "Invalid recurring[interval]: must be one of day, week, month, or year",
                param="recurring[interval]",
            )
        usage_type = raw.get("usage_type") or "licensed"
        meter_id = raw.get("meter") or None
        if usage_type == "metered" and not meter_id:
            raise invalid("Metered prices must be backed by a meter.", param="recurring[meter]")
        if meter_id:
            self.store.get("billing.meter", meter_id, "billing.meter")
        return {
            "interval": interval,
            "interval_count": int(raw.get("interval_count") or 1),
            "meter": meter_id,
            "trial_period_days": None,
            "usage_type": usage_type,
        }

    @route("GET", "/v1/prices")
    def list_prices(self, call: Call) -> Obj:
        lookup_keys = set(as_list(call.params, "lookup_keys"))
        product = call.params.get("product")
        active = as_bool(call.params, "active")
        with self.store.lock:
            found = [
                p
                for p in reversed(self.store.all("price"))
                if (not lookup_keys or p.get("lookup_key") in lookup_keys)
                and (not product or p.get("product") == product)
                and (active is None or p.get("active") == active)
            ]
            return paginate(found, call.params, "/v1/prices")

    @route("GET", "/v1/prices/{id}")
    def get_price(self, call: Call) -> Obj:
        return public(self.store.get("price", call.path_args[0]))

    @route("POST", "/v1/prices/{id}")
    def update_price(self, call: Call) -> Obj:
        with self.store.lock:
            price = self.store.get("price", call.path_args[0])
            active = as_bool(call.params, "active")
            if active is not None:
                price["active"] = active
            if "lookup_key" in call.params:
                price["lookup_key"] = call.params["lookup_key"] or None
            return self._update("price", call, ("nickname",))

    # ---- meters and meter events --------------------------------------------------------

    @route("POST", "/v1/billing/meters")
    def create_meter(self, call: Call) -> Obj:
        params = call.params
        need_str(params, "display_name")
        event_name = need_str(params, "event_name")
        # The spec's enums (docs/stripe.md#S-AGG-2, S-WINDOW-1).
        formula = as_dict(params, "default_aggregation").get("formula")
        if formula not in ("sum", "count", "last"):
            raise invalid_param(
                "default_aggregation[formula] must be sum, count or last.",
                param="default_aggregation[formula]",
            )
        if params.get("event_time_window") not in (None, "day", "hour"):
            raise invalid_param("event_time_window must be day or hour.", param="event_time_window")
        mapping = as_dict(params, "customer_mapping")
        if mapping and mapping.get("type", "by_id") != "by_id":
            raise invalid_param(
                "customer_mapping[type] must be by_id.", param="customer_mapping[type]"
            )
        with self.store.lock:
            if any(
                m.get("event_name") == event_name and m.get("status") == "active"
                for m in self.store.all("billing.meter")
            ):
                raise invalid(
                    f"An active meter with event_name {event_name} already exists.",
                    param="event_name",
                )
            meter = objects.meter(self.store.new_id("mtr_test", 32), Billing.wall_now(), params)
            self.store.put("billing.meter", meter)
            return public(meter)

    @route("GET", "/v1/billing/meters")
    def list_meters(self, call: Call) -> Obj:
        filters = {"status": call.params["status"]} if call.params.get("status") else {}
        return self._list("billing.meter", call, filters)

    @route("GET", "/v1/billing/meters/{id}")
    def get_meter(self, call: Call) -> Obj:
        return public(self.store.get("billing.meter", call.path_args[0], "billing.meter"))

    @route("POST", "/v1/billing/meters/{id}")
    def update_meter(self, call: Call) -> Obj:
        return self._update("billing.meter", call, ("display_name",))

    @route("POST", "/v1/billing/meters/{id}/deactivate")
    def deactivate_meter(self, call: Call) -> Obj:
        return self._set_meter_status(call.path_args[0], "inactive")

    @route("POST", "/v1/billing/meters/{id}/reactivate")
    def reactivate_meter(self, call: Call) -> Obj:
        return self._set_meter_status(call.path_args[0], "active")

    def _set_meter_status(self, meter_id: str, status: str) -> Obj:
        with self.store.lock:
            meter = self.store.get("billing.meter", meter_id, "billing.meter")
            meter["status"] = status
            meter["updated"] = Billing.wall_now()
            meter["status_transitions"]["deactivated_at"] = (
                meter["updated"] if status == "inactive" else None
            )
            return public(meter)

    @route("GET", "/v1/billing/meters/{id}/event_summaries")
    def event_summaries(self, call: Call) -> Obj:
        return self.billing.metering.summaries(call.path_args[0], call.params)

    @route("POST", "/v1/billing/meter_events")
    def create_meter_event(self, call: Call) -> Obj:
        params = call.params
        event_name = need_str(params, "event_name")
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise required("payload")
        record = self.billing.metering.record_meter_event(
            event_name=event_name,
            payload=payload,
            identifier=params.get("identifier") or None,
            timestamp=as_int(params, "timestamp"),
            idempotency_key=call.idempotency_key,
            source="v1",
            request_id=call.request_id,
            reject_duplicates=True,
        )
        self.billing.metering.report_errors([record])
        return {
            "object": "billing.meter_event",
            "created": Billing.wall_now(),
            "event_name": record.event_name,
            "identifier": record.identifier,
            "livemode": False,
            "payload": record.payload,
            "timestamp": record.timestamp,
        }

    @route("POST", "/v1/billing/meter_event_adjustments")
    def create_adjustment(self, call: Call) -> Obj:
        return self._adjust(call.params)

    @route("POST", "/v2/billing/meter_event_adjustments")
    def create_adjustment_v2(self, call: Call) -> Obj:
        adjustment = self._adjust(call.params)
        return {
            "id": self.store.new_id("mtradj_test", 32),
            "object": "v2.billing.meter_event_adjustment",
            "cancel": adjustment["cancel"],
            "created": rfc3339(time.time()),
            "event_name": adjustment["event_name"],
            "livemode": False,
            "status": "complete",
            "type": "cancel",
        }

    def _adjust(self, params: Obj) -> Obj:
        event_name = need_str(params, "event_name")
        if (params.get("type") or "cancel") != "cancel":
            raise invalid("Only type=cancel is supported.", param="type")
        identifier = as_dict(params, "cancel").get("identifier")
        if not identifier:
            raise required("cancel[identifier]")
        return self.billing.metering.cancel_meter_event(event_name, identifier)

    @route("POST", "/v2/billing/meter_event_session")
    def create_session(self, call: Call) -> Obj:
        now = time.time()
        token = self.store.new_id("ek_test", 48)
        with self.store.lock:
            self.sessions[token] = now + SESSION_SECONDS
        return {
            "id": self.store.new_id("mes_test", 32),
            "object": "v2.billing.meter_event_session",
            "authentication_token": token,
            "created": rfc3339(now),
            "expires_at": rfc3339(now + SESSION_SECONDS),
            "livemode": False,
        }

    def session_valid(self, token: str) -> bool:
        with self.store.lock:
            expires = self.sessions.get(token)
        return expires is not None and expires > time.time()

    @route("POST", "/v2/billing/meter_event_stream")
    def meter_event_stream(self, call: Call) -> Obj:
        events = call.params.get("events")
        if not isinstance(events, list) or not events:
            raise required("events")
        if len(events) > STREAM_MAX_EVENTS:
            raise invalid(f"At most {STREAM_MAX_EVENTS} events per request.", param="events")
        records = []
        for index, event in enumerate(events):
            if not isinstance(event, dict) or not event.get("event_name"):
                raise required(f"events[{index}].event_name")
            if not isinstance(event.get("payload"), dict):
                raise required(f"events[{index}].payload")
            timestamp = None
            if event.get("timestamp"):
                try:
                    timestamp = int(datetime.fromisoformat(event["timestamp"]).timestamp())
                except (TypeError, ValueError):
                    raise invalid(
                        "Invalid timestamp.", param=f"events[{index}].timestamp"
                    ) from None
            records.append(
                self.billing.metering.record_meter_event(
                    event_name=event["event_name"],
                    payload={k: str(v) for k, v in event["payload"].items()},
                    identifier=event.get("identifier") or None,
                    timestamp=timestamp,
                    idempotency_key=call.idempotency_key,
                    source="v2",
                    request_id=call.request_id,
                    reject_duplicates=False,
                )
            )
        self.billing.metering.report_errors(records)
        return {}

    # ---- subscriptions ------------------------------------------------------------------

    @route("POST", "/v1/subscriptions")
    def create_subscription(self, call: Call) -> Obj:
        subscription = self.billing.create_subscription(call.params, call.request)
        return self.billing.render_subscription(subscription)

    @route("GET", "/v1/subscriptions")
    def list_subscriptions(self, call: Call) -> Obj:
        """Without `status`, every subscription that is not canceled; `ended` is canceled or
        incomplete_expired; `all` is all (docs/stripe.md#S-LIST-1). Subscriptions on a test
        clock only when `test_clock` or `customer` is given (S-LIST-3)."""
        params = call.params
        status = params.get("status")
        price = params.get("price")

        def wanted(subscription: Obj) -> bool:
            current = subscription.get("status")
            if status in (None, ""):
                return current != "canceled"
            if status == "ended":
                return current in ("canceled", "incomplete_expired")
            return status in ("all", current)

        with self.store.lock:
            found = [
                s
                for s in reversed(self.store.all("subscription"))
                if wanted(s)
                and all(s.get(k) == params[k] for k in ("customer", "test_clock") if params.get(k))
                and (not s.get("test_clock") or params.get("test_clock") or params.get("customer"))
                and (not price or any(i["price"]["id"] == price for i in self.billing.items_of(s)))
            ]
            return paginate(found, params, "/v1/subscriptions", self.billing.render_subscription)

    @route("GET", "/v1/subscriptions/{id}")
    def get_subscription(self, call: Call) -> Obj:
        with self.store.lock:
            return self.billing.render_subscription(
                self.store.get("subscription", call.path_args[0])
            )

    @route("POST", "/v1/subscriptions/{id}")
    def update_subscription(self, call: Call) -> Obj:
        with self.store.lock:
            subscription = self.billing.update_subscription(
                call.path_args[0], call.params, call.request
            )
            return self.billing.render_subscription(subscription)

    @route("DELETE", "/v1/subscriptions/{id}")
    def cancel_subscription(self, call: Call) -> Obj:
        with self.store.lock:
            subscription = self.billing.cancel_subscription(
                call.path_args[0], call.params, call.request
            )
            return self.billing.render_subscription(subscription)

    @route("POST", "/v1/subscription_items")
    def create_subscription_item(self, call: Call) -> Obj:
        return public(self.billing.add_item(call.params, call.request))

    @route("GET", "/v1/subscription_items")
    def list_subscription_items(self, call: Call) -> Obj:
        subscription_id = need_str(call.params, "subscription")
        with self.store.lock:
            subscription = self.store.get("subscription", subscription_id)
            return paginate(
                self.billing.items_of(subscription), call.params, "/v1/subscription_items"
            )

    @route("GET", "/v1/subscription_items/{id}")
    def get_subscription_item(self, call: Call) -> Obj:
        return public(self.store.get("subscription_item", call.path_args[0]))

    @route("POST", "/v1/subscription_items/{id}")
    def update_subscription_item(self, call: Call) -> Obj:
        with self.store.lock:
            return public(self.billing.update_item(call.path_args[0], call.params, call.request))

    @route("DELETE", "/v1/subscription_items/{id}")
    def delete_subscription_item(self, call: Call) -> Obj:
        return self.billing.delete_item(call.path_args[0], call.params, call.request)

    @route("GET", "/v1/invoiceitems")
    def list_invoice_items(self, call: Call) -> Obj:
        return self.billing.invoicing.list_invoice_items(call.params)

    @route("GET", "/v1/invoiceitems/{id}")
    def get_invoice_item(self, call: Call) -> Obj:
        return public(self.store.get("invoiceitem", call.path_args[0]))

    # ---- test clocks --------------------------------------------------------------------

    @route("POST", "/v1/test_helpers/test_clocks")
    def create_clock(self, call: Call) -> Obj:
        frozen_time = need_int(call.params, "frozen_time")
        with self.store.lock:
            clock = objects.test_clock(
                self.store.new_id("clock", 24),
                Billing.wall_now(),
                frozen_time,
                call.params.get("name") or None,
            )
            return public(self.store.put("test_helpers.test_clock", clock))

    @route("GET", "/v1/test_helpers/test_clocks")
    def list_clocks(self, call: Call) -> Obj:
        return self._list("test_helpers.test_clock", call, {})

    @route("GET", "/v1/test_helpers/test_clocks/{id}")
    def get_clock(self, call: Call) -> Obj:
        return public(self.store.get("test_helpers.test_clock", call.path_args[0], "test_clock"))

    @route("DELETE", "/v1/test_helpers/test_clocks/{id}")
    def delete_clock(self, call: Call) -> Obj:
        return self.store.delete("test_helpers.test_clock", call.path_args[0], "test_clock")

    @route("POST", "/v1/test_helpers/test_clocks/{id}/advance")
    def advance_clock(self, call: Call) -> Obj:
        frozen_time = need_int(call.params, "frozen_time")
        return public(self.billing.advance_clock(call.path_args[0], frozen_time))

    # ---- invoices -----------------------------------------------------------------------

    @route("GET", "/v1/invoices")
    def list_invoices(self, call: Call) -> Obj:
        params = call.params
        with self.store.lock:
            found = [
                i
                for i in reversed(self.store.all("invoice"))
                if all(
                    i.get(k) == params[k]
                    for k in ("customer", "status", "test_clock")
                    if params.get(k)
                )
                and (
                    not params.get("subscription")
                    or _invoice_subscription(i) == params["subscription"]
                )
            ]
            return paginate(found, params, "/v1/invoices", self.billing.invoicing.render_invoice)

    # Before /v1/invoices/{id}: a literal segment wins over a parameter.
    @route("POST", "/v1/invoices/create_preview")
    def create_preview(self, call: Call) -> Obj:
        return self.billing.invoicing.preview(call.params, self.billing.preview_spans)

    @route("GET", "/v1/invoices/{id}")
    def get_invoice(self, call: Call) -> Obj:
        with self.store.lock:
            invoice = self.store.get("invoice", call.path_args[0])
            return self.billing.invoicing.render_invoice(invoice)

    @route("POST", "/v1/invoices/{id}")
    def update_invoice(self, call: Call) -> Obj:
        invoicing = self.billing.invoicing
        with self.store.lock:
            invoice = invoicing.update_invoice(call.path_args[0], call.params, call.request)
            return invoicing.render_invoice(invoice)

    @route("POST", "/v1/invoices/{id}/finalize")
    def finalize_invoice(self, call: Call) -> Obj:
        invoicing = self.billing.invoicing
        with self.store.lock:
            invoice = invoicing.finalize_invoice(call.path_args[0], call.params)
            return invoicing.render_invoice(invoice)

    @route("GET", "/v1/invoices/{id}/lines")
    def invoice_lines(self, call: Call) -> Obj:
        return self.billing.invoicing.lines_page(call.path_args[0], call.params)

    # ---- events and webhook endpoints ---------------------------------------------------

    @route("GET", "/v1/events")
    def list_events(self, call: Call) -> Obj:
        types = set(as_list(call.params, "types"))
        if call.params.get("type"):
            types.add(call.params["type"])
        with self.store.lock:
            found = [
                e for e in reversed(self.store.all("event")) if not types or e["type"] in types
            ]
            return paginate(found, call.params, "/v1/events")

    @route("GET", "/v1/events/{id}")
    def get_event(self, call: Call) -> Obj:
        return public(self.store.get("event", call.path_args[0], "event"))

    @route("GET", "/v2/core/events/{id}")
    def get_thin_event(self, call: Call) -> Obj:
        return public(self.store.get(THIN_EVENT, call.path_args[0], "event"))

    @route("GET", "/v2/core/events")
    def list_thin_events(self, call: Call) -> Obj:
        with self.store.lock:
            found = [public(e) for e in reversed(self.store.all(THIN_EVENT))]
        limit = as_int(call.params, "limit", 20) or 20
        return {"data": found[:limit], "next_page_url": None, "previous_page_url": None}

    @route("POST", "/v1/webhook_endpoints")
    def create_webhook_endpoint(self, call: Call) -> Obj:
        params = call.params
        url = need_str(params, "url")
        enabled = as_list(params, "enabled_events")
        if not enabled:
            raise required("enabled_events")
        with self.store.lock:
            endpoint = objects.webhook_endpoint(
                self.store.new_id("we", 24),
                Billing.wall_now(),
                params,
                self.store.new_id("whsec", 32),
                self.billing.events.api_version,
            )
            endpoint["url"] = url
            endpoint["enabled_events"] = [str(e) for e in enabled]
            endpoint["metadata"] = _metadata(params)
            return public(self.store.put("webhook_endpoint", endpoint))

    @route("GET", "/v1/webhook_endpoints")
    def list_webhook_endpoints(self, call: Call) -> Obj:
        with self.store.lock:
            page = paginate(
                reversed(self.store.all("webhook_endpoint")), call.params, "/v1/webhook_endpoints"
            )
        for endpoint in page["data"]:
            endpoint.pop("secret", None)  # Stripe shows the secret only at creation
        return page

    @route("GET", "/v1/webhook_endpoints/{id}")
    def get_webhook_endpoint(self, call: Call) -> Obj:
        endpoint = public(self.store.get("webhook_endpoint", call.path_args[0]))
        endpoint.pop("secret", None)
        return endpoint

    @route("POST", "/v1/webhook_endpoints/{id}")
    def update_webhook_endpoint(self, call: Call) -> Obj:
        with self.store.lock:
            endpoint = self.store.get("webhook_endpoint", call.path_args[0])
            if call.params.get("enabled_events"):
                endpoint["enabled_events"] = [
                    str(e) for e in as_list(call.params, "enabled_events")
                ]
            disabled = as_bool(call.params, "disabled")
            if disabled is not None:
                endpoint["status"] = "disabled" if disabled else "enabled"
            result = self._update("webhook_endpoint", call, ("url", "description"))
        result.pop("secret", None)
        return result

    @route("DELETE", "/v1/webhook_endpoints/{id}")
    def delete_webhook_endpoint(self, call: Call) -> Obj:
        return self.store.delete("webhook_endpoint", call.path_args[0])

    # ---- expansion ----------------------------------------------------------------------

    # Fields whose id `expand[]` may replace by the object (docs/stripe.md#S-LIST-2).
    EXPANDABLE = {
        "customer": "customer",
        "invoice": "invoice",
        "latest_invoice": "invoice",
        "price": "price",
        "product": "product",
        "subscription": "subscription",
        "subscription_item": "subscription_item",
        "test_clock": "test_helpers.test_clock",
    }

    def expand(self, result: Any, paths: list[str]) -> Any:
        """`result` with each dotted path's ids replaced by objects (`data.` walks a list)."""
        expanded = copy.deepcopy(result)
        with self.store.lock:
            for path in paths:
                self._expand(expanded, path.split("."), path)
        return expanded

    def _expand(self, node: Any, parts: list[str], path: str) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        value = node.get(head)
        if isinstance(value, list):
            for item in value:
                self._expand(item, rest, path)
            return
        if isinstance(value, dict):
            self._expand(value, rest, path)
            return
        resource = self.EXPANDABLE.get(head)
        if resource is None and head in node:
            raise invalid(f"This property cannot be expanded ({path}).", param="expand")
        if isinstance(value, str) and resource is not None:
            found = self.store.find(resource, value)
            if found is not None:
                node[head] = self._render(resource, found)
                self._expand(node[head], rest, path)

    def _render(self, resource: str, obj: Obj) -> Obj:
        if resource == "invoice":
            return self.billing.invoicing.render_invoice(obj)
        if resource == "subscription":
            return self.billing.render_subscription(obj)
        return public(obj)

    # ---- shared -------------------------------------------------------------------------

    def _list(self, resource: str, call: Call, filters: dict[str, Any]) -> Obj:
        with self.store.lock:
            found = [
                obj
                for obj in reversed(self.store.all(resource))
                if all(obj.get(k) == v for k, v in filters.items())
            ]
            url = (
                "/v1/" + resource.replace("test_helpers.", "test_helpers/").replace(".", "/") + "s"
            )
            return paginate(found, call.params, url)

    def _update(self, resource: str, call: Call, fields: tuple[str, ...]) -> Obj:
        with self.store.lock:
            obj = self.store.get(resource, call.path_args[0])
            for name in fields:
                if name in call.params:
                    obj[name] = call.params[name] or None
            if "metadata" in call.params:
                update = call.params["metadata"]
                obj["metadata"] = (
                    {} if update == "" else merge_metadata(obj.get("metadata") or {}, update)
                )
            if "updated" in obj:
                obj["updated"] = Billing.wall_now()
            return public(obj)


def _invoice_subscription(invoice: Obj) -> str | None:
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription")
    return subscription if isinstance(subscription, str) else None


def not_found(path: str) -> StripeApiError:
    return StripeApiError(404, f"Unrecognized request URL (path: {path}).")


__all__ = ["ROUTES", "Api", "Call", "match", "missing", "not_found", "path_exists"]
