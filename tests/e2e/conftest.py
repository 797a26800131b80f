"""One whole local stack for every end-to-end test: emulator, usage server, moto, handlers.

The handlers are the real ones (`meterbridge.handlers.webhook.handler`,
`meterbridge.handlers.worker.handler`, decorators and all), each given the dependencies
its cold start builds from the stack's environment — built here at the first invocation
instead of cached in the handler module, so other tests in this process that call the
handlers with their own settings cannot leak into this stack. The only addition is a
StripeGateway subclass that can crash the worker right after a meter event was sent.

Each test uses its own customers on its own test clock; all share one meter and price.
"""

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.adapters.stripe_gateway import MeterEventReceipt, StripeGateway
from meterbridge.handlers import webhook as webhook_module
from meterbridge.handlers import worker as worker_module
from meterbridge.handlers.worker import Worker
from meterbridge.intake import Intake
from meterbridge.worker.composition import build_pipeline, connect, worker_settings
from meterbridge_local.aws import MotoServer
from meterbridge_local.demo import (
    DEMO_API_KEY,
    TENANT_METADATA_KEY,
    BillingDriver,
    Catalog,
    Subscriber,
    add_months,
    emulator_config,
)
from meterbridge_local.stack import LocalStack
from meterbridge_local.stripe_emulator import StripeEmulator
from meterbridge_local.usage_server import UsageServer

DAY = 86_400
GRACE = 3600


class SimulatedCrash(Exception):
    """The worker dies between Stripe's answer and the ledger's `sent` write."""


class CrashableGateway(StripeGateway):
    """The real gateway; `crash_after_send(customer)` arms one crash after that customer's
    next meter event has reached Stripe."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._armed: set[str] = set()
        self.crashes = 0

    def crash_after_send(self, customer_id: str) -> None:
        with self._lock:
            self._armed.add(customer_id)

    def create_meter_event(
        self,
        *,
        event_name: str,
        payload: dict[str, str],
        identifier: str,
        timestamp: int,
        attempt: int = 1,
    ) -> MeterEventReceipt:
        receipt = super().create_meter_event(
            event_name=event_name,
            payload=payload,
            identifier=identifier,
            timestamp=timestamp,
            attempt=attempt,
        )
        with self._lock:
            customer = payload.get("stripe_customer_id", "")
            if customer in self._armed:
                self._armed.discard(customer)
                self.crashes += 1
                raise SimulatedCrash(f"worker crashed after sending {identifier}")
        return receipt


class Handlers:
    """The real handlers with the dependencies their cold start builds from the
    environment (`cold_start` once the stack has set it), not the modules' caches."""

    def __init__(self) -> None:
        self._intake: Intake | None = None
        self._worker: Worker | None = None
        self.gateway: CrashableGateway | None = None

    def cold_start(self) -> None:
        settings = worker_settings(dict(os.environ))
        self.gateway = CrashableGateway(
            settings.stripe_api_key or "",
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
            max_network_retries=settings.stripe_max_network_retries,
            rate_limit_retries=settings.stripe_rate_limit_retries,
        )
        dependencies = dataclasses.replace(connect(settings), stripe=self.gateway)
        self._worker = worker_module.Worker.from_pipeline(build_pipeline(settings, dependencies))
        self._intake = webhook_module.build_intake()

    def webhook(self, event: dict[str, Any], context: Any) -> Any:
        assert self._intake is not None, "cold_start first"
        return webhook_module.handler(event, context, intake=self._intake)

    def worker(self, event: dict[str, Any], context: Any) -> Any:
        assert self.gateway is not None, "cold_start first"
        assert self._worker is not None
        crashes_before = self.gateway.crashes
        result = worker_module.handler(event, context, worker=self._worker)
        if self.gateway.crashes != crashes_before:
            # A crash kills the whole invocation: no record of the batch is deleted.
            raise SimulatedCrash("the worker's invocation died mid-batch")
        return result


@dataclass
class E2E:
    emulator: StripeEmulator
    usage: UsageServer
    stack: LocalStack
    driver: BillingDriver
    catalog: Catalog
    handlers: Handlers
    secret: str
    ledger: DynamoDbLedger
    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, tenants: list[str], frozen_time: int | None = None) -> list[Subscriber]:
        """Customers (tenant = name, made unique per test) on a fresh test clock."""
        clock = self.driver.create_clock(frozen_time, name=f"e2e-{uuid.uuid4().hex[:6]}")
        suffix = uuid.uuid4().hex[:6]
        return [
            self.driver.subscribe(clock, tenant, f"{tenant}-{suffix}", self.catalog)
            for tenant in tenants
        ]

    def feed(self, subscriber: Subscriber, index: int, total: str) -> None:
        self.driver.feed_usage(subscriber, index, total, self.catalog.event_name)

    def settle(self, timeout: float = 30.0) -> None:
        """Webhooks answered, queue drained, usage aggregated — until all stay that way."""
        for _ in range(3):
            self.emulator.wait_idle(timeout=timeout)
            if not self.stack.drain(timeout=timeout):
                raise AssertionError(f"the worker's queue did not drain: {self._stuck()}")
        self.emulator.wait_idle(timeout=timeout)

    def _stuck(self) -> dict[str, str]:
        """The queue's counters and the poller's in-flight invocations, for the error."""
        sqs = boto3.client("sqs", endpoint_url=self.stack.aws_endpoint_url)
        attributes: Any = sqs.get_queue_attributes(
            QueueUrl=self.stack.event_queue_url, AttributeNames=["All"]
        )["Attributes"]
        counters = {k: v for k, v in attributes.items() if k.startswith("ApproximateNumber")}
        return {**counters, "in_flight": str(self.stack.worker_poller.in_flight)}

    def renew(self, clock_id: str, index: int, subscriber: Subscriber) -> int:
        """Advance to renewal `index` and let the pipeline drain; returns the boundary."""
        boundary = subscriber.period(index - 1)[1]
        self.driver.advance(clock_id, boundary)
        self.settle()
        return boundary

    def finalize(self, clock_id: str, boundary: int) -> None:
        self.driver.advance(clock_id, boundary + GRACE + 60)
        self.settle()

    def accepted_events(self, subscriber: Subscriber) -> list[dict[str, Any]]:
        return [
            e
            for e in self.emulator.meter_events()
            if e["customer"] == subscriber.customer_id and e["status"] == "accepted"
        ]

    def dead_letter_event_ids(self) -> set[str]:
        """Stripe event ids of the messages in the DLQ, left in place (visibility 0)."""
        sqs = boto3.client("sqs", endpoint_url=self.stack.aws_endpoint_url)
        response = sqs.receive_message(
            QueueUrl=self.stack.dead_letter_queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
        )
        return {json.loads(m["Body"]).get("id") for m in response.get("Messages", [])}

    def wait_for_dead_letter(self, event_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while event_id not in self.dead_letter_event_ids():
            if time.monotonic() > deadline:
                raise AssertionError(f"{event_id} not in the DLQ after {timeout} s")
            time.sleep(0.1)


def last_month_start(months_back: int) -> int:
    """A clock start `months_back` whole months before yesterday: every renewal's service
    period then lies inside Stripe's 35-day window when its report is sent."""
    return add_months(int(time.time()) - DAY, -months_back)


# Package scope: the stack (its threads, its environment variables) ends with the e2e tests
# instead of running on under the rest of the session.
@pytest.fixture(scope="package")
def e2e(aws: MotoServer) -> Iterator[E2E]:
    handlers = Handlers()
    with (
        StripeEmulator(emulator_config(webhook_retry_delays=(0.1, 0.2, 0.5))).start() as emu,
        UsageServer().start() as usage,
    ):
        stack = LocalStack(
            aws=aws,
            stack_name=f"e2e-{uuid.uuid4().hex[:6]}",
            stripe_api_base=emu.url,
            stripe_api_key=DEMO_API_KEY,
            usage_source=usage.url,
            handlers={"WebhookFunction": handlers.webhook, "WorkerFunction": handlers.worker},
            parameter_overrides={
                "MaxReceiveCount": "2",
                "WorkerBatchingWindowSeconds": "0",
                "TenantMetadataKey": TENANT_METADATA_KEY,
                "GracePeriodSeconds": str(GRACE),
            },
            environment={
                # A crashed worker's lease (1 s) ends before its message's retry (2 s).
                "RETRY_BACKOFF_BASE_SECONDS": "2",
                "RETRY_BACKOFF_MAX_SECONDS": "2",
                "REPORT_LEASE_SECONDS": "1",
                "STRIPE_MAX_NETWORK_RETRIES": "4",
                # The invoice guard's delayed confirmation, compressed from 60 s.
                "CONFIRM_DELAY_SECONDS": "1",
                "CONFIRM_MAX_DELAY_SECONDS": "2",
            },
            visibility_timeout=2,
        )
        with stack:
            secret = stack.register_webhook_endpoint()
            handlers.cold_start()
            driver = BillingDriver(emu.url, usage)
            yield E2E(
                emulator=emu,
                usage=usage,
                stack=stack,
                driver=driver,
                catalog=driver.create_catalog(),
                handlers=handlers,
                secret=secret,
                ledger=DynamoDbLedger(
                    stack.ledger_table_name,
                    boto3.client("dynamodb", endpoint_url=aws.endpoint_url),
                ),
            )


def expected_total(e2e: E2E, subscriber: Subscriber, index: int) -> Decimal:
    return e2e.usage.total(subscriber.accounts, e2e.catalog.event_name, *subscriber.period(index))
