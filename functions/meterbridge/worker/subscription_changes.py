"""Mid-period changes: usage Stripe billed at the moment of a change, before any report.

When a metered price is removed or switched mid-period (flexible billing mode, the default
since 2025-09-30) or a subscription is cancelled, Stripe computes the usage aggregated up to
that moment at once (docs/stripe.md#S-CHANGE-1). Usage reported at renewal cannot
reach it: customer.subscription.updated / deleted tell which meter and period were cut
short, and when the usage source has usage there, UsageNotReported says so with its size.

With continuous reporting (docs/continuous.md) the sweeps have sent that usage already, up
to their last window: the change is met by reporting the rest up to its moment at once (a
window ending there, under the pair's watermark, so nothing is sent twice), and what Stripe
could not have counted when it computed the invoice item or final invoice — the usage after
the last sweep — is alarmed with its size. Reconciliation of that invoice (at
invoice.finalized) then judges what Stripe billed against the usage source.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterbridge.domain.continuous import SweepPair
from meterbridge.domain.guard import expected_aggregate, sent_usage
from meterbridge.domain.invoices import Meter, MeteredPrice, ServicePeriod, is_verification
from meterbridge.errors import PermanentError
from meterbridge.observability import count, logger
from meterbridge.worker.ports import Stripe, WindowLedger
from meterbridge.worker.usage import UsageReader
from meterbridge.worker.windows import Context, Windows

UPDATED = "customer.subscription.updated"
DELETED = "customer.subscription.deleted"


@dataclass(frozen=True)
class CutShort:
    """A metered item whose period Stripe billed early, and the usage it did not see."""

    customer_id: str
    meter: Meter
    item_id: str
    period: ServicePeriod
    usage: Decimal


@dataclass(frozen=True)
class Continuous:
    """What reports a cut-short pair's usage at once (CONTINUOUS_REPORTING not off)."""

    ledger: WindowLedger
    windows: Windows
    clock: Callable[[], float] = time.time


class SubscriptionChanges:
    def __init__(self, stripe: Stripe, usage: UsageReader, continuous: Continuous | None = None):
        self._stripe = stripe
        self._usage = usage
        self._continuous = continuous

    def on_event(self, event: dict[str, Any]) -> list[CutShort]:
        data = event.get("data") or {}
        subscription = data.get("object") or {}
        if not isinstance(subscription, dict) or subscription.get("object") != "subscription":
            raise PermanentError(f"event {event.get('id')} carries no subscription")
        if is_verification(subscription.get("metadata")):
            return []  # meterbridge verify's own subscription
        customer = _id_of(subscription.get("customer"))
        if event.get("type") == DELETED:
            moment = int(subscription.get("canceled_at") or subscription.get("ended_at") or 0)
            items = _items(subscription)
        else:
            moment = int(event.get("created") or 0)
            before = (data.get("previous_attributes") or {}).get("items")
            if not isinstance(before, dict):
                return []  # the items did not change
            now_items = {item.get("id"): _price_id(item) for item in _items(subscription)}
            items = [
                item
                for item in _items({"items": before})
                if now_items.get(item.get("id")) != _price_id(item)
            ]
        clock = _id_of(subscription.get("test_clock")) if subscription.get("test_clock") else None
        offset = 0
        if clock is not None and self._continuous is not None:
            offset = self._stripe.test_clock_time(clock) - int(self._continuous.clock())
        cut = []
        for item in items:
            found = self._cut_short(customer, item, moment, subscription, offset)
            if found is not None:
                cut.append(found)
        return cut

    def _cut_short(
        self,
        customer: str,
        item: dict[str, Any],
        moment: int,
        subscription: dict[str, Any],
        clock_offset: int,
    ) -> CutShort | None:
        meter = self._meter_of(item)
        start = item.get("current_period_start")
        end = item.get("current_period_end")
        if meter is None or start is None or not moment:
            return None
        if end is not None and moment >= int(end):
            return None  # ended with its period: the renewal reports it
        period = ServicePeriod(start=int(start), end=max(int(start) + 1, moment))
        usage = self._usage.current(customer, meter.event_name, period)
        if self._continuous is not None:
            usage -= self._reported(customer, meter, period)
            pair = SweepPair(
                customer_id=customer,
                meter_id=meter.id,
                period=period,
                subscription_items=(str(item.get("id")),),
                livemode=bool(subscription.get("livemode")),
                test_clock=_id_of(subscription.get("test_clock"))
                if subscription.get("test_clock")
                else None,
            )
            try:
                tenant = self._usage.tenant(customer)
                self._continuous.windows.advance(Context(pair, meter, tenant, clock_offset), moment)
            except PermanentError as error:  # the alarm below still tells what Stripe missed
                logger.warning(
                    "could not report the cut-short period's rest",
                    extra={"customer_id": customer, "meter": meter.id, "reason": str(error)},
                )
        if usage <= 0:
            return None
        count("UsageNotReported")
        logger.error(
            "Stripe billed a metered item cut short mid-period before (all) its usage was reported",
            extra={
                "customer_id": customer,
                "meter": meter.id,
                "subscription_item": item.get("id"),
                "period_start": period.start,
                "period_end": period.end,
                "usage_not_reported": str(usage),
            },
        )
        return CutShort(customer, meter, str(item.get("id")), period, usage)

    def _reported(self, customer: str, meter: Meter, period: ServicePeriod) -> Decimal:
        """What Stripe held for the cut-short period when it billed it: the delivered reports
        timestamped inside it (the sweeps' windows so far)."""
        assert self._continuous is not None
        held = [
            sent_usage(r)
            for r in self._continuous.ledger.customer_reports(customer, since=period.start)
            if r.meter_id == meter.id
            and r.delivered
            and r.timestamp is not None
            and period.start <= r.timestamp < period.end
        ]
        return expected_aggregate(meter.formula, held, meter.event_time_window)

    def _meter_of(self, item: dict[str, Any]) -> Meter | None:
        price = item.get("price")
        if isinstance(price, str):
            price = self._stripe.price(price)
        if not isinstance(price, dict):
            return None
        metered = MeteredPrice.from_stripe(price)
        if not metered.is_metered or metered.meter_id is None:
            return None
        return Meter.from_stripe(self._stripe.meter(metered.meter_id))


def _items(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    listed = subscription.get("items")
    data = listed.get("data") if isinstance(listed, dict) else None
    return [item for item in data or [] if isinstance(item, dict)]


def _price_id(item: dict[str, Any]) -> str | None:
    return _id_of(item.get("price"))


def _id_of(reference: Any) -> str:
    if isinstance(reference, dict):
        return str(reference.get("id"))
    return str(reference)
