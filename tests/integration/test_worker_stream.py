"""METER_EVENT_API=v2 (meter event stream) and the adaptive meter-event rate limiter,
against the Stripe billing emulator: what reached "Stripe" is read from its records."""

import time
from collections import Counter
from typing import Any

import boto3

from meterbridge.adapters.aws_clients import ledger_client_config
from meterbridge.adapters.ledger import DynamoDbLedger as Ledger
from meterbridge.handlers import worker as worker_module
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.lambda_context import FakeLambdaContext
from tests.support.worker import (
    DAY,
    USAGE,
    Billing,
    direct_batch,
    failed_ids,
    invoice_created,
    make_worker,
)


def renewals(billing: Billing, count: int) -> tuple[list[dict[str, Any]], str]:
    """`count` renewals of one customer, each its own service period (one report each)."""
    meter = billing.meter()
    price = billing.metered_price(meter)
    customer = billing.customer()
    USAGE[(customer["id"], meter["event_name"])] = "7"
    now = int(time.time())
    periods = [(now - 30 * DAY - 60 * n, now - 60 * (n + 1)) for n in range(count)]
    invoices = [billing.renewal(customer["id"], [price], period=p) for p in periods]
    return invoices, customer["id"]


def patient_dynamodb() -> Any:
    """The worker's ledger client with a 60 s read timeout instead of 2 s: moto answers the
    batch's many threads from inside this process, which shares the cores with the other
    test processes. A timed-out conditional write that botocore retries comes back as
    ConditionalCheckFailed, and the worker then waits out its own lease."""
    return boto3.client("dynamodb", config=ledger_client_config(240, read_timeout_seconds=60))


def handle(worker: worker_module.Worker, batch: dict[str, Any]) -> set[str]:
    return failed_ids(worker_module.handler(batch, FakeLambdaContext(), worker=worker))


def until_done(worker: worker_module.Worker, batch: dict[str, Any], rounds: int = 6) -> None:
    """Redeliver the failed records (as SQS would) until none fails."""
    for _ in range(rounds):
        failed = handle(worker, batch)
        if not failed:
            return
        batch = {"Records": [r for r in batch["Records"] if r["messageId"] in failed]}
    raise AssertionError(f"{len(failed)} records still failing")


def test_v2_streams_up_to_100_events_per_request_exactly_once(
    fresh_emulator_faults: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    billing = Billing(fresh_emulator_faults)
    invoices, customer = renewals(billing, 120)
    events = [invoice_created(invoice) for invoice in invoices]
    worker = make_worker(
        fresh_emulator_faults,
        ledger_table,
        queue_url,
        env={
            "METER_EVENT_API": "v2",
            "BATCH_CONCURRENCY": "120",
            "STREAM_LINGER_SECONDS": "5",
            "INVOICE_GUARD": "off",
        },
        dynamodb=patient_dynamodb(),
    )

    until_done(worker, direct_batch(events))
    # Redelivered, and a second Stripe event for every invoice: nothing is sent again.
    until_done(worker, direct_batch(events))
    until_done(worker, direct_batch([invoice_created(invoice) for invoice in invoices]))

    sent = billing.meter_events(customer=customer)
    assert {e["source"] for e in sent} == {"v2"}
    assert [e["status"] for e in sent] == ["accepted"] * 120
    assert len({e["identifier"] for e in sent}) == 120
    # One idempotency key per stream request: the requests' sizes.
    sizes = Counter(e["idempotency_key"] for e in sent).values()
    assert max(sizes) == 100
    assert sum(sizes) == 120
    for invoice, event in zip(invoices, sent, strict=False):
        assert event["payload"]["value"] == "7"
        assert ledger.invoice(invoice["id"]).status == "reported"  # type: ignore[union-attr]
    statuses = {r.status for i in invoices for r in ledger.invoice_reports(i["id"])}
    assert statuses == {"sent"}


def test_v2_stream_errors_fail_every_report_of_the_request_then_retry(
    fresh_emulator_faults: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    billing = Billing(fresh_emulator_faults)
    invoices, customer = renewals(billing, 3)
    worker = make_worker(
        fresh_emulator_faults,
        ledger_table,
        queue_url,
        env={"METER_EVENT_API": "v2", "STRIPE_RATE_LIMIT_RETRIES": "0", "INVOICE_GUARD": "off"},
    )
    batch = direct_batch([invoice_created(invoice) for invoice in invoices])
    fresh_emulator_faults.set_faults(meter_event_rate_limit=0)  # every stream request: 429
    try:
        assert len(handle(worker, batch)) == 3
    finally:
        fresh_emulator_faults.set_faults(meter_event_rate_limit=None)
    assert billing.meter_events(customer=customer) == []
    reports = [r for i in invoices for r in ledger.invoice_reports(i["id"])]
    assert {(r.status, r.failure_class) for r in reports} == {("failed", "transient")}
    assert all("429" in str(r.last_error) for r in reports)

    until_done(worker, batch)

    sent = billing.meter_events(customer=customer)
    assert [e["status"] for e in sent] == ["accepted"] * 3
    assert len({e["identifier"] for e in sent}) == 3
    assert {r.status for i in invoices for r in ledger.invoice_reports(i["id"])} == {"sent"}


def test_rate_limit_is_found_without_a_429_storm(
    fresh_emulator_faults: StripeEmulator, ledger: Ledger, ledger_table: str, queue_url: str
) -> None:
    billing = Billing(fresh_emulator_faults)
    invoices, customer = renewals(billing, 60)
    worker = make_worker(
        fresh_emulator_faults,
        ledger_table,
        queue_url,
        env={"BATCH_CONCURRENCY": "64", "METER_EVENT_RATE": "60", "INVOICE_GUARD": "off"},
        dynamodb=patient_dynamodb(),
    )
    # Low enough that a worker slowed by the other test processes still meets it.
    fresh_emulator_faults.set_faults(meter_event_rate_limit=10)
    try:
        until_done(worker, direct_batch([invoice_created(invoice) for invoice in invoices]))
    finally:
        fresh_emulator_faults.set_faults(meter_event_rate_limit=None)

    sent = billing.meter_events(customer=customer)
    assert [e["status"] for e in sent] == ["accepted"] * 60
    assert len({e["identifier"] for e in sent}) == 60
    limiter = worker.pipeline.stripe.meter_event_limiter  # type: ignore[attr-defined]
    assert limiter.ceiling is not None  # it met the limit and slowed down
    assert limiter.requests == 60 + limiter.rate_limited  # every 429 was retried once paced
    assert limiter.rate_limited <= 0.25 * limiter.requests  # no storm
