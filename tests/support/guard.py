"""Invoice guard harness: real renewals on emulator test clocks, delivered to the worker via SQS.

The emulator aggregates meter events only after `aggregation_lag_seconds` of wall time and
finalizes drafts when a test clock passes their `automatically_finalizes_at`, with the
quantity aggregated by then — the naive integration's failure, reproduced on demand.
"""

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import stripe

from meterbridge.handlers import worker as worker_module
from meterbridge_local.lambda_runtime import sqs_record
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.lambda_context import FakeLambdaContext
from tests.support.worker import USAGE, WORKER_QUEUE_ARN, Billing, enqueue, failed_ids

DAY = 86_400
HOUR = 3600


def plain(document: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return result


def receive(queue_url: str, *, wait_seconds: int = 2) -> list[dict[str, Any]]:
    """Whatever is visible now (delayed confirm messages included), as Lambda records."""
    messages = boto3.client("sqs").receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
        WaitTimeSeconds=wait_seconds,
    )
    return [sqs_record(message, WORKER_QUEUE_ARN) for message in messages.get("Messages", [])]


def run_records(
    worker: worker_module.Worker, queue_url: str, records: list[dict[str, Any]]
) -> set[str]:
    """One invocation; successes are deleted as Lambda's event source mapping does."""
    response = worker_module.handler({"Records": records}, FakeLambdaContext(), worker=worker)
    failed = failed_ids(response)
    sqs = boto3.client("sqs")
    for record in records:
        if record["messageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
    return failed


def body_kind(record: dict[str, Any]) -> str:
    return str(record["messageAttributes"].get("body_kind", {}).get("stringValue", "event"))


@dataclass
class Renewal:
    """One customer on its own test clock, subscribed to the metered price."""

    customer: str
    clock: str
    subscription: str
    usage: str
    invoice: dict[str, Any] = field(default_factory=dict)


class GuardWorld:
    """Test clocks, renewals and event delivery for guard tests."""

    def __init__(self, emulator: StripeEmulator, queue_url: str):
        self.emulator = emulator
        self.queue_url = queue_url
        self.billing = Billing(emulator)
        self.client: stripe.StripeClient = self.billing.client
        self.meter = self.billing.meter()
        self.price = self.billing.metered_price(self.meter)

    def subscribe(self, usage: str) -> Renewal:
        # frozen_time about 32 days ago keeps every timestamp inside Stripe's window
        # (docs/stripe.md#S-TS-1).
        start = int(time.time()) - 32 * DAY
        clock = self.client.v1.test_helpers.test_clocks.create({"frozen_time": start})
        customer = self.client.v1.customers.create({"test_clock": clock.id})
        subscription = self.client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": self.price["id"]}]}
        )
        USAGE[(customer.id, self.meter["event_name"])] = usage
        return Renewal(customer.id, clock.id, subscription.id, usage)

    def advance(self, renewal: Renewal, seconds: int) -> None:
        clock = self.client.v1.test_helpers.test_clocks.retrieve(renewal.clock)
        self.client.v1.test_helpers.test_clocks.advance(
            renewal.clock, {"frozen_time": int(clock.frozen_time) + seconds}
        )
        deadline = time.monotonic() + 10
        while self.client.v1.test_helpers.test_clocks.retrieve(renewal.clock).status != "ready":
            assert time.monotonic() < deadline, "test clock did not become ready"
            time.sleep(0.01)

    def renew(self, renewal: Renewal) -> dict[str, Any]:
        """Advance to the end of the first period: the renewal draft and its invoice.created."""
        subscription = self.client.v1.subscriptions.retrieve(renewal.subscription)
        item = subscription["items"].data[0]
        clock = self.client.v1.test_helpers.test_clocks.retrieve(renewal.clock)
        self.advance(renewal, int(item.current_period_end) - int(clock.frozen_time) + 1)
        drafts = self.client.v1.invoices.list(
            {"customer": renewal.customer, "status": "draft"}
        ).data
        [draft] = drafts
        renewal.invoice = plain(draft.to_dict())
        return renewal.invoice

    def event(self, event_type: str, invoice_id: str) -> dict[str, Any]:
        for event in self.client.v1.events.list({"type": event_type, "limit": 100}).data:
            document = plain(event.to_dict())
            if document["data"]["object"]["id"] == invoice_id:
                return document
        raise AssertionError(f"no {event_type} event for {invoice_id}")

    def deliver(self, event_type: str, renewal: Renewal) -> None:
        enqueue(self.queue_url, self.event(event_type, renewal.invoice["id"]))

    def thin_events(self, event_type: str) -> list[dict[str, Any]]:
        """Thin notifications as Stripe would deliver them (no `data`)."""
        with self.emulator.store.lock:
            events = [
                e for e in self.emulator.store.all("v2.core.event") if e["type"] == event_type
            ]
        keys = (
            "id",
            "object",
            "type",
            "created",
            "livemode",
            "context",
            "reason",
            "related_object",
        )
        return [{key: event.get(key) for key in keys} for event in events]

    def invoice(self, renewal: Renewal) -> dict[str, Any]:
        return plain(self.client.v1.invoices.retrieve(renewal.invoice["id"]).to_dict())

    def quantity(self, renewal: Renewal) -> Decimal:
        line = self.invoice(renewal)["lines"]["data"][0]
        return Decimal(line.get("quantity_decimal") or line["quantity"])


def drain(
    worker: worker_module.Worker,
    queue_url: str,
    until: Any,
    timeout: float = 20.0,
) -> list[str]:
    """Run the worker on whatever the queue delivers until `until()` holds; kinds seen."""
    kinds: list[str] = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"condition not reached; messages seen: {kinds}"
        records = receive(queue_url, wait_seconds=1)
        if records:
            kinds += [body_kind(r) for r in records]
            run_records(worker, queue_url, records)
    return kinds


def emitted_metrics(stdout: str) -> list[str]:
    """Names of the EMF metrics Powertools printed."""
    names: list[str] = []
    for line in stdout.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            names += [metric["Name"] for metric in directive["Metrics"]]
    return names
