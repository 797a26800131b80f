"""Worker throughput: reports/s in one invocation with 150 ms of Stripe latency.

One batch of SQS records (one renewal invoice each, one metered line) through the real
handler: real stripe SDK → Stripe billing emulator (latency_seconds=0.15 on every call),
real boto3 → a DynamoDB stand-in for the ledger (dynalite when `make bench` could install
it, and moto), usage from an in-process callable. Every stand-in runs in its own process.
The bounded pool (BATCH_CONCURRENCY) and a sequential loop (BATCH_CONCURRENCY=1) run in
the same process, on the same emulator, alternating. Each record costs one Stripe round trip
(the meter event); prices and meters are cached per container and warmed first, as in a
warm Lambda. Written into docs/benchmarks.md between the bench:worker markers.
"""

import collections
import itertools
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from bench.emulator_process import EmulatorProcess
from bench.report import machine_info, write_section
from bench.stand_ins import (
    DYNALITE_VERSION,
    DynaliteProcess,
    MotoProcess,
    bench_worker,
    cpu_seconds,
    dynalite_executable,
)
from meterbridge.adapters.usage_sources import CallableUsageSource, UsageQuery
from meterbridge.handlers.worker import handler
from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT, environment
from meterbridge_local.ledger_table import create_ledger_table

LATENCY = float(os.environ.get("BENCH_STRIPE_LATENCY", "0.15"))
# The template's largest deployable batch (WorkerBatchSize ≤ 100, BatchConcurrency ≤ 128).
BATCH = int(os.environ.get("BENCH_WORKER_BATCH", "100"))
SEQUENTIAL_BATCH = int(os.environ.get("BENCH_WORKER_SEQUENTIAL_BATCH", "10"))
CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "100"))
RUNS = int(os.environ.get("BENCH_WORKER_RUNS", "7"))
CUSTOMERS = int(os.environ.get("BENCH_WORKER_CUSTOMERS", "50"))
API_KEY = "sk_test_bench"
LEDGER = "bench-ledger"
FAILED_RECORDS: list[int] = []
V2_CONCURRENCY = int(os.environ.get("BENCH_WORKER_V2_CONCURRENCY", "100"))
V2_LINGER = os.environ.get("BENCH_WORKER_V2_LINGER", "1.0")
V2_BATCH = int(os.environ.get("BENCH_WORKER_V2_BATCH", "100"))


def _usage(query: UsageQuery) -> object:
    return "42"


class _Context:
    function_name = "bench-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-worker"
    aws_request_id = "bench"


_PERIOD_SHIFTS = itertools.count()


def renewal_record(customer: str, price: str, start: int, end: int) -> dict[str, Any]:
    """An SQS record carrying the invoice.created of one renewal draft for `customer`, with
    one metered line on `price` for the service period [start, end). The invoice travels
    whole in the event and has one line (has_more=false), so the worker needs no invoice
    fetch: nothing is seeded into the emulator."""
    now = int(time.time())
    subscription = f"sub_{uuid.uuid4().hex[:14]}"
    invoice = {
        "id": f"in_{uuid.uuid4().hex[:14]}",
        "object": "invoice",
        "customer": customer,
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
                    "period": {"start": start, "end": end},
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
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "bench",
        "body": json.dumps(event),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {"body_kind": {"stringValue": "event", "dataType": "String"}},
        "eventSource": "aws:sqs",
    }


def _records(customers: list[str], price: str, count: int) -> dict[str, Any]:
    """`count` renewal records (renewal_record), round-robin over `customers`.

    Each draft bills a service period of its own (ending a second earlier than the one
    before, across calls too): meterbridge reports a customer's meter once per period, so
    two drafts with the same customer and period would be one report (a shared meter)."""
    now = int(time.time())
    records = []
    for index in range(count):
        shift = next(_PERIOD_SHIFTS)
        customer = customers[index % len(customers)]
        records.append(renewal_record(customer, price, now - 30 * 86400 - shift, now - 60 - shift))
    return {"Records": records}


@dataclass
class Run:
    reports: int
    seconds: float
    cpu_seconds: float  # the worker process's CPU (all its threads) during the invocation
    stand_in_cpu_seconds: float = 0.0  # the stand-ins' processes (ledger, SQS, emulator)

    @property
    def rate(self) -> float:
        return self.reports / self.seconds

    @property
    def cpu_ms_per_report(self) -> float:
        return self.cpu_seconds * 1000 / self.reports

    @property
    def stand_in_cpu_ms_per_report(self) -> float:
        return self.stand_in_cpu_seconds * 1000 / self.reports


@dataclass
class Ledger:
    """A DynamoDB stand-in process holding the benchmark's ledger table."""

    name: str
    server: MotoProcess | DynaliteProcess


def _measure(worker: Any, event: dict[str, Any], stand_ins: tuple[int, ...] = ()) -> Run:
    """One invocation; `stand_ins`: the pids whose CPU is counted with it."""
    before = [cpu_seconds(pid) for pid in stand_ins]
    cpu_started = time.process_time()
    started = time.perf_counter()
    response = handler(event, _Context(), worker=worker)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    spent = sum(cpu_seconds(pid) - was for pid, was in zip(stand_ins, before, strict=True))
    # moto may answer 500 under many threads (real DynamoDB does not); such a record is a
    # transient failure SQS would redeliver. Counted, not rated.
    failed = len(response["batchItemFailures"])
    FAILED_RECORDS.append(failed)
    return Run(len(event["Records"]) - failed, elapsed, cpu, spent)


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


# INVOICE_GUARD=confirm (the template's default) queues one delayed check per invoice: on
# this SQS queue, in the moto process (set by run()).
CONFIRM_QUEUE: dict[str, str] = {}


def _worker(world: World, concurrency: int, ledger: Ledger, **env: str) -> Any:
    """A warm worker whose ledger client points at `ledger` and whose SQS client at moto
    (boto3 reads the endpoints from the environment when build_worker creates the clients,
    as in Lambda)."""
    endpoints = {
        "AWS_ENDPOINT_URL": CONFIRM_QUEUE.get("endpoint_url", ledger.server.endpoint_url),
        "AWS_ENDPOINT_URL_DYNAMODB": ledger.server.endpoint_url,
    }
    if env.get("INVOICE_GUARD", "off") != "off":
        env = {"QUEUE_URL": CONFIRM_QUEUE["queue_url"], **env}
    with environment(endpoints):
        built = bench_worker(
            {
                "STRIPE_API_KEY": API_KEY,
                "STRIPE_API_BASE": world.emulator.url,
                "LEDGER_TABLE": LEDGER,
                "USAGE_SOURCE": "python://bench.stand_ins:replaced_usage_source",
                "BATCH_CONCURRENCY": str(concurrency),
                "INVOICE_GUARD": "off",
                **env,
            },
            CallableUsageSource(_usage),
        )
    # Warm: prices and meters are cached per container, as in a warm Lambda.
    built.pipeline.stripe.price(world.price)
    built.pipeline.stripe.meter(world.meter)
    _measure(built, _records(world.customers, world.price, min(concurrency, 8)))  # connections
    return built


def _median(runs: list[Run], attribute: str) -> float:
    return statistics.median(getattr(run, attribute) for run in runs)


def _figures(runs: list[Run]) -> str:
    return ", ".join(f"{run.rate:.0f}" for run in runs)


def _table(rows: list[tuple[str, str, int, list[Run], str]]) -> str:
    lines = [
        "| mode | ledger stand-in | records per batch | reports/s (median) | runs"
        " | worker CPU per report | stand-ins' CPU per report | target |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for mode, ledger, batch, runs, target in rows:
        rate, cpu = _median(runs, "rate"), _median(runs, "cpu_ms_per_report")
        stand_ins = _median(runs, "stand_in_cpu_ms_per_report")
        lines.append(
            f"| {mode} | {ledger} | {batch} | {rate:.1f} | {_figures(runs)} | {cpu:.2f} ms"
            f" | {stand_ins:.2f} ms | {target} |"
        )
    return "\n".join(lines)


@contextmanager
def _ledgers() -> Iterator[list[Ledger]]:
    """dynalite first when it is installed (the worker-bound measurement), then moto."""
    servers: list[Ledger] = []
    try:
        executable = dynalite_executable()
        if executable:
            servers.append(Ledger(f"dynalite {DYNALITE_VERSION}", DynaliteProcess(executable)))
        else:
            print("  dynalite not installed (`make bench` installs it with npm): moto only")
        servers.append(Ledger("moto", MotoProcess(keep_alive=True)))
        for ledger in servers:
            client = boto3.client("dynamodb", endpoint_url=ledger.server.endpoint_url)
            create_ledger_table(client, LEDGER, time_to_live=ledger.server.time_to_live)
        yield servers
    finally:
        for ledger in servers:
            ledger.server.stop()


@dataclass
class Mode:
    """One pooled configuration measured RUNS times, alternating with the others."""

    label: str
    ledger: Ledger
    worker: Any
    stand_ins: tuple[int, ...]
    runs: list[Run]


def run() -> None:
    from meterbridge.observability import logger

    logger.setLevel("WARNING")  # one JSON line per report would be measured too
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.update(LOCAL_AWS_ENVIRONMENT)
    with _ledgers() as ledgers:
        primary, moto = ledgers[0], ledgers[-1]
        sqs = boto3.client("sqs", endpoint_url=moto.server.endpoint_url)
        CONFIRM_QUEUE.update(
            endpoint_url=moto.server.endpoint_url,
            queue_url=sqs.create_queue(QueueName="bench-confirm")["QueueUrl"],
        )
        fast = _world()
        slow = _world(latency_seconds=LATENCY)
        try:
            on_primary = (primary.server.pid, slow.emulator.pid)
            ceiling = _measure(
                _worker(fast, CONCURRENCY, primary),
                _records(fast.customers, fast.price, BATCH),
                (primary.server.pid, fast.emulator.pid),
            )
            print(f"  no latency: {ceiling.rate:.1f}/s, {ceiling.cpu_ms_per_report:.2f} ms CPU")
            modes = [
                Mode(
                    "`INVOICE_GUARD=off`",
                    primary,
                    _worker(slow, CONCURRENCY, primary),
                    on_primary,
                    [],
                ),
                Mode(
                    "`INVOICE_GUARD=confirm` (the default)",
                    primary,
                    _worker(slow, CONCURRENCY, primary, INVOICE_GUARD="confirm"),
                    tuple({*on_primary, moto.server.pid}),
                    [],
                ),
            ]
            if moto is not primary:
                modes.append(
                    Mode(
                        "`INVOICE_GUARD=off`",
                        moto,
                        _worker(slow, CONCURRENCY, moto),
                        (moto.server.pid, slow.emulator.pid),
                        [],
                    )
                )
            sequential = _worker(slow, 1, primary)
            sequential_runs: list[Run] = []
            for _ in range(RUNS):
                for mode in modes:
                    batch = _records(slow.customers, slow.price, BATCH)
                    mode.runs.append(_measure(mode.worker, batch, mode.stand_ins))
                    if "confirm" in mode.label:
                        # Nothing consumes the delayed checks here, and a growing queue
                        # makes moto's SendMessage slower run by run (SQS's is not): start
                        # each run on an empty queue of the same name (moto allows it).
                        sqs.delete_queue(QueueUrl=CONFIRM_QUEUE["queue_url"])
                        sqs.create_queue(QueueName="bench-confirm")
                    print(
                        f"  {mode.label} on {mode.ledger.name}: {mode.runs[-1].rate:.1f}/s"
                        f" ({mode.runs[-1].cpu_ms_per_report:.2f} ms CPU/report)"
                    )
                if len(sequential_runs) < 3:
                    batch = _records(slow.customers, slow.price, SEQUENTIAL_BATCH)
                    sequential_runs.append(_measure(sequential, batch, on_primary))
            streamed = _worker(
                slow, V2_CONCURRENCY, primary, METER_EVENT_API="v2", STREAM_LINGER_SECONDS=V2_LINGER
            )
            v2_runs = [
                _measure(streamed, _records(slow.customers, slow.price, V2_BATCH), on_primary)
                for _ in range(3)
            ]
            print(f"  v2 stream {_figures(v2_runs)}/s")
            events = slow.emulator.meter_events() + fast.emulator.meter_events()
        finally:
            fast.emulator.stop()
            slow.emulator.stop()
    _write(
        ledgers=ledgers,
        ceiling=ceiling,
        modes=modes,
        sequential_runs=sequential_runs,
        v2_runs=v2_runs,
        events=events,
    )


def _write(
    *,
    ledgers: list[Ledger],
    ceiling: Run,
    modes: list[Mode],
    sequential_runs: list[Run],
    v2_runs: list[Run],
    events: list[dict[str, Any]],
) -> None:
    v2_events = [e for e in events if e["source"] == "v2"]
    v2_sizes = sorted(collections.Counter(e["idempotency_key"] for e in v2_events).values())
    accepted = sum(1 for e in events if e["status"] == "accepted")
    identifiers = [e["identifier"] for e in events if e["status"] == "accepted"]
    if len(set(identifiers)) != len(identifiers):
        raise RuntimeError("an identifier was accepted twice")

    primary = ledgers[0]
    main_runs = modes[0].runs
    pool, seq = _median(main_runs, "rate"), _median(sequential_runs, "rate")
    cpu = _median(main_runs, "cpu_ms_per_report")

    def target(rate: float) -> str:
        return "≥ 100/s (" + ("met" if rate >= 100 else "**NOT met**") + ")"

    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    machine = machine_info("stripe", "boto3", "moto", "aws-lambda-powertools")
    pool_mode = f"bounded pool, `BATCH_CONCURRENCY={CONCURRENCY}`"
    rows: list[tuple[str, str, int, list[Run], str]] = [
        (
            f"{pool_mode}, {mode.label}",
            mode.ledger.name,
            BATCH,
            mode.runs,
            target(_median(mode.runs, "rate")) if mode.ledger is primary else "—",
        )
        for mode in modes
    ]
    rows += [
        (
            "sequential loop (`BATCH_CONCURRENCY=1`)",
            primary.name,
            SEQUENTIAL_BATCH,
            sequential_runs,
            "—",
        ),
        ("bounded pool, **no** injected latency", primary.name, BATCH, [ceiling], "—"),
        (
            f"`METER_EVENT_API=v2` stream, `BATCH_CONCURRENCY={V2_CONCURRENCY}`",
            primary.name,
            V2_BATCH,
            v2_runs,
            "—",
        ),
    ]
    moto_runs = modes[-1].runs if modes[-1].ledger is not primary else []
    moto_note = (
        f"On moto the same pool makes {_median(moto_runs, 'rate'):.1f} reports/s: moto spends"
        f" {_median(moto_runs, 'stand_in_cpu_ms_per_report'):.1f} ms of CPU per report (with"
        " the emulator's), so on 2 shared cores the stand-in sets the pace there, not the"
        " worker."
        if moto_runs and primary.name != "moto"
        else "Only moto was available: its CPU per DynamoDB call, on the same 2 cores, sets the"
        " pace (install dynalite with `make bench` for the worker-bound figure)."
    )
    confirm = modes[1]
    body = f"""## Worker throughput

Measured {measured} UTC with `make bench` (`.venv/bin/python -m bench worker`) on {machine}.

One invocation of `meterbridge.handlers.worker.handler` per batch; each record is an
`invoice.created` for its own renewal draft with one metered line, carried whole in the
event (no invoice fetch), {CUSTOMERS} customers round-robin. The Stripe billing emulator runs
**in its own process** (`bench.emulator_process`) and adds {LATENCY * 1000:.0f} ms to every
call. Per report the worker makes 1 Stripe round trip (the meter event; prices and meters
are cached per container and warmed first; no `TENANT_METADATA_KEY`, so no customer read)
and 4 ledger round trips (invoice read — which also recognises a redelivered event —,
claim with value, sent, the invoice's outcome); `INVOICE_GUARD=confirm`, the template's
default, adds one SQS `SendMessage` (the delayed check, on moto) and nothing else.

The ledger lives in a DynamoDB stand-in in its own process: **dynalite** {DYNALITE_VERSION}
(an in-memory implementation of the DynamoDB API on Node.js, installed by `make bench` with
npm into `.bench/node`), about 1 ms of CPU per call, and **moto**, the suite's stand-in,
3-8 ms per call here. moto (the ledger of the moto row, and SQS for confirm mode's checks)
is served with HTTP/1.1 keep-alive (`bench.moto_keepalive`), as AWS's endpoints are:
`python -m moto.server` opens a connection per call, CPU that AWS does not cost the worker
(confirm mode measured 91 reports/s with it, 105 without). The batch is the template's
largest (`WorkerBatchSize` ≤ 100) with
`BatchConcurrency` {CONCURRENCY} (≤ 128). Median of {RUNS} runs per row, the rows
alternating run by run; "runs" lists each run's reports/s. {accepted} meter events accepted
in total, each identifier once; {sum(FAILED_RECORDS)} records failed transiently and are
left out of the rates.

{_table(rows)}

Ratio pool / sequential: **{pool / seq:.1f}x**. With {LATENCY * 1000:.0f} ms per Stripe call
a sequential loop cannot exceed {1 / LATENCY:.1f} reports/s; the pool overlaps the waits, up
to `BATCH_CONCURRENCY` records at a time. {moto_note} In confirm mode the worker's CPU per
report is {_median(confirm.runs, "cpu_ms_per_report"):.2f} ms (the SQS call), and moto's
SQS adds its CPU to the same 2 cores.

"Worker CPU per report" is `time.process_time()` of the worker's process (all its threads)
around the invocation, divided by the reports; "stand-ins' CPU" is the stand-ins' processes
(ledger, the confirmation queue's moto, emulator) over the same invocation, from /proc.
{cpu:.2f} ms means one invocation cannot exceed about {1000 / cpu:.0f} reports/s on one vCPU
however fast Stripe and DynamoDB answer (≥ 1,769 MB of memory gives the function a full
vCPU; the GIL keeps one invocation on about one core anyway): the figure that carries over
to AWS, where no stand-in shares the Lambda's CPU. This machine is shared and noisy: the
same batch costs 7-12 ms of worker CPU from one run to the next (the sequential loop, which
sleeps between calls, costs more per report than the busy pool), so single runs move by
±25 %; read the medians.

What brought the worker's CPU per report down (each change measured in paired runs in one
process, alternating, during development):
- The ledger's botocore calls are most of it (request building, SigV4 signing, event hooks:
  ~0.8-1.4 ms per call). The invoice.created event is remembered on the invoice's ledger
  item, which the worker reads anyway (5 → 4 round trips); in confirm mode the hold and
  the first check use that read, and the check is recorded with the invoice's outcome
  (6 → 4); botocore's client-side parameter validation is off for the ledger client
  (DynamoDB validates every request itself).
- The stripe SDK's default `requests` transport cost ~1 ms of CPU per call more than
  urllib3 below it: Stripe calls go through `adapters/stripe_http.py` (`stripe.HTTPClient`
  on urllib3); 8.7 → 7.0 ms per report, 105 → 120 reports/s (8 paired batches).
- The customer is read only with `TENANT_METADATA_KEY` (one Stripe call per report, not
  two; a customer read also counts against Stripe's basic rate limit of 100 requests/s).
"""
    body += f"""
v2 stream: {len(v2_events)} events in {len(v2_sizes)} `meter_event_stream` requests
(events per request: median {statistics.median(v2_sizes):.0f}, largest {v2_sizes[-1]}); a
request carries what the batch's threads have ready within `STREAM_LINGER_SECONDS`
(here {V2_LINGER} s). v2 saves one Stripe request per report but not the ledger's
round trips, which dominate the worker's CPU.

How the meter-event rate limiter holds Stripe's limit and recovers from a 429: the
bench:limiter section ("Meter-event rate limiter").
"""
    write_section("worker", body)
    print(body)


if __name__ == "__main__":
    run()
