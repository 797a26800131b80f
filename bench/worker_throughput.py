"""Worker throughput: reports/s in one invocation with 150 ms of Stripe latency.

One batch of SQS records (one renewal invoice each, one metered line) through the real
handler: real stripe SDK → Stripe billing emulator (latency_seconds=0.15 on every call),
real boto3 → moto's DynamoDB ledger, usage from an in-process callable. The bounded pool
(BATCH_CONCURRENCY) and a sequential loop (BATCH_CONCURRENCY=1) run in the same process,
on the same emulator, alternating. Each record costs two Stripe round trips (customer,
meter event); prices and meters are cached per container and warmed first, as in a warm
Lambda. Written into docs/benchmarks.md between the bench:worker markers.
"""

import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from bench.emulator_process import EmulatorProcess
from bench.report import machine_info, write_section
from meterbridge.adapters.ledger import create_ledger_table
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.handlers.worker import build_worker, handler
from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT

LATENCY = float(os.environ.get("BENCH_STRIPE_LATENCY", "0.15"))
BATCH = int(os.environ.get("BENCH_WORKER_BATCH", "100"))
SEQUENTIAL_BATCH = int(os.environ.get("BENCH_WORKER_SEQUENTIAL_BATCH", "10"))
CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "64"))
RUNS = int(os.environ.get("BENCH_WORKER_RUNS", "3"))
CUSTOMERS = int(os.environ.get("BENCH_WORKER_CUSTOMERS", "50"))
API_KEY = "sk_test_bench"
LEDGER = "bench-ledger"
FAILED_RECORDS: list[int] = []
V2_CONCURRENCY = int(os.environ.get("BENCH_WORKER_V2_CONCURRENCY", "100"))
V2_LINGER = os.environ.get("BENCH_WORKER_V2_LINGER", "1.0")
V2_BATCH = int(os.environ.get("BENCH_WORKER_V2_BATCH", "100"))
LIMIT = int(os.environ.get("BENCH_METER_EVENT_LIMIT", "20"))
LIMITED_REPORTS = int(os.environ.get("BENCH_LIMITED_REPORTS", "300"))


def _usage(query: UsageQuery) -> object:
    return "42"


class _Context:
    function_name = "bench-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-worker"
    aws_request_id = "bench"


def _records(customers: list[str], price: str, count: int) -> dict[str, Any]:
    """`count` invoice.created records, each for its own renewal draft, round-robin over
    `customers`. The invoice travels whole in the event and has one line (has_more=false),
    so the worker needs no invoice fetch: nothing is seeded into the emulator."""
    now = int(time.time())
    records = []
    for index in range(count):
        subscription = f"sub_{uuid.uuid4().hex[:14]}"
        invoice = {
            "id": f"in_{uuid.uuid4().hex[:14]}",
            "object": "invoice",
            "customer": customers[index % len(customers)],
            "status": "draft",
            "billing_reason": "subscription_cycle",
            "created": now,
            "livemode": False,
            "automatically_finalizes_at": now + 3600,
            "parent": {"subscription_details": {"subscription": subscription}},
            "lines": {
                "object": "list",
                "has_more": False,
                "data": [
                    {
                        "id": f"il_{uuid.uuid4().hex[:14]}",
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
                ],
            },
        }
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


@dataclass
class Run:
    reports: int
    seconds: float
    cpu_seconds: float  # the worker process's CPU (all its threads) during the invocation

    @property
    def rate(self) -> float:
        return self.reports / self.seconds

    @property
    def cpu_ms_per_report(self) -> float:
        return self.cpu_seconds * 1000 / self.reports


def _measure(worker: Any, event: dict[str, Any]) -> Run:
    cpu_started = time.process_time()
    started = time.perf_counter()
    response = handler(event, _Context(), worker=worker)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    # moto may answer 500 under many threads (real DynamoDB does not); such a record is a
    # transient failure SQS would redeliver. Counted, not rated.
    failed = len(response["batchItemFailures"])
    FAILED_RECORDS.append(failed)
    return Run(len(event["Records"]) - failed, elapsed, cpu)


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


@dataclass
class World:
    """One emulator process with a meter, its metered price and CUSTOMERS customers."""

    emulator: EmulatorProcess
    price: str
    meter: str
    customers: list[str]


def _world(**config: Any) -> World:
    import stripe

    emulator = EmulatorProcess(**config)
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
    customers = [client.v1.customers.create({}).id for _ in range(CUSTOMERS)]
    return World(emulator, price.id, meter.id, customers)


def _worker(world: World, concurrency: int, **env: str) -> Any:
    built = build_worker(
        {
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": world.emulator.url,
            "LEDGER_TABLE": LEDGER,
            "USAGE_SOURCE": "python://unused:unused",
            "BATCH_CONCURRENCY": str(concurrency),
            **env,
        },
        usage_source=CallableUsageSource(_usage),
    )
    # Warm: prices and meters are cached per container, as in a warm Lambda.
    built.reporter._gateway.price(world.price)
    built.reporter._gateway.meter(world.meter)
    _measure(built, _records(world.customers, world.price, min(concurrency, 8)))  # connections
    return built


def _median(runs: list[Run], attribute: str) -> float:
    return statistics.median(getattr(run, attribute) for run in runs)


def _figures(runs: list[Run]) -> str:
    return ", ".join(f"{run.rate:.1f}" for run in runs)


def _table(rows: list[tuple[str, int, list[Run], str]]) -> str:
    lines = [
        "| mode | records per batch | reports/s (median) | runs | worker CPU per report | target |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for mode, batch, runs, target in rows:
        rate, cpu = _median(runs, "rate"), _median(runs, "cpu_ms_per_report")
        lines.append(
            f"| {mode} | {batch} | {rate:.1f} | {_figures(runs)} | {cpu:.2f} ms | {target} |"
        )
    return "\n".join(lines)


def _rate_limited_run() -> dict[str, Any]:
    world = _world(meter_event_rate_limit=LIMIT)
    try:
        worker = _worker(world, 64, METER_EVENT_RATE=str(LIMIT * 3))
        event = _records(world.customers, world.price, LIMITED_REPORTS)
        rounds = 0
        while event["Records"] and rounds < 10:
            rounds += 1
            response = handler(event, _Context(), worker=worker)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            event = {"Records": [r for r in event["Records"] if r["messageId"] in failed]}
        events = [e for e in world.emulator.meter_events() if e["status"] == "accepted"]
    finally:
        world.emulator.stop()
    limiter = worker.reporter.gateway.meter_event_limiter
    times = sorted(float(e["received_at"]) for e in events)
    identifiers = [e["identifier"] for e in events]
    return {
        "reports": LIMITED_REPORTS,
        "rounds": rounds,
        # n events over the span from the first to the last: n - 1 intervals.
        "achieved": (len(times) - 1) / (times[-1] - times[0]),
        "rate_limited": limiter.rate_limited,
        "share": limiter.rate_limited / limiter.requests,
        # The warm-up invocation's few reports are in the emulator's records too.
        "once": "yes" if len(set(identifiers)) == len(identifiers) >= LIMITED_REPORTS else "NO",
    }


def run() -> None:
    from meterbridge.observability import logger

    logger.setLevel("WARNING")  # one JSON line per report would be measured too
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    moto = _moto_process()
    os.environ.update({**LOCAL_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": moto.endpoint_url})
    create_ledger_table(boto3.client("dynamodb"), LEDGER)
    fast = _world()
    slow = _world(latency_seconds=LATENCY)
    try:
        # Ceiling set by the local stand-ins' CPU (moto, emulator, worker on the same cores).
        ceiling = _measure(_worker(fast, CONCURRENCY), _records(fast.customers, fast.price, BATCH))
        print(f"  no latency: {ceiling.rate:.1f}/s, {ceiling.cpu_ms_per_report:.2f} ms CPU")
        pooled, sequential = _worker(slow, CONCURRENCY), _worker(slow, 1)
        pooled_runs, sequential_runs = [], []
        for _ in range(RUNS):
            pooled_runs.append(_measure(pooled, _records(slow.customers, slow.price, BATCH)))
            sequential_runs.append(
                _measure(sequential, _records(slow.customers, slow.price, SEQUENTIAL_BATCH))
            )
            print(
                f"  pool {pooled_runs[-1].rate:.1f}/s ({pooled_runs[-1].cpu_ms_per_report:.2f}"
                f" ms CPU/report)  sequential {sequential_runs[-1].rate:.1f}/s"
            )
        streamed = _worker(
            slow, V2_CONCURRENCY, METER_EVENT_API="v2", STREAM_LINGER_SECONDS=V2_LINGER
        )
        v2_runs = [
            _measure(streamed, _records(slow.customers, slow.price, V2_BATCH)) for _ in range(RUNS)
        ]
        print(f"  v2 stream {_figures(v2_runs)}/s")
        events = slow.emulator.meter_events() + fast.emulator.meter_events()
        limited = _rate_limited_run()
    finally:
        fast.emulator.stop()
        slow.emulator.stop()
        moto.stop()
    v2_events = [e for e in events if e["source"] == "v2"]
    v2_sizes = sorted(collections.Counter(e["idempotency_key"] for e in v2_events).values())
    accepted = sum(1 for e in events if e["status"] == "accepted")
    identifiers = [e["identifier"] for e in events if e["status"] == "accepted"]
    if len(set(identifiers)) != len(identifiers):
        raise RuntimeError("an identifier was accepted twice")

    pool, seq = _median(pooled_runs, "rate"), _median(sequential_runs, "rate")
    cpu = _median(pooled_runs, "cpu_ms_per_report")
    target = "≥ 100/s (" + ("met" if pool >= 100 else "NOT met") + ")"
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    machine = machine_info("stripe", "boto3", "moto", "aws-lambda-powertools")
    table = _table(
        [
            (f"bounded pool, `BATCH_CONCURRENCY={CONCURRENCY}`", BATCH, pooled_runs, target),
            ("sequential loop (`BATCH_CONCURRENCY=1`)", SEQUENTIAL_BATCH, sequential_runs, "—"),
            ("bounded pool, **no** injected latency (stand-in ceiling)", BATCH, [ceiling], "—"),
            (
                f"`METER_EVENT_API=v2` stream, `BATCH_CONCURRENCY={V2_CONCURRENCY}`",
                V2_BATCH,
                v2_runs,
                "—",
            ),
        ]
    )
    body = f"""## Worker throughput

Measured {measured} UTC with `.venv/bin/python -m bench worker` on {machine}.

One invocation of `meterbridge.handlers.worker.handler` per batch; each record is an
`invoice.created` for its own renewal draft with one metered line, carried whole in the
event (no invoice fetch), {CUSTOMERS} customers round-robin. The Stripe billing emulator runs
**in its own process** (`bench.emulator_process`) and adds {LATENCY * 1000:.0f} ms to every
call; moto's DynamoDB runs in another. Per report the worker makes 2 Stripe round trips
(customer, meter event; prices and meters are cached per container and warmed first) and
5 ledger round trips (event check, claim with value, sent, invoice record, event memory;
6 before the claim carried the value). Median of {RUNS} runs, the pool and the sequential
loop alternating.
{accepted} meter events accepted in total, each identifier once; {sum(FAILED_RECORDS)} records
failed transiently (moto answering 500 under load) and are left out of the rates.

{table}

Ratio pool / sequential: **{pool / seq:.1f}x**. With {LATENCY * 1000:.0f} ms per call a
sequential loop cannot exceed {1 / (2 * LATENCY):.1f} reports/s; the pool overlaps the
waits, up to `BATCH_CONCURRENCY` records at a time.

"Worker CPU per report" is `time.process_time()` of the worker's process (all its threads)
around the invocation, divided by the reports: {cpu:.2f} ms means one invocation on one
vCPU cannot exceed about {1000 / cpu:.0f} reports/s however fast Stripe and DynamoDB answer —
the honest ceiling on real AWS, where neither stand-in shares the Lambda's CPU.
"""
    limited_table = "\n".join(
        [
            "| limit | achieved (accepted events / their time span) | achieved / limit"
            " | 429 answers | 429 share of requests | sent once each |",
            "| ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {LIMIT}/s | {limited['achieved']:.1f}/s | {limited['achieved'] / LIMIT:.0%}"
            f" | {limited['rate_limited']} | {limited['share']:.1%} | {limited['once']} |",
        ]
    )
    body += f"""
v2 stream: {len(v2_events)} events in {len(v2_sizes)} `meter_event_stream` requests
(events per request: median {statistics.median(v2_sizes):.0f}, largest {v2_sizes[-1]}); a
request carries what the batch's threads have ready within `STREAM_LINGER_SECONDS`
(here {V2_LINGER} s: on this machine moto's ledger writes spread the threads' arrival).

### Against Stripe's meter-event rate limit

v1, `BATCH_CONCURRENCY=64`, {limited["reports"]} reports, the emulator (own process) limiting
meter events to {LIMIT}/s (sliding 1 s window) and the worker starting at
`METER_EVENT_RATE={LIMIT * 3}` (three times too fast); failed records redelivered at once
until all were sent ({limited["rounds"]} invocations).

{limited_table}

Reading: the stand-ins set the ceiling here, not the worker's design. With {LATENCY * 1000:.0f} ms
per Stripe call the pool is as fast as with no latency at all ({pool:.1f} vs {ceiling.rate:.1f}
reports/s): Stripe's latency is fully overlapped, and the 2 shared cores are spent by moto
(every DynamoDB call on a new connection — moto closes them — and moto's own CPU per call),
the emulator process and the worker. The worker's own CPU ({cpu:.1f} ms per report here,
including the connection set-up moto forces and the 64 threads' GIL hand-offs) is the
figure that carries over to AWS: one Lambda vCPU runs about 1000 / {cpu:.1f} ≈
{1000 / cpu:.0f} reports/s, so ≥ 100 reports/s per invocation needs ≤ 10 ms per report
(≥ 1,769 MB memory gives the function a full vCPU; the reported CPU ms include the
per-invocation metrics flush, amortised over the batch). v2 does not lower the per-report
cost much here, because the ledger's 5 round trips, not the Stripe request, dominate it.

The limiter halves its pace at the first 429 towards what Stripe accepted in the last
second, returns to 95 % of it within about a second and then probes +2 %/s, so 429s stay
rare after the first overload (target: ≥ 90 % of the limit without a 429 storm).
"""
    write_section("worker", body)
    print(body)


if __name__ == "__main__":
    run()
