"""`meterbridge verify`: the test-clock scenario that loses usage in the naive integration,
run against whatever Stripe the CLI points at, checking each fact on the way.

The clock starts 32 days in the past (docs/stripe.md#S-TS-1, #S-TS-2: a clock at real "now"
puts the invoice period in the real future, outside the meter-event timestamp window).
Usage is reported the way the worker reports it — domain planning, deterministic
identifier, timestamp rule, StripeGateway — and then *confirmed*: the meter event summary
must show it before the draft finalizes, and the finalized invoice must bill it.
"""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import stripe

from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.domain.eligibility import reported_line_meters
from meterbridge.domain.invoices import (
    VERIFY_METADATA_KEY,
    Invoice,
    InvoiceLine,
    Meter,
    MeteredPrice,
)
from meterbridge.domain.reports import meter_event_timestamp, plan_invoice, stripe_value_text
from meterbridge.errors import MeterbridgeError

DAY = 86_400
CLOCK_AGE_SECONDS = 32 * DAY  # inside Stripe's 35-day window for the whole first period


class CheckFailed(Exception):
    """A step ran but Stripe's answer is not what a correct integration needs."""


@dataclass
class Step:
    name: str
    passed: bool | None = None  # None: not run (an earlier step it needs failed)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Verification:
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)


STEP_NAMES = [
    "test clock 32 days in the past",
    "customer on the clock",
    "meter and metered price",
    "subscription",
    "advance to the renewal",
    "renewal invoice is a draft",
    "usage reported through meterbridge's gateway",
    "meter event summary shows the usage before finalization",
    "advance past the grace period",
    "finalized invoice bills the usage",
    "clean up (test clock deleted, meter deactivated)",
]


class Verifier:
    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        usage: Decimal = Decimal("42"),
        timeout_seconds: float = 120.0,
        poll_seconds: float = 0.5,
        keep: bool = False,
        on_step: Callable[[Step], None] | None = None,
    ):
        addresses: Any = {"api": api_base, "meter_events": api_base} if api_base else None
        self._client = stripe.StripeClient(api_key, base_addresses=addresses)
        self._gateway = StripeGateway(api_key, api_base=api_base, max_network_retries=2)
        self._usage = usage
        self._timeout = timeout_seconds
        self._poll = poll_seconds
        self._keep = keep
        self._on_step = on_step
        self._suffix = uuid.uuid4().hex[:10]
        self.state: dict[str, Any] = {}

    def run(self) -> Verification:
        verification = Verification()
        actions: list[Callable[[], str]] = [
            self._create_clock,
            self._create_customer,
            self._create_meter_and_price,
            self._create_subscription,
            self._advance_to_renewal,
            self._find_renewal_draft,
            self._report_usage,
            self._check_summary,
            self._advance_past_grace,
            self._check_finalized_invoice,
        ]
        blocked = False
        for name, action in zip(STEP_NAMES, actions, strict=False):
            step = Step(name)
            verification.steps.append(step)
            if blocked:
                step.detail = "not run: an earlier step it depends on failed"
            else:
                self._run_step(step, action)
                # The summary check failing is the finding, not a blocker: carry on to show
                # what the finalized invoice then bills.
                blocked = step.passed is False and action != self._check_summary
            self._notify(step)
        cleanup = Step(STEP_NAMES[-1])
        verification.steps.append(cleanup)
        if self._keep:
            cleanup.passed, cleanup.detail = True, "kept (--keep): " + self._kept()
        else:
            self._run_step(cleanup, self._clean_up)
        self._notify(cleanup)
        return verification

    def _run_step(self, step: Step, action: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            step.detail = action()
            step.passed = True
        except CheckFailed as failure:
            step.passed, step.detail = False, str(failure)
        except (stripe.StripeError, MeterbridgeError) as error:
            step.passed, step.detail = False, f"{type(error).__name__}: {_message(error)}"
        step.seconds = time.monotonic() - started

    def _notify(self, step: Step) -> None:
        if self._on_step:
            self._on_step(step)

    # --- steps --------------------------------------------------------------------------

    def _create_clock(self) -> str:
        frozen = (int(time.time()) - CLOCK_AGE_SECONDS) // 3600 * 3600  # hour-aligned
        clock = self._client.v1.test_helpers.test_clocks.create(
            {"frozen_time": frozen, "name": f"meterbridge verify {self._suffix}"}
        )
        self.state["clock"] = clock.id
        return f"{clock.id} frozen at {_when(frozen)}"

    def _create_customer(self) -> str:
        customer = self._client.v1.customers.create(
            {"name": f"meterbridge verify {self._suffix}", "test_clock": self.state["clock"]}
        )
        self.state["customer"] = customer.id
        return str(customer.id)

    def _create_meter_and_price(self) -> str:
        event_name = f"meterbridge_verify_{self._suffix}"
        meter = self._client.v1.billing.meters.create(
            {
                "display_name": f"meterbridge verify {self._suffix}",
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
            }
        )
        self.state["meter"] = meter.id
        price = self._client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount_decimal": Decimal(1),
                "product_data": {"name": f"meterbridge verify {self._suffix}"},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
        self.state["price"] = price.id
        return f"meter {meter.id} ({event_name}), price {price.id}"

    def _create_subscription(self) -> str:
        params: Any = {
            "customer": self.state["customer"],
            "items": [{"price": self.state["price"]}],
            # The stack being checked leaves this subscription's invoices alone: verify
            # reports itself, and leaves no ledger record or metric behind on the stack.
            "metadata": {VERIFY_METADATA_KEY: "true"},
        }
        subscription = self._client.v1.subscriptions.create(params)
        self.state["subscription"] = subscription.id
        document = subscription.to_dict()
        items = (document.get("items") or {}).get("data") or [{}]
        period_end = items[0].get("current_period_end") or document.get("current_period_end")
        if not period_end:
            raise CheckFailed(f"subscription {subscription.id} shows no current period end")
        self.state["period_end"] = int(period_end)
        return f"{subscription.id}, first period ends {_when(int(period_end))}"

    def _advance_to_renewal(self) -> str:
        target = self.state["period_end"] + 60
        self._advance(target)
        return f"clock ready at {_when(target)}"

    def _find_renewal_draft(self) -> str:
        invoices = self._client.v1.invoices.list(
            {"customer": self.state["customer"], "subscription": self.state["subscription"]}
        )
        renewals = [i for i in invoices.data if i.billing_reason == "subscription_cycle"]
        if not renewals:
            raise CheckFailed("no subscription_cycle invoice after the renewal")
        draft = renewals[0]
        self.state["invoice"] = draft.id
        if draft.status != "draft":
            raise CheckFailed(f"renewal {draft.id} is already {draft.status!r}, not a draft")
        finalizes = draft.automatically_finalizes_at
        self.state["automatically_finalizes_at"] = finalizes
        return f"{draft.id}, finalizes at {_when(finalizes) if finalizes else 'unknown'}"

    def _report_usage(self) -> str:
        """The worker's path: plan from the invoice, identifier, timestamp rule, gateway."""
        document = self._client.v1.invoices.retrieve(self.state["invoice"]).to_dict()
        invoice = Invoice.model_validate(document)
        lines = list(invoice.lines)
        if invoice.lines_have_more:
            lines += [
                InvoiceLine.from_stripe(x)
                for x in self._gateway.invoice_lines(invoice.id, lines[-1].id if lines else None)
            ]
        meters: dict[str, Meter | None] = {}
        for line in lines:
            price = line.price or (
                MeteredPrice.from_stripe(self._gateway.price(line.price_id))
                if line.price_id
                else None
            )
            meters[line.id] = (
                Meter.from_stripe(self._gateway.meter(price.meter_id))
                if price is not None and price.is_metered and price.meter_id
                else None
            )
        plans = plan_invoice(invoice, reported_line_meters(lines, meters, None), 3600).reports
        if len(plans) != 1:
            raise CheckFailed(f"expected one metered line on {invoice.id}, planned {len(plans)}")
        [plan] = plans
        timestamp = meter_event_timestamp(plan.period, int(time.time()), plan.test_clock)
        receipt = self._gateway.create_meter_event(
            event_name=plan.meter.event_name,
            payload={
                plan.meter.customer_payload_key: plan.customer_id,
                plan.meter.value_payload_key: stripe_value_text(self._usage),
            },
            identifier=plan.identifier,
            timestamp=timestamp,
        )
        self.state["period"] = (plan.period.start, plan.period.end)
        return (
            f"{stripe_value_text(self._usage)} as {plan.identifier} at {_when(timestamp)}"
            f" (request {receipt.request_id})"
        )

    def _check_summary(self) -> str:
        start, end = self.state["period"]
        start_minute, end_minute = start // 60 * 60, -(-end // 60) * 60
        deadline = time.monotonic() + self._timeout
        observed = Decimal(0)
        while True:
            summaries = self._client.v1.billing.meters.event_summaries.list(
                self.state["meter"],
                {
                    "customer": self.state["customer"],
                    "start_time": start_minute,
                    "end_time": end_minute,
                },
            )
            observed = sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))
            if observed == self._usage or time.monotonic() >= deadline:
                break
            time.sleep(self._poll)
        invoice = self._client.v1.invoices.retrieve(self.state["invoice"])
        if observed != self._usage:
            raise CheckFailed(
                f"meter event summary shows {observed}, expected {self._usage} after"
                f" {self._timeout:g} s: Stripe has not counted the usage, and invoice"
                f" {invoice.id} ({invoice.status}) would finalize without it. Causes: aggregation"
                " still running (wait and rerun), or the event was rejected asynchronously"
                " (check the meter's error reports / v1.billing.meter.error_report_triggered)."
            )
        if invoice.status != "draft":
            raise CheckFailed(f"usage counted, but {invoice.id} already finalized")
        return f"aggregated_value {observed} while {invoice.id} is still a draft"

    def _advance_past_grace(self) -> str:
        finalizes = self.state.get("automatically_finalizes_at") or self.state["period_end"] + 3600
        target = int(finalizes) + 60
        self._advance(target)
        return f"clock ready at {_when(target)}"

    def _check_finalized_invoice(self) -> str:
        invoice = self._client.v1.invoices.retrieve(self.state["invoice"]).to_dict()
        if invoice.get("status") == "draft":
            raise CheckFailed(f"{invoice['id']} is still a draft after its grace period")
        metered = [
            line
            for line in (invoice.get("lines") or {}).get("data", [])
            if _line_price(line) == self.state["price"]
        ]
        if not metered:
            raise CheckFailed(f"{invoice['id']} has no line for price {self.state['price']}")
        line = metered[0]
        quantity = Decimal(str(line.get("quantity_decimal") or line.get("quantity") or 0))
        if quantity != self._usage:
            raise CheckFailed(
                f"{invoice['id']} finalized ({invoice.get('status')}) billing quantity"
                f" {quantity}, expected {self._usage}: the usage is missing from the invoice"
            )
        return f"{invoice['id']} {invoice.get('status')}, quantity {quantity}"

    def _clean_up(self) -> str:
        done = []
        if "clock" in self.state:  # deleting a clock deletes its customers and subscriptions
            self._client.v1.test_helpers.test_clocks.delete(self.state["clock"])
            done.append(f"deleted {self.state['clock']}")
        if "meter" in self.state:  # meters cannot be deleted, only deactivated
            self._client.v1.billing.meters.deactivate(self.state["meter"])
            done.append(f"deactivated {self.state['meter']}")
        return ", ".join(done) or "nothing was created"

    # --- helpers ------------------------------------------------------------------------

    def _advance(self, target: int) -> None:
        clock_id = self.state["clock"]
        self._client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": target})
        deadline = time.monotonic() + self._timeout
        while True:
            clock = self._client.v1.test_helpers.test_clocks.retrieve(clock_id)
            if clock.status == "ready":
                return
            if clock.status == "internal_failure":
                raise CheckFailed(f"test clock {clock_id} failed to advance (internal_failure)")
            if time.monotonic() >= deadline:
                raise CheckFailed(
                    f"test clock {clock_id} still {clock.status!r} after {self._timeout:g} s"
                )
            time.sleep(self._poll)

    def _kept(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.state.items() if isinstance(v, str))


def _line_price(line: dict[str, Any]) -> str | None:
    reference = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    if reference is None:
        reference = line.get("price")
    if isinstance(reference, dict):
        reference = reference.get("id")
    return str(reference) if reference else None


def _when(moment: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


def _message(error: Exception) -> str:
    if isinstance(error, stripe.StripeError):
        return str(error.user_message or error)
    return str(error)
