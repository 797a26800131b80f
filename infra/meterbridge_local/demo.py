"""`meterbridge demo`: two months of usage-based billing, end to end, in seconds, offline.

The Stripe billing emulator plays Stripe (1 h finalization grace period on the test clock,
0.5 s aggregation lag), LocalStack runs the real webhook and worker handlers over moto, and
a UsageServer plays the product's usage database. Everything is set up through the real
`stripe` SDK; then each month the test clock is advanced to the renewal, the signed
`invoice.created` webhook flows through API → SQS → worker → meter event → ledger, and the
clock is advanced past the grace period. Finally every renewal invoice is checked against
the usage that was fed in: exit 0 only if each carries exactly that.

Two things go wrong on purpose, as they do in production: Stripe delivers one customer's
`invoice.created` twice (at-least-once delivery), and another customer's usage query is
slow the first time (a cold cache). `--naive` runs the same script against the naive
integration (meterbridge_local.naive, which builds on this module) to show what those do
to it: `run_demo(flow=NaiveFlow)`.

`BillingDriver` holds the SDK steps; the end-to-end tests reuse it with their own customers.
"""

import calendar
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal, TextIO

import stripe
from rich import box
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from meterbridge_local.stripe_emulator.webhooks import sign
from meterbridge_local.usage_server import Fault, UsageServer

if TYPE_CHECKING:
    from meterbridge.domain.records import ReportRecord

DEMO_API_KEY = "sk_test_meterbridge_demo"
METER_EVENT_NAME = "api_requests"
TENANT_METADATA_KEY = "tenant"
UNIT_AMOUNT_CENTS = Decimal("0.5")  # half a cent per API request
DAY = 86_400
# Stripe's meter event window is 35 days back: a clock starting ~32 days ago keeps both
# months' timestamps inside it (docs/stripe.md#S-TS-1).
CLOCK_START_DAYS_AGO = 32
GRACE_PERIOD_SECONDS = 3600
AGGREGATION_LAG_SECONDS = 0.5
WEBHOOK_TIMEOUT_SECONDS = 1.0  # how long the emulated Stripe waits for a webhook's answer
SLOW_USAGE_SECONDS = 1.5  # a cold usage query: longer than Stripe waits for a webhook


@dataclass(frozen=True)
class DemoCustomer:
    name: str
    tenant: str
    usage: tuple[str, ...]  # per renewal, oldest first
    twist: str | None = None  # "duplicate" | "slow"
    note: str = ""


CUSTOMERS = (
    DemoCustomer("Acme Corp", "acme", ("12000", "9500")),
    DemoCustomer(
        "Globex",
        "globex",
        ("4310.5", "2700"),
        twist="duplicate",
        note="Stripe delivers its invoice.created twice",
    ),
    DemoCustomer(
        "Initech",
        "initech",
        ("770", "1530"),
        twist="slow",
        note=f"its usage query takes {SLOW_USAGE_SECONDS:g} s the first time",
    ),
)


def emulator_config(**changes: Any) -> EmulatorConfig:
    """The demo's Stripe: grace period 1 h of clock time, aggregation 0.5 s behind."""
    settings: dict[str, Any] = {
        "grace_period_seconds": GRACE_PERIOD_SECONDS,
        "aggregation_lag_seconds": AGGREGATION_LAG_SECONDS,
        "timestamp_reference": "clock",
        "webhook_timeout_seconds": WEBHOOK_TIMEOUT_SECONDS,
        **changes,
    }
    return EmulatorConfig(**settings)


def add_months(anchor: int, months: int) -> int:
    """Stripe's monthly cycle: same day of month as the anchor, clamped to the month's end."""
    start = datetime.fromtimestamp(anchor, UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


# --------------------------------------------------------------------------- Stripe steps


@dataclass(frozen=True)
class Catalog:
    meter_id: str
    event_name: str
    price_id: str
    unit_amount: Decimal  # cents


@dataclass(frozen=True)
class Subscriber:
    """A customer on a test clock with one metered monthly subscription."""

    name: str
    tenant: str
    customer_id: str
    subscription_id: str
    clock_id: str
    anchor: int  # billing cycle anchor (the clock's time at creation)

    def period(self, index: int) -> tuple[int, int]:
        """Service period `index` (0 = the first month) as [start, end)."""
        return add_months(self.anchor, index), add_months(self.anchor, index + 1)

    @property
    def accounts(self) -> tuple[str, str]:
        return self.tenant, self.customer_id


@dataclass(frozen=True)
class InvoiceCheck:
    """One renewal invoice next to the usage the source holds for its service period."""

    subscriber: Subscriber
    period: tuple[int, int]
    expected: Decimal
    invoice_id: str | None
    status: str | None
    quantity: Decimal | None
    amount: int | None
    expected_amount: int
    identifiers: tuple[str, ...] = ()
    ledger_status: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.status in {"open", "paid"}
            and self.quantity == self.expected
            and self.amount == self.expected_amount
        )

    @property
    def verdict(self) -> str:
        if self.ok:
            return "OK"
        if self.invoice_id is None:
            return "WRONG: no invoice"
        if self.status not in {"open", "paid"}:
            return f"WRONG: {self.status}"
        if self.quantity is not None and self.quantity < self.expected:
            return "WRONG: usage missing"
        return "WRONG: counted twice" if self.quantity == 2 * self.expected else "WRONG"


class BillingDriver:
    """The Stripe side of a billing scenario, through the real SDK against any Stripe."""

    def __init__(self, api_base: str, usage: UsageServer | None, api_key: str = DEMO_API_KEY):
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base, "meter_events": api_base},
            max_network_retries=3,
        )
        self.usage = usage

    def create_catalog(
        self, event_name: str = METER_EVENT_NAME, unit_amount: Decimal = UNIT_AMOUNT_CENTS
    ) -> Catalog:
        meter = self.client.v1.billing.meters.create(
            {
                "display_name": f"API requests ({event_name})",
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        product = self.client.v1.products.create({"name": "API platform"})
        price = self.client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount_decimal": unit_amount,
                "nickname": "API requests, metered monthly",
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
        return Catalog(meter.id, event_name, price.id, unit_amount)

    def create_clock(self, frozen_time: int | None = None, name: str = "meterbridge demo") -> str:
        frozen = frozen_time or int(time.time()) - CLOCK_START_DAYS_AGO * DAY
        return self.client.v1.test_helpers.test_clocks.create(
            {"frozen_time": frozen, "name": name}
        ).id

    def subscribe(self, clock_id: str, name: str, tenant: str, catalog: Catalog) -> Subscriber:
        customer = self.client.v1.customers.create(
            {"name": name, "metadata": {TENANT_METADATA_KEY: tenant}, "test_clock": clock_id}
        )
        subscription = self.client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": catalog.price_id}]}
        )
        anchor = subscription.billing_cycle_anchor
        return Subscriber(name, tenant, customer.id, subscription.id, clock_id, anchor)

    def feed_usage(
        self, subscriber: Subscriber, index: int, total: Decimal | str, event_name: str
    ) -> None:
        """Record `total` for service period `index` as three usage records inside it."""
        start, end = subscriber.period(index)
        total = Decimal(str(total))
        assert self.usage is not None, "feeding usage needs the UsageServer"
        first = (total * Decimal("0.5")).quantize(Decimal("0.1"))
        second = (total * Decimal("0.3")).quantize(Decimal("0.1"))
        parts = ((start, first), ((start + end) // 2, second), (end - 1, total - first - second))
        for at, value in parts:
            self.usage.add(subscriber.tenant, event_name, at=at, value=value)

    def advance(self, clock_id: str, frozen_time: int, timeout: float = 30.0) -> None:
        """Advance and poll until the clock is `ready` (advancing is asynchronous)."""
        self.client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
        deadline = time.monotonic() + timeout
        while self.client.v1.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
            if time.monotonic() > deadline:
                raise TimeoutError(f"test clock {clock_id} not ready after {timeout} s")
            time.sleep(0.02)

    def renewal_event(self, subscriber: Subscriber, index: int) -> dict[str, Any]:
        """The invoice.created event of renewal `index` (1 = the first renewal): id and
        `payload`, the event's JSON exactly as Stripe serves it (what a webhook carries)."""
        start, end = subscriber.period(index - 1)
        for event in self.client.v1.events.list({"type": "invoice.created", "limit": 100}).data:
            invoice = event.data.object
            if (
                invoice["customer"] == subscriber.customer_id
                and invoice["billing_reason"] == "subscription_cycle"
                and (invoice["period_start"], invoice["period_end"]) == (start, end)
            ):
                retrieved = self.client.v1.events.retrieve(event.id)
                body = retrieved.last_response.body if retrieved.last_response else ""
                return {"id": event.id, "payload": body.encode()}
        raise LookupError(f"no invoice.created for {subscriber.name}'s renewal {index}")

    def check_renewal(self, subscriber: Subscriber, index: int, catalog: Catalog) -> InvoiceCheck:
        """Renewal `index` (1 = first) of `subscriber` against the usage source."""
        period = subscriber.period(index - 1)
        assert self.usage is not None, "checking a renewal needs the UsageServer"
        expected = self.usage.total(subscriber.accounts, catalog.event_name, *period)
        expected_amount = int((expected * catalog.unit_amount).to_integral_value(ROUND_HALF_UP))
        found = None
        invoices = self.client.v1.invoices.list({"customer": subscriber.customer_id, "limit": 100})
        for invoice in invoices.data:
            if invoice.billing_reason != "subscription_cycle":
                continue
            for line in self.client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).data:
                line_period = (line.period.start, line.period.end)
                pricing = line.to_dict().get("pricing") or {}
                price = (pricing.get("price_details") or {}).get("price")
                if line_period == period and price == catalog.price_id:
                    found = (invoice, line)
        if found is None:
            return InvoiceCheck(
                subscriber, period, expected, None, None, None, None, expected_amount
            )
        invoice, line = found
        return InvoiceCheck(
            subscriber,
            period,
            expected,
            invoice.id,
            invoice.status,
            Decimal(line.quantity_decimal or line.quantity or 0),
            line.amount,
            expected_amount,
        )


def deliver_again(url: str, event: dict[str, Any], secret: str) -> int:
    """Stripe's at-least-once delivery: POST an event's payload once more, freshly signed."""
    payload = event["payload"]
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(payload, secret, int(time.time())),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


# --------------------------------------------------------------------------- the run


@dataclass
class DemoRun:
    """State shared by both variants of the demo."""

    console: Console
    emulator: StripeEmulator
    usage: UsageServer
    driver: BillingDriver
    renewals: int
    catalog: Catalog | None = None
    clock_id: str = ""
    subscribers: list[Subscriber] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.console.print(f"[green]✓[/] {message}")

    @contextmanager
    def waiting(self, message: str) -> Iterator[None]:
        started = time.monotonic()
        # Not console.status(): its Live redirects sys.stdout into the terminal, so the
        # handlers' metric lines (printed on threads) would show through the spinner
        # instead of going to the log file with everything else they write.
        spinner = Spinner("dots", message)
        with Live(
            spinner,
            console=self.console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ):
            yield
        self.step(f"{message} [dim]({time.monotonic() - started:.1f} s)[/]")

    def set_up(self, customers: Sequence[DemoCustomer]) -> None:
        self.catalog = self.driver.create_catalog()
        self.clock_id = self.driver.create_clock()
        for customer in customers:
            subscriber = self.driver.subscribe(
                self.clock_id, customer.name, customer.tenant, self.catalog
            )
            self.subscribers.append(subscriber)
            for index, total in enumerate(customer.usage[: self.renewals]):
                self.driver.feed_usage(subscriber, index, total, self.catalog.event_name)
        start = self.subscribers[0].anchor
        self.step(
            f"meter [bold]{METER_EVENT_NAME}[/], metered monthly price "
            f"({UNIT_AMOUNT_CENTS}¢ a request), test clock at {_date(start)} "
            f"({CLOCK_START_DAYS_AGO} days ago), {len(customers)} customers subscribed"
        )
        for customer, subscriber in zip(customers, self.subscribers, strict=True):
            fed = ", ".join(customer.usage[: self.renewals])
            note = f" [yellow]— {customer.note}[/]" if customer.note else ""
            self.step(
                f"usage source holds {fed} requests for {customer.name} "
                f"(tenant {subscriber.tenant}){note}"
            )

    def before_renewal(self, customers: Sequence[DemoCustomer]) -> None:
        """Script this month's twists that live in the usage source (a cold, slow query)."""
        self.usage.clear_faults()
        for customer in customers:
            if customer.twist == "slow":
                self.usage.script(customer.tenant, Fault(delay=SLOW_USAGE_SECONDS))

    def checks(self) -> list[InvoiceCheck]:
        assert self.catalog is not None
        return [
            self.driver.check_renewal(subscriber, index, self.catalog)
            for index in range(1, self.renewals + 1)
            for subscriber in self.subscribers
        ]


def _date(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _period(period: tuple[int, int]) -> str:
    start, end = (datetime.fromtimestamp(moment, UTC) for moment in period)
    return f"{start:%b %d} → {end:%b %d %Y}"


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[InvoiceCheck], str]
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False


_COLUMNS = {
    "customer": _Column("customer", lambda c: c.subscriber.name),
    "period": _Column("service period", lambda c: _period(c.period), no_wrap=True),
    "short period": _Column("period", lambda c: _period(c.period)[:-5], no_wrap=True),
    "usage": _Column(
        "usage (source)", lambda c: format(c.expected.normalize(), "f"), justify="right"
    ),
    "short usage": _Column("usage", lambda c: format(c.expected.normalize(), "f"), justify="right"),
    "identifier": _Column(
        "identifier reported", lambda c: "\n".join(c.identifiers) or "—", no_wrap=True
    ),
    "ledger": _Column("ledger", lambda c: c.ledger_status or "—"),
    "invoice": _Column("invoice", lambda c: c.status or "missing"),
    "quantity": _Column(
        "line qty",
        lambda c: "—" if c.quantity is None else format(c.quantity.normalize(), "f"),
        justify="right",
    ),
    "amount": _Column(
        "amount",
        lambda c: "—" if c.amount is None else f"${c.amount / 100:,.2f}",
        justify="right",
    ),
    "check": _Column(
        "check",
        lambda c: "[green]OK[/]" if c.ok else f"[bold red]{c.verdict}[/]",
        no_wrap=True,
    ),
}
# Widest first; each narrower layout drops the column least needed to judge an invoice.
# The verdict ("check") and what it compares (usage vs line quantity) are always there.
_LAYOUTS = (
    ("customer", "period", "usage", "identifier", "ledger", "invoice", "quantity", "amount",
     "check"),
    ("customer", "period", "usage", "ledger", "invoice", "quantity", "amount", "check"),
    ("customer", "period", "usage", "invoice", "quantity", "amount", "check"),
    ("customer", "period", "usage", "quantity", "amount", "check"),
    ("customer", "short period", "short usage", "quantity", "amount", "check"),
    ("customer", "short period", "short usage", "quantity", "check"),
)  # fmt: skip


def _table(checks: Sequence[InvoiceCheck], title: str, names: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    columns = [_COLUMNS[name] for name in names]
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap)
    for check in checks:
        table.add_row(*(column.cell(check) for column in columns))
    return table


def render(console: Console, checks: Sequence[InvoiceCheck], title: str) -> None:
    """The result table in the widest layout that fits the console without wrapping."""
    unbounded = console.options.update_width(10_000)  # a table's natural width
    for names in _LAYOUTS:
        table = _table(checks, title, names)
        if console.measure(table, options=unbounded).maximum <= console.width:
            break
    console.print(table)
    if names != _LAYOUTS[0]:
        left_out = [
            _COLUMNS[name].header
            for name in _LAYOUTS[0]
            if name not in names and f"short {name}" not in names
        ]
        console.print(f"[dim]({', '.join(left_out)}: left out to fit {console.width} columns)[/]")


def run_demo(
    *,
    flow: "type[Flow] | None" = None,
    renewals: int = 2,
    customers: Sequence[DemoCustomer] = CUSTOMERS,
) -> int:
    """The whole demo; 0 when every finalized renewal invoice carries exactly its usage.

    Whatever the handlers, moto and the servers write to stdout/stderr (JSON logs, EMF
    metrics) goes to a log file named at the end; the terminal shows the story and the table.
    """
    descriptor, log_path = tempfile.mkstemp(prefix="meterbridge-demo-", suffix=".log")
    with _output_to(descriptor) as terminal:
        # A pipe or CI log gets the table's natural width instead of 80 columns.
        width = None if terminal.isatty() else 180
        console = Console(file=terminal, highlight=False, width=width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Powertools' "no metrics to publish"
            code = _run(flow or MeterbridgeFlow, renewals, customers, console)
        console.print(f"[dim]logs (the handlers' JSON lines, metrics): {log_path}[/]")
    return code


@contextmanager
def _output_to(log_descriptor: int) -> Iterator[TextIO]:
    """Point file descriptors 1 and 2 at the log (every writer, however it holds its
    stream, lands there); yield a stream on the original stdout for the console."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", encoding="utf-8", errors="replace")
    try:
        os.dup2(log_descriptor, 1)
        os.dup2(log_descriptor, 2)
        yield terminal
    finally:
        terminal.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for descriptor in (saved_out, saved_err, log_descriptor):
            os.close(descriptor)
        terminal.close()


def _run(
    flow_class: "type[Flow]", renewals: int, customers: Sequence[DemoCustomer], console: Console
) -> int:
    started = time.monotonic()
    title = flow_class.title
    console.rule(f"[bold]meterbridge demo[/] — {title}")
    with ExitStack() as resources:
        emulator = resources.enter_context(StripeEmulator(emulator_config()).start())
        usage = resources.enter_context(UsageServer().start())
        run = DemoRun(console, emulator, usage, BillingDriver(emulator.url, usage), renewals)
        run.step(
            f"Stripe billing emulator at {emulator.url} (grace period "
            f"{GRACE_PERIOD_SECONDS // 60} min of clock time, aggregation lag "
            f"{AGGREGATION_LAG_SECONDS:g} s)"
        )
        run.step(f"usage source at {usage.url}")
        flow = flow_class(run, resources)
        run.set_up(customers)
        flow.after_setup()
        for index in range(1, renewals + 1):
            renewal_at = max(s.period(index - 1)[1] for s in run.subscribers)
            flow.during_period(index)
            run.before_renewal(customers)
            with run.waiting(f"month {index}: advancing the test clock to {_date(renewal_at)}"):
                run.driver.advance(run.clock_id, renewal_at)
            flow.on_renewal(index, customers)
            with run.waiting(
                f"month {index}: advancing past the {GRACE_PERIOD_SECONDS // 60}-minute "
                "grace period; drafts finalize"
            ):
                run.driver.advance(run.clock_id, renewal_at + GRACE_PERIOD_SECONDS + 60)
                flow.settle()
        checks = flow.annotate(run.checks())
    console.print()
    render(console, checks, f"Renewal invoices — {title}")
    wrong = [c for c in checks if not c.ok]
    elapsed = time.monotonic() - started
    if not wrong:
        console.print(
            f"[bold green]All {len(checks)} renewal invoices carry exactly the usage from "
            f"the source[/] — one report each, none lost, none twice ({elapsed:.1f} s)."
        )
        return 0
    console.print(
        f"[bold red]{len(wrong)} of {len(checks)} renewal invoices are WRONG[/] ({elapsed:.1f} s)."
    )
    if flow_class.failure_note:
        console.print(flow_class.failure_note)
    return 1


class Flow:
    """What differs between meterbridge and the naive integration around each renewal."""

    title = "meterbridge"
    failure_note = ""  # printed when some invoice is wrong

    def __init__(self, run: DemoRun, resources: ExitStack) -> None: ...

    def after_setup(self) -> None: ...

    def during_period(self, index: int) -> None:
        """Before month `index`'s renewal (`meterbridge demo --continuous` sweeps here)."""

    def on_renewal(self, index: int, customers: Sequence[DemoCustomer]) -> None: ...

    def settle(self) -> None: ...

    def annotate(self, checks: list[InvoiceCheck]) -> list[InvoiceCheck]:
        return checks


class MeterbridgeFlow(Flow):
    """The real handlers in LocalStack; waits until the pipeline has drained."""

    parameters: dict[str, str] = {}  # template parameters beyond the demo's own

    def __init__(self, run: DemoRun, resources: ExitStack):
        from meterbridge_local.stack import LocalStack

        self.run = run
        self.stack = LocalStack(
            stripe_api_base=run.emulator.url,
            stripe_api_key=DEMO_API_KEY,
            usage_source=run.usage.url,
            parameter_overrides={
                "TenantMetadataKey": TENANT_METADATA_KEY,
                "GracePeriodSeconds": str(GRACE_PERIOD_SECONDS),
                "WorkerBatchingWindowSeconds": "0",
                **self.parameters,
            },
            environment={
                # Compressed time: a claim held by a concurrent duplicate is retried in 1 s,
                # and the invoice guard asks Stripe's summaries 1 s after reporting.
                "RETRY_BACKOFF_BASE_SECONDS": "1",
                "RETRY_BACKOFF_MAX_SECONDS": "2",
                "CONFIRM_DELAY_SECONDS": "1",
                "CONFIRM_MAX_DELAY_SECONDS": "2",
            },
            visibility_timeout=5,
        )
        self.stack.start()
        resources.callback(self.stack.stop)
        self.secret = self.stack.register_webhook_endpoint()
        run.step(
            f"local AWS (moto) at {self.stack.aws_endpoint_url}: queue, dead-letter queue and "
            "ledger table from template.yaml"
        )
        run.step(f"webhook handler at {self.stack.webhook_url} (registered with Stripe)")

    def after_setup(self) -> None:
        self.settle()  # the first invoices (finalized at once) flow through too

    def on_renewal(self, index: int, customers: Sequence[DemoCustomer]) -> None:
        run = self.run
        for customer, subscriber in zip(customers, run.subscribers, strict=True):
            if customer.twist == "duplicate":
                event = run.driver.renewal_event(subscriber, index)
                status = deliver_again(self.stack.webhook_url, event, self.secret)
                run.step(
                    f"month {index}: Stripe delivered {subscriber.name}'s invoice.created "
                    f"a second time (webhook answered {status})"
                )
        with run.waiting(
            f"month {index}: invoice.created → webhook → SQS → worker → meter event → ledger"
        ):
            self.settle()

    def settle(self) -> None:
        """Webhooks answered, queue drained, meter events aggregated — until all stay so."""
        for _ in range(3):
            self.run.emulator.wait_idle(timeout=30)
            if not self.stack.drain(timeout=30):
                raise TimeoutError("the worker's queue did not drain in 30 s")
        self.run.emulator.wait_idle(timeout=30)

    def annotate(self, checks: list[InvoiceCheck]) -> list[InvoiceCheck]:
        import boto3

        from meterbridge.adapters.ledger import DynamoDbLedger

        ledger = DynamoDbLedger(
            self.stack.ledger_table_name,
            boto3.client("dynamodb", endpoint_url=self.stack.aws_endpoint_url),
        )
        annotated = []
        for check in checks:
            reports = ledger.invoice_reports(check.invoice_id) if check.invoice_id else []
            annotated.append(
                _replace(
                    check,
                    identifiers=tuple(r.identifier for r in reports),
                    ledger_status=", ".join(_ledger_summary(r) for r in reports) or "no report",
                )
            )
        return annotated


def _ledger_summary(report: "ReportRecord") -> str:
    """What the ledger says of one report: sent, then what the invoice guard found."""
    steps = (
        report.status,
        report.confirmation.status if report.confirmation else None,
        report.reconciliation.status if report.reconciliation else None,
    )
    return " · ".join(str(step) for step in steps if step)


def _replace(check: InvoiceCheck, **changes: Any) -> InvoiceCheck:
    from dataclasses import replace

    return replace(check, **changes)
