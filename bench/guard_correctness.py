"""Invoice guard: the share of renewal invoices that finalize with the right usage, per guard
mode and Stripe aggregation lag, over a simulated month-end.

N customers share one test clock, so one advance makes N renewal drafts at once (a
month-end storm). Their invoice.created events go through SQS (moto) to the real worker
handler (real stripe SDK → Stripe billing emulator, DynamoDB ledger in moto), two polling
threads, as Lambda's event source would. Time is compressed: one wall second is
`BENCH_GUARD_CLOCK_RATE` clock seconds (default 900, so a 1-hour grace period lasts 4 s), and
a driver thread advances the test clock continuously, so drafts finalize when their grace
period ends — with whatever Stripe (the emulator) has aggregated by then. The emulator's
aggregation lag is wall time; the table gives it in both scales. Writes docs/guard.md
between the bench:guard markers.
"""

import contextlib
import io
import json
import os
import random
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")  # before meterbridge creates its Logger

import boto3
import stripe

from bench.report import REPO_ROOT, machine_info, write_section
from bench.stand_ins import bench_worker
from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.handlers.worker import Worker, handler
from meterbridge.messages import EventEnvelope, message_attributes
from meterbridge_local.aws import environment, moto_server
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

CUSTOMERS = int(os.environ.get("BENCH_GUARD_CUSTOMERS", "50"))
CLOCK_RATE = int(os.environ.get("BENCH_GUARD_CLOCK_RATE", "900"))  # clock s per wall s
LAGS = [float(x) for x in os.environ.get("BENCH_GUARD_LAGS", "0,2,4,5,8").split(",")]
MODES = os.environ.get("BENCH_GUARD_MODES", "off,confirm,hold").split(",")
GRACE = 3600
MARGIN = int(os.environ.get("BENCH_GUARD_MARGIN", "1800"))  # clock seconds
STEP = 0.25  # wall seconds between clock advances
API_KEY = "sk_test_bench_guard"
DOC = REPO_ROOT / "docs" / "guard.md"

_usage: dict[str, str] = {}


def _usage_of(query: UsageQuery) -> object:
    return _usage.get(query.customer, "0")


class _Context:
    function_name = "bench-guard"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-guard"
    aws_request_id = "bench"


@dataclass
class Result:
    mode: str
    lag: float
    invoices: int
    correct: int
    lost: int
    alarmed_lost: int  # lost invoices whose ConfirmationMissing fired while still a draft
    alarmed_correct: int  # false alarms
    unfinalized: int
    reporting_seconds: float
    seconds: float


def _worker(emulator: StripeEmulator, table: str, queue_url: str, mode: str) -> Worker:
    return bench_worker(
        {
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
            "STRIPE_MAX_NETWORK_RETRIES": "2",
            "LEDGER_TABLE": table,
            "QUEUE_URL": queue_url,
            "USAGE_SOURCE": "python://bench.stand_ins:replaced_usage_source",
            "RETRY_BACKOFF_BASE_SECONDS": "1",
            "INVOICE_GUARD": mode,
            "CONFIRM_DELAY_SECONDS": "1",
            "CONFIRM_MAX_DELAY_SECONDS": "1",
            # Two check intervals wide, so a check always lands in it: compressed time cannot
            # schedule a check at the margin's start the way real time does.
            "CONFIRMATION_MARGIN_SECONDS": str(MARGIN),
        },
        CallableUsageSource(_usage_of),
    )


def _poll(worker: Worker, queue_url: str, stop: threading.Event) -> None:
    sqs = boto3.client("sqs")
    while not stop.is_set():
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            continue
        records: list[dict[str, Any]] = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    k: {"stringValue": v["StringValue"], "dataType": "String"}
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
        context: Any = _Context()
        response = handler({"Records": records}, context, worker=worker)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=str(record["receiptHandle"]))


def _clock_invoices(clock_id: str) -> Any:
    return {"test_clock": clock_id, "limit": 100}


def _advance(client: stripe.StripeClient, clock_id: str, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})
    while client.v1.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
        time.sleep(0.01)


def _run(
    emulator: StripeEmulator, client: stripe.StripeClient, price: Any, mode: str, lag: float
) -> Result:
    emulator.set_faults(aggregation_lag_seconds=lag)
    table = f"bench-guard-{uuid.uuid4().hex[:8]}"
    create_ledger_table(boto3.client("dynamodb"), table)
    queue_url = boto3.client("sqs").create_queue(QueueName=f"bench-guard-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    clock = client.v1.test_helpers.test_clocks.create(
        {"frozen_time": int(time.time()) - 32 * 86_400}
    )
    rng = random.Random(f"{mode}-{lag}")
    customers = []
    for _ in range(CUSTOMERS):
        customer = client.v1.customers.create({"test_clock": clock.id})
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
        _usage[customer.id] = str(rng.randint(1, 10_000))
        customers.append(customer.id)
    first = client.v1.subscriptions.list({"customer": customers[0]}).data[0]
    period_end = int(first["items"].data[0].current_period_end)
    _advance(client, clock.id, period_end + 1)  # month-end: N renewal drafts at once

    worker = _worker(emulator, table, queue_url, mode)
    sqs = boto3.client("sqs")
    wanted = set(customers)
    for event in client.v1.events.list(
        {"type": "invoice.created", "limit": 100}
    ).auto_paging_iter():
        subject = event.data.object
        if subject.customer in wanted and subject.billing_reason == "subscription_cycle":
            document = event.to_dict()
            body = json.dumps(document, default=str)
            envelope = EventEnvelope.from_event(document)
            sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=body,
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v}
                    for k, v in message_attributes(envelope, "event").items()
                },
            )
            wanted.discard(subject.customer)
        if not wanted:
            break

    stop = threading.Event()
    started = time.monotonic()
    pollers = [
        threading.Thread(target=_poll, args=(worker, queue_url, stop), daemon=True)
        for _ in range(2)
    ]
    for poller in pollers:
        poller.start()
    # The grace period starts counting once the storm is reported: the worker's throughput is
    # bench/worker_throughput.py's subject; here only Stripe's aggregation lag competes with
    # the grace period (compressed time would otherwise inflate the storm's duration).
    ledger = DynamoDbLedger(table, boto3.client("dynamodb"))
    while time.monotonic() - started < 60:
        reported = sum(
            1
            for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table)
            for item in page["Items"]
            if item["sk"]["S"] == "report" and item.get("status", {}).get("S") == "sent"
        )
        if reported >= CUSTOMERS:
            break
        time.sleep(0.05)
    reported_after = time.monotonic() - started
    clock_start = clock_time = period_end + 1
    end_of_run = clock_time + GRACE + 1200  # 20 clock minutes past the grace period
    driver_started = time.monotonic()
    while True:  # the clock follows wall time, compressed
        time.sleep(STEP)
        # Follow the wall clock, not the number of steps: a busy step must not slow time.
        target = clock_start + int((time.monotonic() - driver_started) * CLOCK_RATE)
        if min(end_of_run, target) > clock_time:
            clock_time = min(end_of_run, target)
            _advance(client, clock.id, clock_time)
        invoices = client.v1.invoices.list(_clock_invoices(clock.id))
        drafts = [i for i in invoices.auto_paging_iter() if i.status == "draft"]
        # A draft the hold released gets its finalization one grace period after the
        # release (docs/stripe.md#S-FIN-2): the clock runs on until that time, too.
        scheduled = [int(i.automatically_finalizes_at or 0) for i in drafts]
        end_of_run = max([end_of_run, *(at + 60 for at in scheduled if at)])
        if clock_time >= end_of_run and (not drafts or time.monotonic() - started > 4 * lag + 30):
            break
    stop.set()
    for poller in pollers:
        poller.join(timeout=5)

    correct = lost = alarmed_lost = alarmed_correct = unfinalized = 0
    for invoice in client.v1.invoices.list(_clock_invoices(clock.id)).auto_paging_iter():
        if invoice.billing_reason != "subscription_cycle":
            continue
        if invoice.status == "draft":
            unfinalized += 1
            continue
        line = invoice.lines.data[0].to_dict()
        quantity = Decimal(str(line.get("quantity_decimal") or line["quantity"]))
        right = quantity == Decimal(_usage[str(invoice.customer)])
        alarmed = any(
            r.confirmation is not None and r.confirmation.missing_at is not None
            for r in ledger.invoice_reports(invoice.id)
        )
        if right:
            correct += 1
            alarmed_correct += alarmed
        else:
            lost += 1
            alarmed_lost += alarmed
    return Result(
        mode,
        lag,
        CUSTOMERS,
        correct,
        lost,
        alarmed_lost,
        alarmed_correct,
        unfinalized,
        reported_after,
        time.monotonic() - started,
    )


def _table(results: list[Result]) -> str:
    lines = [
        "| lag (wall s) | ≈ lag in a 1 h grace period | guard | correct | lost | lost & alarmed"
        " before finalization | false alarms | still draft | storm reported in (s) | run (s) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        share = f"{r.correct}/{r.invoices} ({100 * r.correct / r.invoices:.0f} %)"
        alarmed = f"{r.alarmed_lost}/{r.lost}" if r.mode != "off" else "—"
        false_alarms = str(r.alarmed_correct) if r.mode != "off" else "—"
        lines.append(
            f"| {r.lag:g} | {r.lag * CLOCK_RATE / 60:.0f} min | {r.mode} | {share} | {r.lost}"
            f" | {alarmed} | {false_alarms} | {r.unfinalized} | {r.reporting_seconds:.1f}"
            f" | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def run() -> None:
    warnings.simplefilter("ignore")
    results: list[Result] = []
    with moto_server() as aws, environment(aws.environment()):
        config = EmulatorConfig(grace_period_seconds=GRACE)
        with StripeEmulator(config).start() as emulator:
            client = stripe.StripeClient(
                API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
            )
            meter = client.v1.billing.meters.create(
                {
                    "display_name": "API calls",
                    "event_name": "bench_guard_calls",
                    "default_aggregation": {"formula": "sum"},
                }
            )
            price = client.v1.prices.create(
                {
                    "currency": "usd",
                    "unit_amount_decimal": "0.5",  # type: ignore[typeddict-item]
                    "product_data": {"name": "API calls"},
                    "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
                }
            )
            for lag in LAGS:
                for mode in MODES:
                    with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics
                        result = _run(emulator, client, price, mode, lag)
                    results.append(result)
                    print(
                        f"lag {lag:g} s, {mode}: {result.correct}/{result.invoices} correct,"
                        f" {result.alarmed_lost}/{result.lost} lost alarmed,"
                        f" {result.unfinalized} draft ({result.seconds:.1f} s)",
                        flush=True,
                    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"Measured {when} with `.venv/bin/python -m bench guard` "
        f"(`BENCH_GUARD_CUSTOMERS={CUSTOMERS}`, `BENCH_GUARD_CLOCK_RATE={CLOCK_RATE}`: one wall"
        f" second = {CLOCK_RATE // 60} clock minutes, so the 1 h grace period lasts"
        f" {GRACE / CLOCK_RATE:g} s; `CONFIRMATION_MARGIN_SECONDS={MARGIN}`, checks every"
        f" wall second) on {machine_info('stripe', 'moto')}.\n\n"
        f"{_table(results)}\n"
    )
    write_section("guard", body, path=DOC)


if __name__ == "__main__":
    run()
