"""Billing set-ups real customers have, driven end to end: the Stripe billing emulator (real
SDK, test clocks), the worker (real handler, moto SQS and DynamoDB), the usage source.

Each scenario builds one customer's subscription(s), feeds usage, lets Stripe renew or change
the subscription, delivers Stripe's events to the worker and finalizes the invoices. The
outcome says whether the finalized invoices bill exactly the usage source's value, which
alarms fired before and after finalization, and what the ledger says — the rows of
docs/guard.md's scenario table (`make bench`, bench/scenario_table.py) and the facts
tests/integration/test_billing_scenarios.py asserts.
"""

import contextlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import boto3
import stripe

from meterbridge.adapters.usage_sources import UsageQuery
from meterbridge.handlers import worker as worker_module
from meterbridge.worker.ports import Ledger
from meterbridge_local.lambda_runtime import sqs_record
from meterbridge_local.ledger_reader import LedgerReader
from meterbridge_local.ops.report import InvoiceReRun, ReportingTools
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.lambda_context import FakeLambdaContext
from tests.support.stripe_objects import new_meter, new_metered_price
from tests.support.worker import API_KEY, WORKER_QUEUE_ARN, enqueue, make_worker

DAY = 86_400
HOUR = 3600
# The metrics an alarm watches (template.yaml): a person hears of any of these.
ALARM_METRICS = frozenset(
    {
        "ReportsFailed",
        "ReportsLate",
        "ConfirmationMissing",
        "InvoiceLineMismatches",
        "MeterEventErrors",
        "HoldLimitReached",
        "HoldReleaseFallback",
        "SharedMeter",
        "UsageNotReported",
    }
)
DELIVERED_EVENTS = (
    "invoice.created",
    "invoice.finalized",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
MODES = ("off", "confirm", "hold")

# --- a usage source that knows when usage happened: `python://tests.support.scenarios:usage`

_RECORDS: dict[tuple[str, str], list[tuple[int, Decimal]]] = {}
_records_lock = threading.Lock()


def usage(query: UsageQuery) -> str:
    with _records_lock:
        records = list(_RECORDS.get((query.customer, query.meter), []))
    return str(sum((v for at, v in records if query.start <= at < query.end), Decimal(0)))


def record_usage(customer: str, meter: str, at: int, value: str) -> None:
    with _records_lock:
        _RECORDS.setdefault((customer, meter), []).append((at, Decimal(value)))


# --- the outcome -------------------------------------------------------------------------


@dataclass
class Outcome:
    setup: str
    mode: str
    expected: Decimal  # what the usage source says should be billed, in all
    billed: Decimal  # what the finalized invoices bill on the meter, in all
    integer_only: bool = False  # lines show only the (truncated) integer quantity
    alarms_before: set[str] = field(default_factory=set)
    alarms_after: set[str] = field(default_factory=set)
    ledger: str = ""
    reconciled: bool = False  # the ledger calls every finalized line reconciled
    collectable: bool = True  # every finalized invoice has auto_advance (Stripe collects it)
    # Nothing reached meterbridge before Stripe finalized: Stripe billed at the moment of the
    # change, or the event came after the grace period (the stack's queue and webhook alarms
    # are what catch that outage).
    finalized_at_change: bool = False
    unfinalized: int = 0  # drafts billing the meter still open at the end (never billed)

    @property
    def right(self) -> bool:
        want = self.expected.to_integral_value(ROUND_DOWN) if self.integer_only else self.expected
        return self.billed == want and self.collectable and not self.unfinalized

    @property
    def alarmed(self) -> set[str]:
        return self.alarms_before | self.alarms_after

    def row(self) -> list[str]:
        before = (
            "n/a (nothing to see before)"
            if self.finalized_at_change
            else _names(self.alarms_before)
        )
        return [
            self.setup,
            self.mode,
            "yes" if self.right else f"**no** ({self._wrong()})",
            before,
            _names(self.alarms_after - self.alarms_before),
            self.ledger,
        ]

    def _wrong(self) -> str:
        if self.unfinalized:
            return f"{self.unfinalized} draft(s) never finalized"
        if not self.collectable:
            return "finalized with auto_advance=false: Stripe never collects it"
        return f"bills {self.billed}, usage {self.expected}"


def _names(metrics: set[str]) -> str:
    return ", ".join(sorted(metrics)) or "—"


def _reason(finding: str) -> str:
    """The reason a finding names last, in parentheses (e.g. "… (shared_meter)")."""
    if "shared meter" in finding or "priced on" in finding:
        return "shared_meter"
    if finding.endswith(")") and "(" in finding:
        reason = finding.rsplit("(", 1)[1].rstrip(")")
        return reason if " " not in reason else ""
    return ""


# --- the driver --------------------------------------------------------------------------


class Scenario:
    """One customer on its own test clock, a worker in one INVOICE_GUARD mode."""

    def __init__(
        self,
        emulator: StripeEmulator,
        ledger_table: str,
        queue_url: str,
        mode: str,
        *,
        formula: str = "sum",
        env: dict[str, str] | None = None,
    ):
        self.emulator = emulator
        self.queue_url = queue_url
        self.ledger_table = ledger_table
        self.mode = mode
        self.client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )
        self.meter = new_meter(self.client, formula=formula)
        self.price = self.metered_price()
        start = int(time.time()) - 32 * DAY
        self.start = start - start % 60
        self.clock = self.client.v1.test_helpers.test_clocks.create({"frozen_time": self.start})
        self.customer = self.client.v1.customers.create({"test_clock": self.clock.id}).id
        self.worker = make_worker(
            emulator,
            ledger_table,
            queue_url,
            env={
                "USAGE_SOURCE": "python://tests.support.scenarios:usage",
                "INVOICE_GUARD": mode,
                "CONFIRM_DELAY_SECONDS": "0",
                "CONFIRM_MAX_DELAY_SECONDS": "1",
                # Confirmation's last check falls inside the 1 h grace period.
                "CONFIRMATION_MARGIN_SECONDS": str(15 * 60),
                **(env or {}),
            },
        )
        self.metrics: list[str] = []
        self.metrics_at_finalization: list[str] | None = None
        self._seen: set[str] = set()
        self.finalized_at_change = False

    # Stripe objects
    def metered_price(self, amount: str = "0.5") -> Any:
        return new_metered_price(self.client, self.meter.id, unit_amount_decimal=amount)

    def seat_price(self) -> Any:
        return self.client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 1000,
                "product_data": {"name": "Seat"},
                "recurring": {"interval": "month"},
            }
        )

    def subscribe(self, *prices: Any, **params: Any) -> Any:
        items = [{"price": p.id} for p in prices or (self.price,)]
        request: Any = {"customer": self.customer, "items": items, **params}
        return self.client.v1.subscriptions.create(request)

    def now(self) -> int:
        return int(self.client.v1.test_helpers.test_clocks.retrieve(self.clock.id).frozen_time)

    @property
    def period_end(self) -> int:
        return int(
            self.client.v1.subscriptions.list({"customer": self.customer, "status": "all"})
            .data[0]["items"]
            .data[0]
            .current_period_end
        )

    def use(self, value: str, at: int | None = None) -> None:
        """Usage the product records (the usage source's own data), at clock time `at`."""
        record_usage(self.customer, self.meter.event_name, self.now() if at is None else at, value)

    def sweep(self) -> None:
        """A continuous-reporting sweep of this customer's test clock, at the clock's time, as
        an operator starts one (the schedule's sweeps list live subscriptions only,
        docs/stripe.md#S-LIST-3); no message attributes, like the schedule's message."""
        body = json.dumps({"meterbridge_sweep": {"test_clock": self.clock.id}})
        boto3.client("sqs").send_message(QueueUrl=self.queue_url, MessageBody=body)
        self.deliver()

    def preview(self) -> Decimal:
        """What Stripe's upcoming-invoice preview bills on the meter so far."""
        [subscription] = self.client.v1.subscriptions.list({"customer": self.customer}).data
        preview = self.client.v1.invoices.create_preview({"subscription": subscription.id})
        return sum(
            (
                Decimal(str(line.to_dict().get("quantity_decimal") or 0))
                for line in preview.lines.data
                if self._bills_meter(line)
            ),
            Decimal(0),
        )

    def advance_to(self, moment: int) -> None:
        self.client.v1.test_helpers.test_clocks.advance(self.clock.id, {"frozen_time": moment})
        deadline = time.monotonic() + 10
        while self.client.v1.test_helpers.test_clocks.retrieve(self.clock.id).status != "ready":
            assert time.monotonic() < deadline, "test clock did not become ready"
            time.sleep(0.01)

    # the worker
    def deliver(self, *, until: Callable[[], bool] | None = None, seconds: float = 2.5) -> None:
        """Stripe's new events to the worker (as the webhook queues them), then the queue
        drained: confirmation checks included, until `until()` or `seconds` pass."""
        for event in reversed(self.client.v1.events.list({"limit": 100}).data):
            if event.id in self._seen or event.type not in DELIVERED_EVENTS:
                continue
            self._seen.add(event.id)
            document = json.loads(json.dumps(event.to_dict(), default=str))
            if self._ours(document):
                enqueue(self.queue_url, document)
        deadline = time.monotonic() + seconds
        idle_since: float | None = None
        sqs = boto3.client("sqs")
        while time.monotonic() < deadline and not (until is not None and until()):
            messages = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                if until is None and idle_since is not None and time.monotonic() - idle_since > 0.3:
                    return
                idle_since = idle_since or time.monotonic()
                time.sleep(0.05)
                continue
            idle_since = None
            self._run([sqs_record(m, WORKER_QUEUE_ARN) for m in messages])

    def _ours(self, event: dict[str, Any]) -> bool:
        subject = event.get("data", {}).get("object", {})
        return subject.get("customer") == self.customer

    def _run(self, records: list[dict[str, Any]]) -> None:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            response = worker_module.handler(
                {"Records": records}, FakeLambdaContext(), worker=self.worker
            )
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        sqs = boto3.client("sqs")
        for record in records:
            if record["messageId"] not in failed:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        for line in output.getvalue().splitlines():
            if line.startswith("{") and '"_aws"' in line:
                for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                    self.metrics += [metric["Name"] for metric in directive["Metrics"]]

    def finalizing(self) -> None:
        """Mark the moment the next step lets Stripe finalize: alarms so far came before."""
        self.metrics_at_finalization = list(self.metrics)

    def finalize(self) -> None:
        """To ten minutes before the drafts' scheduled finalization (confirmation's margin:
        its checks there decide), then past the grace period (drafts finalize), Stripe's
        events delivered each time."""
        scheduled = [
            int(d.automatically_finalizes_at)
            for d in self.invoices(status="draft")
            if d.automatically_finalizes_at
        ]
        if scheduled and min(scheduled) - 600 > self.now():
            self.advance_to(min(scheduled) - 600)
            self.deliver()
        self.finalizing()
        self.advance_to(self.now() + 2 * HOUR)
        self.deliver()

    def renew(self) -> None:
        """To the end of the first period: the renewal drafts and their events."""
        self.advance_to(self.period_end + 1)
        self.deliver()

    def report_force(self) -> None:
        """`meterbridge report --invoice <draft> --force`, as the runbook's backfill."""
        reader = LedgerReader(self.ledger_table, boto3.client("dynamodb"))
        tools = ReportingTools(self.worker.pipeline, reader)
        for draft in self.invoices(status="draft"):
            InvoiceReRun(tools).run(draft.id, force=True)
        self.deliver()

    # what happened
    def invoices(self, status: str | None = None) -> list[Any]:
        found = self.client.v1.invoices.list({"customer": self.customer, "limit": 100}).data
        return [i for i in found if status is None or i.status == status]

    def outcome(self, setup: str, expected: str) -> Outcome:
        billed = Decimal(0)
        integer_only = False
        collectable = True
        unfinalized = 0
        for invoice in self.invoices():
            metered = [line for line in invoice.lines.data if self._bills_meter(line)]
            if invoice.status == "draft":
                unfinalized += bool(metered)
                continue
            if metered and invoice.billing_reason != "subscription_create":
                collectable = collectable and bool(invoice.auto_advance)
            for line in metered:
                raw = line.to_dict()
                decimal = raw.get("quantity_decimal")
                integer_only = integer_only or decimal is None
                billed += Decimal(str(decimal if decimal is not None else raw.get("quantity") or 0))
        before = set(self.metrics_at_finalization or []) & ALARM_METRICS
        ledger = self.worker.pipeline.ledger
        return Outcome(
            setup=setup,
            mode=self.mode,
            expected=Decimal(expected),
            billed=billed,
            integer_only=integer_only,
            alarms_before=before,
            alarms_after=set(self.metrics) & ALARM_METRICS,
            ledger=self._ledger_summary(ledger),
            reconciled=self._all_reconciled(ledger),
            collectable=collectable,
            finalized_at_change=self.finalized_at_change,
            unfinalized=unfinalized,
        )

    def _bills_meter(self, line: Any) -> bool:
        price = (line.to_dict().get("pricing") or {}).get("price_details", {}).get("price")
        if not price:
            return False
        recurring = self.client.v1.prices.retrieve(price).recurring
        return recurring is not None and getattr(recurring, "meter", None) == self.meter.id

    def _ledger_summary(self, ledger: Ledger) -> str:
        """Each report's life (sent · confirmed · reconciled), then each finalized
        invoice's verdict with the reasons the ledger gives."""
        parts = []
        reports = sorted(
            ledger.customer_reports(self.customer, self.start - DAY), key=lambda r: r.identifier
        )
        for report in reports:
            steps = [report.status.value]
            if report.failure_class:
                steps[0] += f" ({report.failure_class.value})"
            if report.confirmation_status:
                steps.append(report.confirmation_status.value)
            if report.reconciliation is not None:
                reason = report.reconciliation.reason
                steps.append(
                    report.reconciliation.status.value + (f" ({reason})" if reason else "")
                )
            parts.append(" · ".join(steps))
        for invoice in self.invoices():
            record = ledger.invoice(invoice.id)
            if record is None or invoice.billing_reason == "subscription_create":
                continue
            if record.status is not None and record.status.value == "failed":
                parts.append("invoice failed")
            status = record.reconciliation_status
            reasons = sorted(
                ({_reason(finding) for finding in record.findings} - {""})
                | {
                    r.reconciliation.reason
                    for r in reports
                    if r.invoice_id == invoice.id and r.reconciliation and r.reconciliation.reason
                }
            )
            if status is not None:
                parts.append(
                    f"invoice {status.value}" + (f" ({', '.join(reasons)})" if reasons else "")
                )
        return "; ".join(dict.fromkeys(parts)) or "nothing recorded"

    def _all_reconciled(self, ledger: Ledger) -> bool:
        """The ledger calls every finalized invoice of the customer's that bills the meter
        reconciled."""
        judged = [
            ledger.invoice(i.id)
            for i in self.invoices()
            if i.status != "draft" and any(self._bills_meter(line) for line in i.lines.data)
        ]
        return bool(judged) and all(
            r is not None
            and r.reconciliation_status is not None
            and r.reconciliation_status.value == "reconciled"
            for r in judged
        )


# --- the set-ups ----------------------------------------------------------------------------

Driver = Callable[[Scenario], Outcome]


def single_item(s: Scenario) -> Outcome:
    s.subscribe()
    s.use("12000", s.start + DAY)
    s.renew()
    s.finalize()
    return s.outcome("single metered item (renewal)", "12000")


def two_items_one_meter(s: Scenario) -> Outcome:
    s.subscribe(s.price, s.metered_price("0.25"))
    s.use("12000", s.start + DAY)
    s.renew()
    s.finalize()
    return s.outcome("two items priced on one meter", "12000")


def two_subscriptions_one_meter(s: Scenario) -> Outcome:
    s.subscribe()
    s.subscribe()
    s.use("12000", s.start + DAY)
    s.renew()
    s.finalize()
    return s.outcome("two subscriptions on one meter", "12000")


def count_meter(s: Scenario) -> Outcome:
    s.subscribe()
    s.use("12000", s.start + DAY)
    s.renew()
    s.finalize()
    return s.outcome("a meter with formula=count", "12000")


def integer_quantity(s: Scenario) -> Outcome:
    s.emulator.set_faults(render_api_version="2025-09-30.clover")  # lines: integer only
    try:
        s.subscribe()
        s.use("4310.5", s.start + DAY)
        s.renew()
        s.finalize()
        return s.outcome("only the integer quantity (older API version), usage 4310.5", "4310.5")
    finally:
        s.emulator.set_faults(render_api_version=None)


def slow_aggregation(s: Scenario) -> Outcome:
    """Stripe has not aggregated the usage when the grace period ends (10 min of wall time
    late, while the test clock runs through the grace period). A hold extends the grace
    period: there the usage is aggregated 2 s (wall time) later, while the draft is held."""
    s.emulator.set_faults(aggregation_lag_seconds=2.0 if s.mode == "hold" else 600.0)
    try:
        s.subscribe()
        s.use("75", s.start + DAY)
        s.renew()
        if s.mode == "hold":  # until the hold is released
            s.deliver(until=lambda: all(d.auto_advance for d in s.invoices("draft")), seconds=6)
        s.finalize()
        return s.outcome("usage aggregated after the grace period", "75")
    finally:
        s.emulator.set_faults(aggregation_lag_seconds=0.0)


def correction(s: Scenario) -> Outcome:
    s.subscribe()
    s.use("700", s.start + DAY)
    s.renew()
    s.use("100", s.start + 2 * DAY)  # usage that arrived late at the source
    s.report_force()
    s.finalize()
    return s.outcome("correction with `report --force` (runbook backfill)", "800")


def saved_500(s: Scenario) -> Outcome:
    """Stripe began executing the meter event, then answered 500: the 500 is saved under
    the request's Idempotency-Key and replayed to every retry with that key."""
    s.subscribe()
    s.use("12000", s.start + DAY)
    s.emulator.fail_next("/v1/billing/meter_events", 1, stage="during_execution")
    s.renew()
    s.deliver(seconds=3)  # the retry
    s.finalize()
    return s.outcome("Stripe answers 500 after it began a meter event", "12000")


def item_removed(s: Scenario, *, mode: str | None = None) -> Outcome:
    params = {"billing_mode": {"type": mode}} if mode else {}
    subscription = s.subscribe(s.price, s.seat_price(), **params)
    item = next(i for i in subscription["items"].data if i.price.id == s.price.id)
    s.use("40", s.start + DAY)
    s.advance_to(s.start + 10 * DAY)
    s.client.v1.subscription_items.delete(item.id)
    s.deliver()
    s.renew()
    s.finalize()
    label = f"metered item removed mid-period ({mode or 'flexible'} billing mode)"
    return s.outcome(label, "40")


def price_switched(s: Scenario) -> Outcome:
    subscription = s.subscribe(s.price, s.seat_price())
    item = next(i for i in subscription["items"].data if i.price.id == s.price.id)
    s.use("40", s.start + DAY)
    s.advance_to(s.start + 10 * DAY)
    s.client.v1.subscriptions.update(
        subscription.id, {"items": [{"id": item.id, "price": s.metered_price("0.4").id}]}
    )
    s.use("10", s.start + 11 * DAY)
    s.deliver()
    s.renew()
    s.finalize()
    return s.outcome("metered price switched mid-period", "50")


def cancel_now(s: Scenario) -> Outcome:
    subscription = s.subscribe()
    s.use("40", s.start + DAY)
    s.advance_to(s.start + 10 * DAY)
    s.finalizing()
    s.finalized_at_change = True
    s.client.v1.subscriptions.cancel(subscription.id, {"invoice_now": True})
    s.deliver()
    return s.outcome("cancelled mid-period with invoice_now=true", "40")


def cancel_at_period_end(s: Scenario) -> Outcome:
    subscription = s.subscribe()
    s.client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    s.use("40", s.start + DAY)
    s.renew()
    s.finalize()
    return s.outcome("cancelled at period end", "40")


def late_event(s: Scenario) -> Outcome:
    """invoice.created reaches the worker only after the draft finalized (a webhook outage)."""
    s.subscribe()
    s.use("30", s.start + DAY)
    s.advance_to(s.period_end + 1)
    s.finalizing()
    s.finalized_at_change = True
    s.advance_to(s.now() + 2 * HOUR)
    s.deliver()
    return s.outcome("invoice.created delivered after the grace period", "30")


def hold_released_late(s: Scenario) -> Outcome:
    """The usage is confirmed only after the draft's scheduled finalization: the held draft
    is finalized by meterbridge, and Stripe must still collect it."""
    s.emulator.set_faults(aggregation_lag_seconds=2.0)
    try:
        s.subscribe()
        s.use("12", s.start + DAY)
        s.renew()
        s.advance_to(s.now() + 2 * HOUR)  # past the schedule while held (or not)
        s.finalizing()
        s.deliver(until=lambda: not s.invoices(status="draft"), seconds=6)
        s.finalize()
        return s.outcome("hold released after automatically_finalizes_at", "12")
    finally:
        s.emulator.set_faults(aggregation_lag_seconds=0.0)


# Continuous reporting (docs/continuous.md): hourly sweeps during the period, then the
# renewal's true-up; each sweep runs at the clock's time with no settle delay.
CONTINUOUS = {"CONTINUOUS_REPORTING": "hourly", "SWEEP_SETTLE_MINUTES": "0"}


def continuous_late_usage(s: Scenario) -> Outcome:
    """Usage the source learns of after a sweep passed its time: the renewal sends it."""
    s.subscribe()
    s.use("100", s.start + DAY)
    s.advance_to(s.start + 5 * DAY)
    s.sweep()
    s.use("30", s.start + 2 * DAY)  # late: behind the watermark
    s.use("5", s.start + 20 * DAY)  # after the last sweep
    s.renew()
    s.finalize()
    return s.outcome("continuous hourly: usage arriving late at the source (true-up)", "135")


def continuous_item_removed(s: Scenario) -> Outcome:
    subscription = s.subscribe(s.price, s.seat_price())
    item = next(i for i in subscription["items"].data if i.price.id == s.price.id)
    s.use("40", s.start + DAY)
    s.advance_to(s.start + 10 * DAY)
    s.sweep()
    s.client.v1.subscription_items.delete(item.id)
    s.deliver()
    s.renew()
    s.finalize()
    return s.outcome("continuous hourly: metered item removed mid-period", "40")


def continuous_cancel_now(s: Scenario) -> Outcome:
    subscription = s.subscribe()
    s.use("40", s.start + DAY)
    s.advance_to(s.start + 10 * DAY)
    s.sweep()
    s.finalizing()
    s.finalized_at_change = True
    s.client.v1.subscriptions.cancel(subscription.id, {"invoice_now": True})
    s.deliver()
    return s.outcome("continuous hourly: cancelled mid-period with invoice_now=true", "40")


@dataclass(frozen=True)
class SetUp:
    name: str
    drive: Driver
    formula: str = "sum"
    env: tuple[tuple[str, str], ...] = ()  # worker settings beyond the scenario's


SET_UPS = (
    SetUp("single", single_item),
    SetUp("two_items", two_items_one_meter),
    SetUp("two_subscriptions", two_subscriptions_one_meter),
    SetUp("count", count_meter, formula="count"),
    SetUp("integer_quantity", integer_quantity),
    SetUp("slow_aggregation", slow_aggregation),
    SetUp("hold_released_late", hold_released_late),
    SetUp("correction", correction),
    SetUp("saved_500", saved_500),
    SetUp("item_removed", item_removed),
    SetUp("item_removed_classic", lambda s: item_removed(s, mode="classic")),
    SetUp("price_switched", price_switched),
    SetUp("cancel_now", cancel_now),
    SetUp("cancel_at_period_end", cancel_at_period_end),
    SetUp("late_event", late_event),
    SetUp("continuous_late_usage", continuous_late_usage, env=tuple(CONTINUOUS.items())),
    SetUp("continuous_item_removed", continuous_item_removed, env=tuple(CONTINUOUS.items())),
    SetUp("continuous_cancel_now", continuous_cancel_now, env=tuple(CONTINUOUS.items())),
)


def run(setup: SetUp, emulator: StripeEmulator, ledger_table: str, mode: str) -> Outcome:
    """One set-up in one INVOICE_GUARD mode, on a queue of its own."""
    sqs = boto3.client("sqs")
    queue_url = str(sqs.create_queue(QueueName=f"scenario-{uuid.uuid4().hex[:12]}")["QueueUrl"])
    try:
        scenario = Scenario(
            emulator, ledger_table, queue_url, mode, formula=setup.formula, env=dict(setup.env)
        )
        return setup.drive(scenario)
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The worker's JSON logs are not the point here (its handler holds the real stdout)."""
    log = logging.getLogger("meterbridge")
    disabled, log.disabled = log.disabled, True
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.disabled = disabled
