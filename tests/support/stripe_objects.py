"""The Stripe objects every suite starts from: a meter, and a monthly metered price on it.

Made with the real stripe SDK through whichever client the test holds (the in-process
emulator, one in a `meterbridge local` process, or Stripe test mode).
"""

import uuid
from typing import Any

import stripe


def new_meter(
    client: stripe.StripeClient,
    *,
    event_name: str | None = None,
    formula: str = "sum",
    **params: Any,
) -> Any:
    """A meter with a unique event name unless one is given."""
    name = event_name or f"calls_{uuid.uuid4().hex[:10]}"
    request: Any = {
        "display_name": name,
        "event_name": name,
        "default_aggregation": {"formula": formula},
        **params,
    }
    return client.v1.billing.meters.create(request)


def new_metered_price(
    client: stripe.StripeClient, meter_id: str, *, unit_amount_decimal: str = "0.5", **params: Any
) -> Any:
    """A monthly price billing the meter's usage; `unit_amount=` replaces the decimal one."""
    amount = {} if "unit_amount" in params else {"unit_amount_decimal": unit_amount_decimal}
    request: Any = {
        "currency": "usd",
        **amount,
        "product_data": {"name": "API calls"},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        **params,
    }
    return client.v1.prices.create(request)
