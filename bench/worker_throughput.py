"""Worker throughput: reports/s in one invocation with 150 ms of Stripe latency.

One batch of SQS records (one renewal invoice each, one metered line) through the real
handler: real stripe SDK → Stripe billing emulator (latency_seconds=0.15 on every call),
real boto3 → moto's DynamoDB ledger, usage from an in-process callable. The bounded pool
(BATCH_CONCURRENCY) and a sequential loop (BATCH_CONCURRENCY=1) run in the same process,
on the same emulator, alternating. Each record costs two Stripe round trips (customer,
meter event); prices and meters are cached per container and warmed first, as in a warm
Lambda. Written into docs/benchmarks.md between the bench:worker markers.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

from bench.report import machine_info, write_section
from meterbridge.adapters.ledger import create_ledger_table
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.handlers.worker import build_worker, handler
from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

LATENCY = float(os.environ.get("BENCH_STRIPE_LATENCY", "0.15"))
BATCH = int(os.environ.get("BENCH_WORKER_BATCH", "100"))
SEQUENTIAL_BATCH = int(os.environ.get("BENCH_WORKER_SEQUENTIAL_BATCH", "10"))
CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "64"))
RUNS = int(os.environ.get("BENCH_WORKER_RUNS", "3"))
API_KEY = "sk_test_bench"


def _usage(query: UsageQuery) -> object:
    return "42"


class _Context:
    function_name = "bench-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-worker"
    aws_request_id = "bench"


def _records(emulator: StripeEmulator, customer: str, price: str, count: int) -> dict[str, Any]:
    now = int(time.time())
    records = []
    for _ in range(count):
        subscription = f"sub_{uuid.uuid4().hex[:14]}"
        invoice = emulator.seed(
            "invoice",
            {
                "customer": customer,
                "status": "draft",
                "billing_reason": "subscription_cycle",
                "created": now,
                "automatically_finalizes_at": now + 3600,
                "parent": {"subscription_details": {"subscription": subscription}},
                "lines": {
                    "data": [
                        {
                            "object": "line_item",
                            "period": {"start": now - 30 * 86400, "end": now - 60},
                            "parent": {
                                "subscription_item_details": {
                                    "subscription": subscription,
                                    "subscription_item": f"si_{uuid.uuid4().hex[:14]}",
                                }
                            },
                            "pricing": {"price_details": {"price": price}},
                        }
                    ]
                },
            },
        )
        event = {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": "invoice.created",
            "created": now,
            "livemode": False,
            "data": {"object": invoice},
        }
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "bench",
                "body": json.dumps(event),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {"body_kind": {"stringValue": "event", "dataType": "String"}},
                "eventSource": "aws:sqs",
            }
        )
    return {"Records": records}


def _measure(worker: Any, event: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = handler(event, _Context(), worker=worker)
    elapsed = time.perf_counter() - started
    if response["batchItemFailures"]:
        raise RuntimeError(f"{len(response['batchItemFailures'])} records failed")
    return len(event["Records"]) / elapsed


class _MotoProcess:
    """moto in its own process: its CPU cost must not share the worker's GIL, as DynamoDB
    in AWS does not share the Lambda's CPU."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def _moto_process() -> _MotoProcess:
    return _MotoProcess()


def run() -> None:
    from meterbridge.observability import logger

    logger.setLevel("WARNING")  # one JSON line per report would be measured too
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    moto = _moto_process()
    os.environ.update({**LOCAL_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": moto.endpoint_url})
    emulator = StripeEmulator(EmulatorConfig(latency_seconds=0.0)).start()
    try:
        import stripe

        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )
        meter = client.v1.billing.meters.create(
            {
                "display_name": "bench",
                "event_name": "bench_calls",
                "default_aggregation": {"formula": "sum"},
            }
        )
        price_params: Any = {
            "currency": "usd",
            "unit_amount_decimal": "0.5",
            "product_data": {"name": "b"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
        price = client.v1.prices.create(price_params)
        customer = client.v1.customers.create({})
        create_ledger_table(boto3.client("dynamodb"), "bench-ledger")

        def worker(concurrency: int) -> Any:
            built = build_worker(
                {
                    "STRIPE_API_KEY": API_KEY,
                    "STRIPE_API_BASE": emulator.url,
                    "LEDGER_TABLE": "bench-ledger",
                    "USAGE_SOURCE": "python://unused:unused",
                    "BATCH_CONCURRENCY": str(concurrency),
                },
                usage_source=CallableUsageSource(_usage),
            )
            # Warm: prices and meters are cached per container, as in a warm Lambda.
            built.reporter._gateway.price(price.id)
            built.reporter._gateway.meter(meter.id)
            return built

        pooled, sequential = worker(CONCURRENCY), worker(1)
        _measure(pooled, _records(emulator, customer.id, price.id, 5))  # connection warm-up
        # Ceiling set by the local stand-ins' CPU (moto, emulator, worker on the same cores).
        ceiling = _measure(pooled, _records(emulator, customer.id, price.id, BATCH))
        emulator.set_faults(latency_seconds=LATENCY)
        pooled_rates, sequential_rates = [], []
        for _ in range(RUNS):
            pooled_rates.append(_measure(pooled, _records(emulator, customer.id, price.id, BATCH)))
            sequential_rates.append(
                _measure(sequential, _records(emulator, customer.id, price.id, SEQUENTIAL_BATCH))
            )
            print(f"  pool {pooled_rates[-1]:.1f}/s  sequential {sequential_rates[-1]:.1f}/s")
        sent = sum(1 for e in emulator.meter_events() if e["status"] == "accepted")
    finally:
        emulator.stop()
        moto.stop()

    pool, seq = statistics.median(pooled_rates), statistics.median(sequential_rates)
    target = "≥ 100/s (" + ("met" if pool >= 100 else "NOT met") + ")"
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    machine = machine_info("stripe", "boto3", "moto", "aws-lambda-powertools")
    pool_runs = ", ".join(f"{r:.1f}" for r in pooled_rates)
    seq_runs = ", ".join(f"{r:.1f}" for r in sequential_rates)
    body = f"""## Worker throughput

Measured {measured} UTC with `.venv/bin/python -m bench worker` on {machine}.

One invocation of `meterbridge.handlers.worker.handler` per batch; each record is an
`invoice.created` for a renewal draft with one metered line. The Stripe billing emulator
adds {LATENCY * 1000:.0f} ms to every call (customer fetch and meter event: two round trips
per report; prices and meters are cached per container and warmed first). Ledger writes
go to moto's DynamoDB over loopback in a separate process (3 conditional writes + 2 reads per
report), so both runs also pay moto's CPU cost on the same 2 cores. Median of {RUNS} runs,
the pool and the sequential loop alternating on the same emulator. {sent} meter events
accepted in total, none failed.

| mode | records per batch | reports/s (median) | runs | target |
| --- | ---: | ---: | --- | --- |
| bounded pool, `BATCH_CONCURRENCY={CONCURRENCY}` | {BATCH} | {pool:.1f} | {pool_runs} | {target} |
| sequential loop (`BATCH_CONCURRENCY=1`) | {SEQUENTIAL_BATCH} | {seq:.1f} | {seq_runs} | — |
| bounded pool, **no** injected latency (stand-in ceiling) | {BATCH} | {ceiling:.1f} | 1 | — |

Ratio pool / sequential: **{pool / seq:.1f}x**. With {LATENCY * 1000:.0f} ms per call a
sequential loop cannot exceed {1 / (2 * LATENCY):.1f} reports/s; the pool overlaps the
waits, up to `BATCH_CONCURRENCY` records at a time (the template's default is 16: raise the
`BatchConcurrency` parameter and `WorkerBatchSize` together for month-start storms).

Reading: with 150 ms latency the pool runs as fast as with none at all ({pool:.1f} vs
{ceiling:.1f} reports/s), i.e. the Stripe latency is fully overlapped and the figure is
capped by CPU on this 2-core machine — moto's DynamoDB (6 ledger calls per single-line
invoice: event check, claim, value, sent, invoice record, event memory), the emulator and
the worker share it. The ≥ 100 reports/s target therefore cannot be shown here; against
real DynamoDB the worker's own CPU per report, not this ceiling, is the limit (not
measured yet).
"""
    write_section("worker", body)
    print(body)


if __name__ == "__main__":
    run()
