"""The worker's pipeline on in-memory fakes (tests/support/fakes.py): business rules tested
without moto or the emulator. Built by the same composition root as the deployed worker."""

import copy
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.reports import report_identifier
from meterbridge.handlers.worker import Worker
from meterbridge.messages import ConfirmRequest, EventEnvelope
from meterbridge.observability import metrics
from meterbridge.worker.composition import Dependencies, Pipeline, build_pipeline, worker_settings
from meterbridge.worker.confirmation import CheckOutcome
from meterbridge.worker.reporting import EventOutcome
from tests.support.fakes import FakeLedger, FakeQueue, FakeStripe, FakeUsage

DAY = 86_400
NOW = 1_800_000_000
PERIOD = ServicePeriod(start=NOW - 30 * DAY, end=NOW - 60)


@dataclass
class FakeClock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class UnitWorld:
    """Fakes behind the real pipeline; `env` sets WorkerSettings as the environment would."""

    env: dict[str, str] = field(default_factory=dict)
    stripe: FakeStripe = field(default_factory=FakeStripe)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    usage: FakeUsage = field(default_factory=FakeUsage)
    queue: FakeQueue = field(default_factory=FakeQueue)
    dead_letters: FakeQueue = field(default_factory=FakeQueue)
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        self.meter = self.stripe.add_meter("api_calls")
        self.price = self.stripe.add_price(self.meter)
        self.stripe.customers["cus_1"] = {"id": "cus_1", "object": "customer", "metadata": {}}

    @property
    def pipeline(self) -> Pipeline:
        settings = worker_settings(
            {
                "STRIPE_API_KEY": "sk_test_unit",
                "LEDGER_TABLE": "unused",
                "USAGE_SOURCE": "python://unused:unused",
                "QUEUE_URL": "https://queue.invalid/unit",
                **self.env,
            }
        )
        dependencies = Dependencies(
            stripe=self.stripe,
            ledger=self.ledger,
            usage_source=self.usage,
            confirm_queue=self.queue,
            visibility=self.queue,
            clock=self.clock,
            event_queue=self.queue,
            dead_letter_queue=self.dead_letters,
            sweep_queue=self.queue,
        )
        return build_pipeline(settings, dependencies)

    @property
    def worker(self) -> Worker:
        return Worker.from_pipeline(self.pipeline)

    def draft(
        self,
        prices: list[dict[str, Any]] | None = None,
        *,
        customer: str = "cus_1",
        period: ServicePeriod = PERIOD,
        **fields: Any,
    ) -> dict[str, Any]:
        fields.setdefault("finalizes_at", NOW + 3600)
        return self.stripe.draft(
            customer, prices or [self.price], period=period, created=period.end, **fields
        )

    def set_usage(self, value: object, customer: str = "cus_1", meter: Any = None) -> None:
        self.usage.values[(customer, (meter or self.meter)["event_name"])] = value

    def created(self, invoice: dict[str, Any], event_id: str = "evt_created") -> EventOutcome:
        """invoice.created with a snapshot of `invoice` as it is now (later changes in Stripe,
        such as a hold, do not reach an event already made)."""
        event = {
            "id": event_id,
            "object": "event",
            "type": "invoice.created",
            "created": NOW,
            "livemode": False,
            "data": {"object": copy.deepcopy(invoice)},
        }
        envelope = EventEnvelope.from_event(event)
        return self.worker.route(envelope, event)

    def finalized(self, invoice: dict[str, Any], event_id: str = "evt_final") -> EventOutcome:
        invoice["status"] = "open"
        event = {
            "id": event_id,
            "object": "event",
            "type": "invoice.finalized",
            "created": NOW,
            "livemode": False,
            "data": {"object": invoice},
        }
        return self.worker.route(EventEnvelope.from_event(event), event)

    def bill(self, invoice: dict[str, Any], *quantities: Decimal | int | str) -> None:
        """Set the finalized lines' quantities as Stripe would show them."""
        for line, quantity in zip(invoice["lines"]["data"], quantities, strict=True):
            line["quantity_decimal"] = str(quantity)
            line["quantity"] = int(Decimal(str(quantity)))

    def identifier(
        self,
        customer: str = "cus_1",
        meter: Any = None,
        revision: int = 0,
        *,
        period: ServicePeriod = PERIOD,
    ) -> str:
        return report_identifier(customer, (meter or self.meter)["id"], period, revision)

    def test_clock(self, frozen_time: int, clock_id: str = "clock_1") -> str:
        """A Stripe test clock at `frozen_time`; pass `test_clock=` to `draft`."""
        self.stripe.clocks[clock_id] = frozen_time
        return clock_id

    def check(self, invoice: dict[str, Any], number: int = 1) -> CheckOutcome:
        """Confirmation check `number` of an invoice, run now."""
        request = ConfirmRequest(invoice_id=invoice["id"], customer_id=invoice["customer"])
        return self.run_check(request.model_copy(update={"check": number}))

    def next_check(self) -> CheckOutcome:
        """Run the oldest check the worker queued (the queue's delay is not waited for)."""
        request, _ = self.queue.scheduled.pop(0)
        return self.run_check(request)

    def run_check(self, request: ConfirmRequest) -> CheckOutcome:
        return self.pipeline.confirmation.check(request, int(self.clock()))


@contextmanager
def counted_metrics() -> Iterator[Counter[str]]:
    """The worker's metrics added inside the block, by name (Powertools keeps them in memory
    until a flush, which no unit test triggers)."""
    metrics.clear_metrics()
    counts: Counter[str] = Counter()
    try:
        yield counts
    finally:
        for name, metric in metrics.metric_set.items():
            counts[name] += int(sum(metric["Value"]))
        metrics.clear_metrics()
