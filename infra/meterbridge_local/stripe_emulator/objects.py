"""Object shapes: every top-level field of Stripe's example objects (fixtures3.json).

Fields the emulator has no behaviour for get Stripe's neutral value (null, [], {}, false) so
consumers that read them find them where Stripe puts them; tests/contract checks the list.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

_ADDRESS = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}


def customer(object_id: str, created: int, params: Obj, test_clock: str | None) -> Obj:
    return {
        "id": object_id,
        "object": "customer",
        "address": params.get("address") or dict(_ADDRESS),
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": params.get("description"),
        "discount": None,
        "email": params.get("email"),
        "invoice_prefix": object_id[-7:].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": params.get("name"),
        "next_invoice_sequence": 1,
        "phone": params.get("phone"),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": test_clock,
    }


def product(object_id: str, created: int, params: Obj) -> Obj:
    return {
        "id": object_id,
        "object": "product",
        "active": params.get("active", "true") != "false",
        "created": created,
        "default_price": None,
        "description": params.get("description"),
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": params.get("name"),
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": params.get("unit_label"),
        "updated": created,
        "url": None,
    }


def price(object_id: str, created: int, params: Obj, product_id: str, recurring: Obj | None) -> Obj:
    return {
        "id": object_id,
        "object": "price",
        "active": True,
        "billing_scheme": params.get("billing_scheme") or "per_unit",
        "created": created,
        "currency": (params.get("currency") or "usd").lower(),
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": params.get("lookup_key") or None,
        "metadata": {},
        "nickname": params.get("nickname"),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": params.get("tax_behavior") or "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    }


def meter(object_id: str, created: int, params: Obj) -> Obj:
    customer_mapping = params.get("customer_mapping") or {}
    value_settings = params.get("value_settings") or {}
    aggregation = params.get("default_aggregation") or {}
    return {
        "id": object_id,
        "object": "billing.meter",
        "created": created,
        "customer_mapping": {
            "event_payload_key": customer_mapping.get("event_payload_key") or "stripe_customer_id",
            "type": customer_mapping.get("type") or "by_id",
        },
        "default_aggregation": {"formula": aggregation.get("formula") or "sum"},
        "display_name": params.get("display_name"),
        "event_name": params.get("event_name"),
        "event_time_window": params.get("event_time_window") or None,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": created,
        "value_settings": {"event_payload_key": value_settings.get("event_payload_key") or "value"},
    }


def billing_mode(mode: str, created: int) -> Obj:
    flexible = {"proration_discounts": "included"} if mode == "flexible" else None
    return {"type": mode, "flexible": flexible, "updated_at": created}


def test_clock(object_id: str, created: int, frozen_time: int, name: str | None) -> Obj:
    return {
        "id": object_id,
        "object": "test_helpers.test_clock",
        "created": created,
        "deletes_after": created + 30 * 86400,
        "frozen_time": frozen_time,
        "livemode": False,
        "name": name,
        "status": "ready",
        "status_details": {},
    }


def subscription(object_id: str, created: int, customer_obj: Obj, params: Obj) -> Obj:
    return {
        "id": object_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor": created,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": params.get("collection_method") or "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer_obj["id"],
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": params.get("description"),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": [], "has_more": False, "url": ""},
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": created,
        "status": "active",
        "test_clock": customer_obj.get("test_clock"),
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def subscription_item(object_id: str, created: int, subscription_id: str, price_obj: Obj) -> Obj:
    """Without `quantity`: a metered item has none (the spec does not allow null); licensed
    items get theirs from the caller."""
    return {
        "id": object_id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": created,
        "current_period_end": None,
        "current_period_start": None,
        "discounts": [],
        "metadata": {},
        "plan": plan_of(price_obj),
        "price": price_obj,
        "subscription": subscription_id,
        "tax_rates": [],
    }


def plan_of(price_obj: Obj) -> Obj:
    """The legacy `plan` view Stripe still embeds next to a recurring price."""
    recurring = price_obj.get("recurring") or {}
    return {
        "id": price_obj["id"],
        "object": "plan",
        "active": price_obj["active"],
        "amount": price_obj["unit_amount"],
        "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": price_obj["billing_scheme"],
        "created": price_obj["created"],
        "currency": price_obj["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": {},
        "meter": recurring.get("meter"),
        "nickname": price_obj["nickname"],
        "product": price_obj["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": recurring.get("usage_type"),
    }


def invoice(object_id: str, created: int, customer_obj: Obj, subscription_obj: Obj | None) -> Obj:
    parent = None
    if subscription_obj is not None:
        parent = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription_obj.get("metadata") or {}),
                "subscription": subscription_obj["id"],
            },
        }
    return {
        "id": object_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "meterbridge emulator",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": True,
        "automatic_tax": {
            "enabled": False,
            "liability": None,
            "status": None,
            "disabled_reason": None,
            "provider": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": "manual",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "custom_fields": None,
        "customer": customer_obj["id"],
        "customer_account": None,
        "customer_address": customer_obj.get("address"),
        "customer_email": customer_obj.get("email"),
        "customer_name": customer_obj.get("name"),
        "customer_phone": customer_obj.get("phone"),
        "customer_shipping": customer_obj.get("shipping"),
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": created,
        "period_start": created,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        # Top-level `subscription` left API version basil (2025-03-31); the id is under `parent`.
        "subscription": None,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": customer_obj.get("test_clock"),
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    }


def invoice_line(
    object_id: str,
    invoice_id: str,
    item: Obj,
    period: tuple[int, int],
) -> Obj:
    price_obj = item["price"]
    return {
        "id": object_id,
        "object": "line_item",
        "amount": 0,
        "currency": price_obj["currency"],
        "description": None,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": item["subscription"],
                "subscription_item": item["id"],
            },
        },
        "period": {"start": period[0], "end": period[1]},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "unit_amount_decimal": price_obj["unit_amount_decimal"],
        },
        "quantity": 0,
        "quantity_decimal": "0",
        "subscription": item["subscription"],
        "subtotal": 0,
        "taxes": [],
    }


def invoice_item(  # noqa: PLR0917
    object_id: str,
    created: int,
    customer_obj: Obj,
    subscription_id: str | None,
    item_id: str | None,
    price_obj: Obj,
    period: tuple[int, int],
    amount: int,
) -> Obj:
    """A pending invoice item; `quantity`/`quantity_decimal` are set by the caller."""
    parent = None
    if subscription_id is not None:
        details: Obj = {"subscription": subscription_id}
        if item_id is not None:
            details["subscription_item"] = item_id
        parent = {"type": "subscription_details", "subscription_details": details}
    return {
        "id": object_id,
        "object": "invoiceitem",
        "amount": amount,
        "currency": price_obj["currency"],
        "customer": customer_obj["id"],
        "customer_account": None,
        "date": created,
        "description": None,
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "net_amount": amount,
        "parent": parent,
        "period": {"start": period[0], "end": period[1]},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "unit_amount_decimal": price_obj["unit_amount_decimal"],
        },
        "proration": False,
        "proration_details": {"credited_items": None, "discount_amounts": []},
        "quantity": 0,
        "quantity_decimal": "0",
        "tax_rates": [],
        "test_clock": customer_obj.get("test_clock"),
    }


def invoice_item_line(
    object_id: str,
    invoice_id: str,
    invoice_item_obj: Obj,
    subscription_id: str | None,
    item_id: str | None,
    *,
    as_subscription_item: bool,
) -> Obj:
    """The line of an invoice item: `parent.invoice_item_details`, or, like a proration line,
    `parent.subscription_item_details` naming the (removed) item and the invoice item."""
    common = {
        "invoice_item": invoice_item_obj["id"],
        "proration": invoice_item_obj["proration"],
        "proration_details": {"credited_items": None},
        "subscription": subscription_id,
    }
    if as_subscription_item and item_id is not None:
        parent: Obj = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {**common, "subscription_item": item_id},
        }
    else:
        parent = {
            "type": "invoice_item_details",
            "invoice_item_details": common,
            "subscription_item_details": None,
        }
    return {
        "id": object_id,
        "object": "line_item",
        "amount": invoice_item_obj["amount"],
        "currency": invoice_item_obj["currency"],
        "description": invoice_item_obj["description"],
        "discount_amounts": [],
        "discountable": invoice_item_obj["discountable"],
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": parent,
        "period": dict(invoice_item_obj["period"]),
        "pretax_credit_amounts": [],
        "pricing": dict(invoice_item_obj["pricing"]),
        "quantity": invoice_item_obj["quantity"],
        "quantity_decimal": invoice_item_obj["quantity_decimal"],
        "subscription": subscription_id,
        "subtotal": invoice_item_obj["amount"],
        "taxes": [],
    }


def webhook_endpoint(
    object_id: str, created: int, params: Obj, secret: str, api_version: str
) -> Obj:
    return {
        "id": object_id,
        "object": "webhook_endpoint",
        "api_version": params.get("api_version") or api_version,
        "application": None,
        "created": created,
        "description": params.get("description"),
        "enabled_events": [],
        "livemode": False,
        "metadata": {},
        "secret": secret,
        "status": "enabled",
        "url": params.get("url"),
    }


def event(  # noqa: PLR0917
    object_id: str, created: int, type_: str, data: Obj, api_version: str, request: Obj
) -> Obj:
    # No `account` or `context`: Stripe omits them outside Connect (the spec does not allow null).
    return {
        "id": object_id,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": request,
        "type": type_,
    }
