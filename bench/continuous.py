"""Continuous reporting: what it costs per customer and month, whether a 100,000-customer
sweep fits Stripe's live meter-event limit, and what it does to the month-start storm
(docs/continuous.md). Written into docs/benchmarks.md between the bench:continuous markers.

1. month: CUSTOMERS customers, each with one metered item and usage in every hour of its
   month, on a test clock of the Stripe billing emulator; the real worker (moto's SQS and
   DynamoDB in their own process) handles every sweep the schedule would send
   (CONTINUOUS_REPORTING=hourly, then daily), then the renewal. Every call the worker makes
   is counted: Stripe requests, DynamoDB requests, SQS requests (the schedule's send, the
   fan-out, the event source mapping's receives and deletes). The invoices are checked.
2. sweep: SWEEP_CUSTOMERS customers swept at once through the local SQS event source mapping
   (MaximumConcurrency CONTAINERS, one warm worker each) against an emulator (own process)
   that limits meter events to LIMIT/s; each container's limiter starts at 0.9 x LIMIT /
   CONTAINERS (METER_EVENT_RATE). Measured: the rate achieved, its busiest second, 429s.
3. storm: STORM_INVOICES renewals at once, one customer each, through the real handler:
   CONTINUOUS_REPORTING off, and on after a month of daily sweeps (30 sweep reports of each
   customer in the ledger). Measured: reports/s and ledger calls per renewal.
"""

import collections
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import stripe

from bench.emulator_process import EmulatorProcess
from bench.report import machine_info, write_section
from bench.stand_ins import MotoProcess
from bench.worker_throughput import renewal_record
from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.adapters.queue import SqsQueue
from meterbridge.adapters.usage_sources import UsageQuery
from meterbridge.domain.continuous import window_identifier
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.reports import PlannedReport
from meterbridge.handlers.worker import Worker, handler
from meterbridge.worker.composition import build_pipeline, connect, worker_settings
from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT
from meterbridge_local.lambda_runtime import FunctionConfig, SqsPoller, sqs_record
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.resources import SqsEventSource
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

CUSTOMERS = int(os.environ.get("BENCH_CONTINUOUS_CUSTOMERS", "3"))
# 1:100 of live: 100,000 customers against 1,000 meter events/s take as long as these.
SWEEP_CUSTOMERS = int(os.environ.get("BENCH_CONTINUOUS_SWEEP_CUSTOMERS", "1000"))
LIMIT = float(os.environ.get("BENCH_CONTINUOUS_LIMIT", "10"))
CONTAINERS = int(os.environ.get("BENCH_CONTINUOUS_CONTAINERS", "2"))
STORM_INVOICES = int(os.environ.get("BENCH_CONTINUOUS_STORM", "300"))
API_KEY = "sk_test_bench_continuous"
HOUR, DAY = 3600, 86_400
SHARE = 0.9  # of Stripe's limit, the most the limiters are set to take
LIVE_LIMIT = 1000  # v1 meter events per second, live mode (docs/stripe.md#S-RATE-1)
TARGET = 100_000

# --- usage: one unit in every hour, for every customer ---------------------------------

_PERIODS: dict[str, tuple[int, int]] = {}  # customer → the hours that have usage


def _environ(api_base: str, ledger_table: str, queue_url: str, **extra: str) -> dict[str, str]:
    """The worker's environment in these runs: local AWS, the emulator, sweeps settling 0 min."""
    return {
        **LOCAL_AWS_ENVIRONMENT,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": api_base,
        "LEDGER_TABLE": ledger_table,
        "QUEUE_URL": queue_url,
        "USAGE_SOURCE": "python://bench.continuous:usage",
        "INVOICE_GUARD": "off",
        "SWEEP_SETTLE_MINUTES": "0",
        **extra,
    }


def _metered_price(client: stripe.StripeClient, event_name: str) -> Any:
    """A sum meter on `event_name` and a monthly metered price of $0.005 a unit on it."""
    meter = client.v1.billing.meters.create(
        {
            "display_name": event_name,
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
        }
    )
    price: Any = {
        "currency": "usd",
        "unit_amount_decimal": "0.5",
        "product_data": {"name": event_name},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
    }
    return client.v1.prices.create(price)


def usage(query: UsageQuery) -> str:
    """`USAGE_SOURCE=python://bench.continuous:usage`: 1 per hour inside the customer's
    usage span, counted over [start, end)."""
    start, end = _PERIODS.get(query.customer, (0, 0))
    first = max(query.start, start)
    last = min(query.end, end)
    if last <= first:
        return "0"
    hours = (last - 1) // HOUR - (first + HOUR - 1) // HOUR + 1  # whole-hour marks inside
    return str(max(hours, 0))


# --- counting what the worker asks of Stripe, DynamoDB and SQS ----------------------------


class Counter:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: dict[str, float] = collections.defaultdict(float)  # time in each kind
        self._lock = threading.Lock()
        self._started = threading.local()

    def timed(self, client: Any, service: str) -> None:
        """Count `client`'s requests and the time each kind takes."""
        client.meta.events.register(f"before-call.{service}.*", self._before)
        client.meta.events.register(f"after-call.{service}.*", self._after(service))

    def _before(self, model: Any, **_: Any) -> None:
        self._started.at = time.perf_counter()

    def _after(self, service: str) -> Callable[..., None]:
        def after(model: Any, **_: Any) -> None:
            elapsed = time.perf_counter() - getattr(self._started, "at", time.perf_counter())
            with self._lock:
                self.calls[f"{service}:{model.name}"] += 1
                self.seconds[f"{service}:{model.name}"] += elapsed

        return after

    def add(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def hook(self, service: str) -> Callable[..., None]:
        def counted(model: Any, **_: Any) -> None:
            self.add(f"{service}:{model.name}")

        return counted

    def total(self, prefix: str) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(prefix))


class CountingStripe:
    """The worker's StripeGateway, each call counted; cached reads (meters, prices) only
    when they reach Stripe."""

    def __init__(self, gateway: Any, counter: Counter) -> None:
        self._gateway = gateway
        self._counter = counter
        self._cached: set[tuple[str, str]] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._gateway, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("meter", "price"):
                key = (name, str(args[0]))
                if key not in self._cached:
                    self._cached.add(key)
                    self._counter.add(f"stripe:{name}")
            else:
                self._counter.add(f"stripe:{name}")
            return method(*args, **kwargs)

        return call


def counted_worker(environ: dict[str, str], counter: Counter) -> Worker:
    dynamodb = boto3.client("dynamodb")
    dynamodb.meta.events.register("before-call.dynamodb.*", counter.hook("dynamodb"))
    sqs = boto3.client("sqs")
    sqs.meta.events.register("before-call.sqs.*", counter.hook("sqs"))
    settings = worker_settings(environ)
    dependencies = connect(settings, dynamodb=dynamodb)
    queue = SqsQueue(environ["QUEUE_URL"], sqs)
    dependencies = replace(
        dependencies,
        stripe=CountingStripe(dependencies.stripe, counter),
        confirm_queue=queue,
        visibility=queue,
        event_queue=queue,
        sweep_queue=queue,
    )
    return Worker.from_pipeline(build_pipeline(settings, dependencies))


class _Context:
    function_name = "bench-continuous"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-continuous"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def drain(worker: Worker, queue_url: str, counter: Counter) -> int:
    """What Lambda's SQS event source does: receive up to 10, invoke, delete the done ones;
    until the queue is empty. Its requests are counted (billed to the account on AWS)."""
    sqs = boto3.client("sqs")
    handled = 0
    while True:
        counter.add("sqs:ReceiveMessage")
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return handled
        response = handler(
            {"Records": [sqs_record(m, "arn:aws:sqs:us-east-1:123456789012:q") for m in messages]},
            _Context(),
            worker=worker,
        )
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        done = [m for m in messages if m["MessageId"] not in failed]
        if failed:
            raise RuntimeError(f"{len(failed)} message(s) failed")
        counter.add("sqs:DeleteMessageBatch")
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
            ],
        )
        handled += len(messages)


# --- 1. a month per customer --------------------------------------------------------------


@dataclass
class Month:
    cadence: str
    sweeps: int
    counter: Counter
    meter_events: int
    right: bool
    seconds: float
    handled: int = 0

    def per_customer(self, prefix: str) -> float:
        return self.counter.total(prefix) / CUSTOMERS


def _month(cadence: str, ledger_table: str) -> Month:
    started = time.perf_counter()
    emulator = StripeEmulator(EmulatorConfig(grace_period_seconds=HOUR)).start()
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"bench-continuous-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    try:
        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )
        price = _metered_price(client, "calls")
        start = int(time.time()) - 32 * DAY
        start -= start % HOUR
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
        customers = []
        for _ in range(CUSTOMERS):
            customer = client.v1.customers.create({"test_clock": clock.id}).id
            subscription = client.v1.subscriptions.create(
                {"customer": customer, "items": [{"price": price.id}]}
            )
            end = subscription["items"].data[0].current_period_end
            _PERIODS[customer] = (start, end)
            customers.append(customer)
        counter = Counter()
        environ = _environ(emulator.url, ledger_table, queue_url, CONTINUOUS_REPORTING=cadence)
        worker = counted_worker(environ, counter)
        step = {"hourly": HOUR, "daily": DAY}.get(cadence)
        moments = list(range(start + step, end + 1, step)) if step else []
        handled = 0
        for moment in moments:
            _advance(client, clock.id, moment)
            body = json.dumps({"meterbridge_sweep": {"test_clock": clock.id}})
            counter.add("sqs:SendMessage (schedule)")
            sqs.send_message(QueueUrl=queue_url, MessageBody=body)
            handled += drain(worker, queue_url, counter)
        _advance(client, clock.id, end + 60)
        emulator.wait_idle()
        for event in client.v1.events.list({"type": "invoice.created", "limit": 100}).data:
            invoice = event.data.object
            if invoice["billing_reason"] == "subscription_cycle":
                document = json.loads(json.dumps(event.to_dict(), default=str))
                SqsQueue(queue_url, sqs).send(
                    json.dumps(document),
                    {"body_kind": "event", "stripe_event_type": "invoice.created"},
                )
        handled += drain(worker, queue_url, counter)
        _advance(client, clock.id, end + 2 * HOUR)
        emulator.wait_idle()
        right = True
        for customer in customers:
            billed = Decimal(0)
            for renewal in client.v1.invoices.list({"customer": customer}).data:
                if renewal.billing_reason == "subscription_cycle":
                    billed += sum(
                        Decimal(str(line.to_dict().get("quantity_decimal") or 0))
                        for line in renewal.lines.data
                    )
            right = right and billed == Decimal(
                usage(UsageQuery(customer, None, "calls", start, end))
            )
        events = [e for e in emulator.meter_events() if e["status"] == "accepted"]
        return Month(
            cadence,
            len(moments),
            counter,
            len(events),
            right,
            time.perf_counter() - started,
            handled,
        )
    finally:
        emulator.stop()
        sqs.delete_queue(QueueUrl=queue_url)


def _advance(client: Any, clock_id: str, moment: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": moment})
    while client.v1.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
        time.sleep(0.005)


# --- 2. one sweep of many customers against the rate limit ---------------------------------


@dataclass
class Sweep:
    customers: int
    seconds: float
    accepted: int
    refused_429: int
    busiest_second: int
    pages: int
    invocations: int


def _sweep(ledger_table: str) -> Sweep:
    emulator = EmulatorProcess(meter_event_rate_limit=LIMIT)
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(
        QueueName=f"bench-sweep-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    try:
        client = stripe.StripeClient(
            API_KEY,
            base_addresses={"api": emulator.url, "meter_events": emulator.url},
            max_network_retries=3,
        )
        price = _metered_price(client, "sweep")
        start = int(time.time()) - 10 * DAY
        start -= start % HOUR
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})

        def subscribe(_: int) -> None:
            customer = client.v1.customers.create({"test_clock": clock.id}).id
            client.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
            _PERIODS[customer] = (start, start + 40 * DAY)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(subscribe, range(SWEEP_CUSTOMERS)))
        _advance(client, clock.id, start + 5 * DAY)
        rate = SHARE * LIMIT / CONTAINERS
        environ = _environ(
            emulator.url,
            ledger_table,
            queue_url,
            CONTINUOUS_REPORTING="hourly",
            SWEEP_METER_EVENT_RATE=str(rate),
            STRIPE_MAX_NETWORK_RETRIES="0",
            RETRY_BACKOFF_BASE_SECONDS="1",
            RETRY_BACKOFF_MAX_SECONDS="2",
        )
        containers: list[Worker] = [counted_worker(environ, Counter()) for _ in range(CONTAINERS)]
        free = list(containers)
        lock = threading.Lock()

        def invoke(event: dict[str, Any], context: Any) -> Any:
            with lock:
                worker = free.pop()
            try:
                return handler(event, context, worker=worker)
            finally:
                with lock:
                    free.append(worker)

        source = SqsEventSource(
            name="EventQueue",
            queue_logical_id="EventQueue",
            queue_url=queue_url,
            queue_arn=arn,
            batch_size=10,
            maximum_batching_window_seconds=0,
            function_response_types=("ReportBatchItemFailures",),
            maximum_concurrency=CONTAINERS,
        )
        poller = SqsPoller(
            invoke,
            source,
            function=FunctionConfig("bench-sweep", timeout_seconds=60, memory_mb=512),
            endpoint_url=os.environ["AWS_ENDPOINT_URL"],
            visibility_timeout=60,
        )
        started = time.time()
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps({"meterbridge_sweep": {"test_clock": clock.id}}),
        )
        poller.start()
        poller.drain(timeout=900)
        poller.stop()
        seconds = time.time() - started
        events = [e for e in emulator.meter_events() if float(e["received_at"]) >= started]
        accepted = [e for e in events if e["status"] == "accepted"]
        refused = sum(_limiter(w).rate_limited for w in containers)
        seconds_hit = collections.Counter(int(float(e["received_at"])) for e in accepted)
        return Sweep(
            SWEEP_CUSTOMERS,
            max(float(e["received_at"]) for e in accepted) - started if accepted else seconds,
            len(accepted),
            refused,
            max(seconds_hit.values(), default=0),
            -(-SWEEP_CUSTOMERS // 100),
            poller.stats.invocations,
        )
    finally:
        emulator.stop()
        sqs.delete_queue(QueueUrl=queue_url)


def _limiter(worker: Worker) -> Any:
    stripe_adapter: Any = worker.pipeline.stripe  # the counted StripeGateway
    return stripe_adapter.meter_event_limiter


# --- 3. the month-start storm, with and without continuous reporting -----------------------


@dataclass
class Storm:
    label: str
    seconds: float
    reports: int
    ledger_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    retried: int = 0  # records redelivered after a transient failure (moto's 500s)
    ledger_seconds: dict[str, float] = field(default_factory=dict)


def _storm(label: str, cadence: str, sweep_reports: int, ledger_table: str) -> Storm:
    emulator = StripeEmulator(EmulatorConfig()).start()
    try:
        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": emulator.url, "meter_events": emulator.url}
        )
        price = _metered_price(client, "storm")
        meter_id = str(price.recurring.meter)
        now = int(time.time())
        period = ServicePeriod(start=now - 30 * DAY, end=now - 60)
        tag = uuid.uuid4().hex[:6]
        customers = [f"cus_{tag}{i:05d}" for i in range(STORM_INVOICES)]
        for customer in customers:
            _PERIODS[customer] = (period.start, period.end)
        ledger = DynamoDbLedger(ledger_table, boto3.client("dynamodb"))
        bench_meter = Meter(id=meter_id, event_name="storm")
        if sweep_reports:
            _seed_sweeps(ledger, customers, bench_meter, period, sweep_reports)
        counter = Counter()
        environ = {
            **LOCAL_AWS_ENVIRONMENT,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": emulator.url,
            "LEDGER_TABLE": ledger_table,
            "QUEUE_URL": "",
            "USAGE_SOURCE": "python://bench.continuous:usage",
            "INVOICE_GUARD": "off",
            "CONTINUOUS_REPORTING": cadence,
            "BATCH_CONCURRENCY": "16",
        }
        environ.pop("QUEUE_URL")
        dynamodb = boto3.client("dynamodb")
        counter.timed(dynamodb, "dynamodb")
        settings = worker_settings(environ)
        worker = Worker.from_pipeline(
            build_pipeline(settings, connect(settings, dynamodb=dynamodb))
        )
        worker.pipeline.stripe.price(price.id)
        worker.pipeline.stripe.meter(meter_id)
        records = [_renewal(customer, price.id, period) for customer in customers]
        started = time.perf_counter()
        retried = 0
        pending = records
        for _ in range(5):  # moto answers some calls 500 under many threads: redeliver
            failed: list[dict[str, Any]] = []
            for chunk in range(0, len(pending), 16):  # what 16 threads start at once
                batch = pending[chunk : chunk + 16]
                response = handler({"Records": batch}, _Context(), worker=worker)
                ids = {f["itemIdentifier"] for f in response["batchItemFailures"]}
                failed += [r for r in batch if r["messageId"] in ids]
            retried += len(failed)
            pending = [{**r, "attributes": {"ApproximateReceiveCount": "2"}} for r in failed]
            if not pending:
                break
        if pending:
            raise RuntimeError(f"storm: {len(pending)} renewals still failing")
        seconds = time.perf_counter() - started
        return Storm(label, seconds, len(records), counter.calls, retried, counter.seconds)
    finally:
        emulator.stop()


def _seed_sweeps(
    ledger: DynamoDbLedger,
    customers: list[str],
    meter: Meter,
    period: ServicePeriod,
    count: int,
) -> None:
    """`count` delivered daily windows of each customer, as a month of sweeps leaves them."""
    step = (period.end - period.start) // count

    def seed(customer: str) -> None:
        for index in range(count):
            window = ServicePeriod(
                start=period.start + index * step, end=period.start + (index + 1) * step
            )
            plan = PlannedReport(
                identifier=window_identifier(customer, meter.id, window),
                invoice_id="",
                customer_id=customer,
                meter=meter,
                period=window,
                finalizes_at=period.end + HOUR,
                sweep=True,
            )
            claim = ledger.claim_new(plan, Decimal(24), window.end - 1, int(time.time()), 60)
            assert claim is not None
            ledger.mark_sent(claim, late=False, request_id="seed", duplicate=False, now=0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(seed, customers))


def _renewal(customer: str, price: str, period: ServicePeriod) -> dict[str, Any]:
    return renewal_record(customer, price, period.start, period.end)


# --- the report ---------------------------------------------------------------------------

# AWS prices (us-east-1, on demand, checked 2026): DynamoDB $0.625 per million write request
# units and $0.125 per million read request units; SQS $0.40 per million requests; Lambda
# (arm64) $0.0000133334 per GB-s and $0.20 per million requests. Assumed latencies: a Stripe
# call 150 ms, a DynamoDB call 8 ms, an SQS call 10 ms, the usage source 50 ms.
PRICE_WRU, PRICE_RRU, PRICE_SQS = 0.625e-6, 0.125e-6, 0.40e-6
PRICE_GBS, PRICE_INVOKE = 0.0000133334, 0.20e-6
LATENCY = {"stripe": 0.150, "dynamodb": 0.008, "sqs": 0.010, "usage": 0.050}
WRITES = ("PutItem", "UpdateItem")
MEMORY_GB = 0.5


def _aws(month: Month, baseline: Month) -> dict[str, float]:
    """Per customer per month on AWS, from the counted calls (beyond the renewal-only
    baseline): write units (a report item ~1 KB and its by_customer index copy: 2 WRU per
    write; a watermark ~0.3 KB: 1), read units (1 per consistent GetItem, 0.5 per Query
    page), SQS requests, Lambda GB-s (the calls' assumed latencies, sequential per pair)."""

    def extra(name: str) -> float:
        return month.per_customer(name) - baseline.per_customer(name)

    sweeps = month.sweeps
    sweep_reports = extra("stripe:create_meter_event")
    # At scale: per customer and sweep the watermark (1 read, 2 writes with usage, 1 without)
    # and per report 2 writes copied to the by_customer index; a page of 100 subscriptions
    # adds 1 Stripe list, 1 event-memory read and write, and 11 messages (the next page and
    # 10 work messages) sent in 2 SendMessageBatch requests, received and deleted 10 at a time.
    quiet = sweeps - sweep_reports
    wru = sweep_reports * (2 + 2 * 2) + quiet * 1 + sweeps * 1 / 100
    rru = sweeps * (1 + 1 / 100)
    messages = sweeps * 11 / 100
    # the schedule's message (at most one a page), the sends, the receives and the deletes
    sqs_requests = sweeps * (1 / 100 + 2 / 100) + 2 * messages / 10
    ddb_requests = sweep_reports * 4 + quiet * 1 + sweeps * (1 + 2 / 100)
    seconds = (
        (sweep_reports + sweeps / 100) * LATENCY["stripe"]
        + ddb_requests * LATENCY["dynamodb"]
        + sweeps * LATENCY["usage"]
    )
    gbs = seconds * MEMORY_GB
    dollars = wru * PRICE_WRU + rru * PRICE_RRU + sqs_requests * PRICE_SQS + gbs * PRICE_GBS
    return {"wru": wru, "rru": rru, "sqs": sqs_requests, "gbs": gbs, "dollars": dollars}


def _table() -> str:
    name = f"bench-continuous-{uuid.uuid4().hex[:8]}"
    create_ledger_table(boto3.client("dynamodb"), name)
    return name


def run() -> None:
    from meterbridge.observability import logger

    logger.setLevel("ERROR")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    moto = MotoProcess()
    os.environ.update({**LOCAL_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": moto.endpoint_url})
    try:
        months = {}
        for cadence in ("off", "daily", "hourly"):
            # A table per run: each emulator makes the same ids (its random is seeded).
            months[cadence] = _month(cadence, _table())
            m = months[cadence]
            print(
                f"  month {cadence}: {m.sweeps} sweeps, {m.meter_events} events, right={m.right},"
                f" {m.seconds:.0f} s",
                flush=True,
            )
        sweep = _sweep(_table())
        print(f"  sweep: {sweep}", flush=True)
        storms = [
            _storm("off", "off", 0, _table()),
            _storm("daily, after a month of sweeps (30 windows each)", "daily", 30, _table()),
        ]
        for storm in storms:
            print(f"  storm {storm.label}: {storm.reports / storm.seconds:.0f}/s", flush=True)
    finally:
        moto.stop()
    _write(months, sweep, storms)


def _write(months: dict[str, Month], sweep: Sweep, storms: list[Storm]) -> None:
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    machine = machine_info("stripe", "boto3", "moto")
    base = months["off"]

    def row(m: Month) -> str:
        return (
            f"| {m.cadence} | {m.sweeps} | {m.meter_events / CUSTOMERS:.0f} |"
            f" {m.per_customer('stripe:'):.0f} | {m.per_customer('dynamodb:'):.0f}"
            f" ({sum(m.per_customer(f'dynamodb:{w}') for w in WRITES):.0f} writes) |"
            f" {m.per_customer('sqs:'):.0f} | {'yes' if m.right else '**NO**'} |"
        )

    stripe_kinds = sorted(
        {
            name.split(":", 1)[1]
            for m in months.values()
            for name in m.counter.calls
            if name.startswith("stripe:")
        }
    )
    kinds = "; ".join(
        f"{m.cadence}: "
        + ", ".join(
            f"{kind} {m.per_customer('stripe:' + kind):.1f}"
            for kind in stripe_kinds
            if m.per_customer("stripe:" + kind)
        )
        for m in months.values()
    )
    paper = {c: _aws(months[c], base) for c in ("daily", "hourly")}
    paper_rows = "\n".join(
        f"| {c} | {p['wru']:.0f} | {p['rru']:.0f} | {p['sqs']:.0f} | {p['gbs']:.1f} |"
        f" ${p['dollars'] * 1000:.2f} | ${p['dollars'] * TARGET:,.0f} |"
        for c, p in paper.items()
    )
    rate = sweep.accepted / sweep.seconds if sweep.seconds else 0
    live_seconds = TARGET / (SHARE * LIVE_LIMIT)

    def storm_row(s: Storm) -> str:
        calls = ", ".join(
            f"{name.split(':')[1]} {n / s.reports:.1f} ({s.ledger_seconds[name] * 1000 / n:.0f} ms)"
            for name, n in sorted(s.ledger_calls.items())
        )
        per = sum(s.ledger_calls.values()) / s.reports
        return (
            f"| {s.label} | {s.reports} | {s.reports / s.seconds:.0f} | {per:.1f} ({calls}) |"
            f" {s.retried} |"
        )

    storm_rows = "\n".join(storm_row(s) for s in storms)
    month_header = (
        "| `CONTINUOUS_REPORTING` | sweeps | meter events | Stripe requests | DynamoDB requests"
        " | SQS requests | invoices right |"
    )
    storm_header = (
        "| `CONTINUOUS_REPORTING` | renewals | reports/s here | ledger requests per renewal"
        " | redelivered |"
    )
    paper_header = (
        "| cadence | DynamoDB WRU | RRU | SQS requests | Lambda GB-s | per 1,000 customers"
        " | per 100,000 customers |"
    )
    body = f"""## Continuous reporting

Measured {measured} UTC with `make bench` (`.venv/bin/python -m bench continuous`) on {machine}.
The real worker handler; moto (SQS, DynamoDB) in its own process; the Stripe billing emulator.
Design and reasons: [continuous.md](continuous.md).

### Per customer and month

{CUSTOMERS} customers, one metered item each, usage in every hour of the month (the most
events a sweep can cause: a quiet window sends nothing), on one test clock. Every sweep the
schedule sends in the month is handled (hourly: one per hour; daily: one per day), then
the renewal (true-up) — `INVOICE_GUARD=off`, so the guard's own checks are not counted. Counts
are the worker's requests divided by the customers; SQS includes the schedule's message, the
fan-out and the event source mapping's receives and deletes (one page and one work message
per sweep here: 100 subscriptions a page, 10 pairs a work message, so at scale the fixed
part per sweep shrinks per customer).

{month_header}
| --- | ---: | ---: | ---: | ---: | ---: | --- |
{row(base)}
{row(months["daily"])}
{row(months["hourly"])}

Stripe requests by kind, per customer: {kinds}. `subscriptions` is one list request per
page of 100 subscriptions: at 100,000 customers, 1,000 per sweep, 10 s of the live basic
limit (100 requests/s) spread over the fan-out.

On paper for AWS at scale, per customer and month beyond the renewal-only baseline, with
the measured meter events (usage every hour: the most) and the per-sweep requests above
spread over 100 customers a page (the `test_clock_time` reads are the test clock's, not a
live sweep's): a report write is 2 WRU with its by_customer index copy, a watermark write 1;
1 RRU per consistent GetItem; Lambda time is the requests at 150 ms per Stripe call, 8 ms
per DynamoDB call and 50 ms per usage query, 512 MB; us-east-1 on-demand prices:

{paper_header}
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{paper_rows}

Stripe itself does not charge per meter event; its live v1 limit is {LIVE_LIMIT}/s.

### One sweep of many customers, paced under the limit

Scaled 1:100 from live (the limit and the customers both): {sweep.customers:,} customers
swept at once: {sweep.pages} page(s) of subscriptions, their
work messages shared by {CONTAINERS} warm workers through the local SQS event source mapping
(BatchSize 10, MaximumConcurrency {CONTAINERS}); the emulator limits meter events to
{LIMIT:g}/s (sliding second) and each worker's sweeps are paced at
`SWEEP_METER_EVENT_RATE` = {SHARE:.0%} x {LIMIT:g} / {CONTAINERS} = {SHARE * LIMIT / CONTAINERS:g}/s
(the adaptive limiter every meter event shares starts at its default, 100/s).

| measure | value |
| --- | ---: |
| meter events accepted | {sweep.accepted:,} |
| answered 429 | {sweep.refused_429} |
| first to last accepted | {sweep.seconds:.1f} s |
| rate | {rate:.1f}/s ({rate / LIMIT:.0%} of the limit) |
| busiest second | {sweep.busiest_second} ({sweep.busiest_second / LIMIT:.0%} of the limit) |
| worker invocations | {sweep.invocations} |

At {TARGET:,} customers in live mode the same setting — `SWEEP_METER_EVENT_RATE` x
`WorkerMaximumConcurrency` = {SHARE:.0%} of {LIVE_LIMIT}/s (the defaults: 180 x 5) —
sends one event per customer with new usage in {live_seconds:.0f} s
({live_seconds / 60:.1f} min) if the containers keep up (each must then sustain 180
reports/s; bench:worker measures ~100/s per invocation with 150 ms Stripe latency, so
with 5 containers ~500/s: {TARGET / 500 / 60:.1f} min), well inside an hour either way. Renewals
are not held to the sweeps' pace; the adaptive limiter they share slows both when Stripe
answers 429.

### The month-start storm, with and without continuous reporting

{STORM_INVOICES} renewals at once, one customer each, 16 records in parallel, through the
real handler (moto's ledger): with continuous reporting each renewal also closes its
watermark and reads the customer's reports of the period (a month of daily sweeps: 30 of
them) to send only the remainder.

{storm_header}
| --- | ---: | ---: | --- | ---: |
{storm_rows}

(Each ledger request kind with its mean time here, 16 threads sharing moto.) moto answers a
query of the `by_customer` index by scanning every item of the table, so its `Query` time
grows with the ledger ({STORM_INVOICES * 30:,} sweep reports here) and sets this row's rate;
DynamoDB reads an index by its key, one page per 1 MB of the customer's items, in
milliseconds.

The storm sends the same number of meter events either way (one per period, its own
identifier: it carries the true-up and the guard's confirmation of the whole period); with
continuous reporting each one carries only the usage since the last sweep, so a renewal
that comes late or is lost costs an hour (or a day) of usage instead of the month, and
Stripe's previews, thresholds and mid-period invoices had the rest all along. Each renewal
costs three more ledger requests (the watermark's read and write, the customer's reports):
with hourly sweeps that query returns ~720 items (~0.7 MB: one or two Query pages, ~90 RRU).
"""
    write_section("continuous", body)
    print(body)
    if not all(m.right for m in months.values()):
        raise SystemExit("continuous: an invoice did not bill the month's usage")


if __name__ == "__main__":
    run()
