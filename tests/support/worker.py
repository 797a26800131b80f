"""Worker test harness: Stripe objects in the billing emulator, real SQS deliveries, usage.

Everything goes over HTTP: the real stripe SDK to the emulator, the real boto3 to moto.
"""

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import stripe

from meterbridge.adapters.queue import SqsQueue
from meterbridge.adapters.usage_sources import UsageQuery, UsageSource
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.reports import report_identifier
from meterbridge.errors import TransientError
from meterbridge.handlers.worker import Worker
from meterbridge.messages import EventEnvelope, envelope_body, message_attributes
from meterbridge.worker.composition import build_pipeline, connect, worker_settings
from meterbridge.worker.ports import Ledger, Stripe
from meterbridge_local.lambda_runtime import sqs_record
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.stripe_events import snapshot_event
from tests.support.stripe_objects import new_meter, new_metered_price

# The queue the worker's event source mapping reads, as Lambda names it in each record.
WORKER_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:worker"

API_KEY = "sk_test_worker_suite"
DAY = 86_400

# --- usage for `USAGE_SOURCE=python://tests.support.worker:usage` ----------------------

USAGE: dict[tuple[str, str], object] = {}  # (customer, meter event name) → value
USAGE_QUERIES: list[UsageQuery] = []
_usage_down = threading.Event()
_usage_lock = threading.Lock()


def usage(query: UsageQuery) -> object:
    with _usage_lock:
        USAGE_QUERIES.append(query)
    if _usage_down.is_set():
        raise TransientError("usage warehouse is down")
    return USAGE.get((query.customer, query.meter), "0")


def usage_source_down(down: bool) -> None:
    if down:
        _usage_down.set()
    else:
        _usage_down.clear()


def worker_environment(
    emulator: StripeEmulator, ledger_table: str, queue_url: str, **extra: str
) -> dict[str, str]:
    return {
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "STRIPE_TIMEOUT_SECONDS": "5",
        "LEDGER_TABLE": ledger_table,
        "QUEUE_URL": queue_url,
        "USAGE_SOURCE": "python://tests.support.worker:usage",
        "RETRY_BACKOFF_BASE_SECONDS": "0",
        **extra,
    }


def make_worker(
    emulator: StripeEmulator,
    ledger_table: str,
    queue_url: str,
    *,
    env: dict[str, str] | None = None,
    ledger: Ledger | None = None,
    stripe: Stripe | None = None,
    clock: Callable[[], float] | None = None,
    usage_source: UsageSource | None = None,
    dynamodb: Any = None,
) -> Worker:
    """The worker as deployed (the composition root), with some dependencies replaced."""
    settings = worker_settings(worker_environment(emulator, ledger_table, queue_url, **(env or {})))
    dependencies = connect(settings, dynamodb=dynamodb)
    replaced: dict[str, Any] = {
        "ledger": ledger,
        "stripe": stripe,
        "clock": clock,
        "usage_source": usage_source,
    }
    dependencies = dataclasses.replace(
        dependencies, **{name: value for name, value in replaced.items() if value is not None}
    )
    return Worker.from_pipeline(build_pipeline(settings, dependencies))


# --- Stripe objects -----------------------------------------------------------------------


class Billing:
    """Builds customers, meters, metered prices and renewal drafts in the emulator."""

    def __init__(self, emulator: StripeEmulator):
        self.emulator = emulator
        self.client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )

    def meter(self, **params: Any) -> dict[str, Any]:
        meter: dict[str, Any] = new_meter(self.client, **params).to_dict()
        return meter

    def metered_price(self, meter: dict[str, Any]) -> dict[str, Any]:
        price = plain(new_metered_price(self.client, meter["id"]))
        PRICE_METERS[price["id"]] = meter["id"]
        return price

    def licensed_price(self) -> dict[str, Any]:
        return plain(
            self.client.v1.prices.create(
                {
                    "currency": "usd",
                    "unit_amount": 2000,
                    "product_data": {"name": "Seat"},
                    "recurring": {"interval": "month"},
                }
            )
        )

    def customer(self, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        return self.client.v1.customers.create({"metadata": metadata or {}}).to_dict()

    def renewal(
        self,
        customer_id: str,
        prices: list[dict[str, Any]],
        *,
        period: tuple[int, int] | None = None,
        legacy: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A draft subscription_cycle invoice with one line per price, seeded as given."""
        now = int(time.time())
        start, end = period or (now - 30 * DAY, now - 60)
        subscription = f"sub_{uuid.uuid4().hex[:14]}"
        lines = [
            line(subscription, f"si_{uuid.uuid4().hex[:14]}", price, start, end, legacy=legacy)
            for price in prices
        ]
        invoice: dict[str, Any] = {
            "customer": customer_id,
            "status": "draft",
            "billing_reason": "subscription_cycle",
            "created": now - 30,
            "livemode": False,
            "period_start": start,
            "period_end": end,
            "automatically_finalizes_at": now + 3600,
            "lines": {"object": "list", "data": lines},
        }
        if legacy:
            invoice["subscription"] = subscription
        else:
            invoice["parent"] = {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription, "metadata": {}},
            }
        invoice.update(overrides)
        return self.emulator.seed("invoice", invoice)

    def meter_events(
        self, identifier: str | None = None, customer: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            event
            for event in self.emulator.meter_events()
            if (identifier is None or event["identifier"] == identifier)
            and (customer is None or customer in event["payload"].values())
        ]


def plain(stripe_object: Any) -> dict[str, Any]:
    """JSON-ready dict (the SDK turns *_decimal fields into Decimal)."""
    result: dict[str, Any] = json.loads(json.dumps(stripe_object.to_dict(), default=str))
    return result


def line(
    subscription: str, item: str, price: dict[str, Any], start: int, end: int, *, legacy: bool
) -> dict[str, Any]:
    if legacy:
        return {
            "object": "line_item",
            "type": "subscription",
            "subscription": subscription,
            "subscription_item": item,
            "price": price,
            "period": {"start": start, "end": end},
        }
    return {
        "object": "line_item",
        "period": {"start": start, "end": end},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {"subscription": subscription, "subscription_item": item},
        },
        "pricing": {"type": "price_details", "price_details": {"price": price["id"]}},
    }


PRICE_METERS: dict[str, str] = {}  # metered price id → meter id (Billing.metered_price)


def report_id(
    invoice: dict[str, Any],
    index: int = 0,
    revision: int = 0,
    meter: dict[str, Any] | None = None,
) -> str:
    """The identifier the worker reports the invoice's line `index` under: the invoice's
    customer, the line's meter (from its price, or `meter`) and the line's period."""
    line = invoice["lines"]["data"][index]
    period = ServicePeriod(start=line["period"]["start"], end=line["period"]["end"])
    meter_id = meter["id"] if meter is not None else PRICE_METERS[price_of(line)]
    return report_identifier(str(invoice["customer"]), str(meter_id), period, revision)


def price_of(invoice_line: dict[str, Any]) -> str:
    price = ((invoice_line.get("pricing") or {}).get("price_details") or {}).get("price")
    price = price or invoice_line.get("price")
    return str(price["id"] if isinstance(price, dict) else price)


def subscription_item_of(invoice_line: dict[str, Any]) -> str:
    details = (invoice_line.get("parent") or {}).get("subscription_item_details") or {}
    return str(details.get("subscription_item") or invoice_line.get("subscription_item"))


# --- SQS deliveries ------------------------------------------------------------------------


def invoice_created(invoice: dict[str, Any]) -> dict[str, Any]:
    return snapshot_event("invoice.created", invoice)


def enqueue(queue_url: str, event: dict[str, Any], *, as_envelope: bool = False) -> None:
    """Queue a Stripe event as the webhook does (the same SQS adapter and attributes)."""
    envelope = EventEnvelope.from_event(event)
    body = envelope_body(envelope) if as_envelope else json.dumps(event)
    attributes = message_attributes(envelope, "envelope" if as_envelope else "event")
    SqsQueue(queue_url, boto3.client("sqs")).send(body, attributes)


def receive_batch(queue_url: str, expected: int) -> dict[str, Any]:
    """Receive `expected` messages and shape them as Lambda's SQS event."""
    sqs = boto3.client("sqs")
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(records) < expected and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, expected - len(records)),
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", []):
            records.append(sqs_record(message, WORKER_QUEUE_ARN))
    assert len(records) == expected, f"received {len(records)} of {expected} messages"
    return {"Records": records}


def failed_ids(response: Any) -> set[str]:
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


class Clock:
    """A settable clock for the worker: leases and the 24 h identifier window without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def decimal(text: str) -> Decimal:
    return Decimal(text)


def direct_batch(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Lambda's SQS event for `events` without going through a queue (large batches)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"direct-{index}",
                "body": json.dumps(event),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {"body_kind": {"stringValue": "event", "dataType": "String"}},
                "eventSource": "aws:sqs",
            }
            for index, event in enumerate(events)
        ]
    }
