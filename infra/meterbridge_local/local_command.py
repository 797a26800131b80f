"""`meterbridge local`: the whole stack on this machine until Ctrl-C, and `--seed`, a first
customer to bill on it.

Every input is checked before anything starts (the port and usage source by the parser in
cli.py, the Stripe key and parameters here); a problem is one line and exit status 2.
"""

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from meterbridge_local.errors import CliError

if TYPE_CHECKING:
    from meterbridge_local.stack import LocalStack
    from meterbridge_local.usage_server import UsageServer

# The key `meterbridge local` gives the emulator and prints in its export line. The emulator
# accepts any sk_test_ key; this one also tells a later start "that was the emulator", so a
# shell that sourced the export line starts a fresh emulator instead of asking for a secret.
EMULATOR_API_KEY = "sk_test_meterbridge_local"
DAY = 86_400
SEED_METER = "api_requests"
SEED_USAGE = Decimal("1200")
SEED_CLOCK_DAYS_BACK = 32  # two monthly renewals fit Stripe's 35-day meter event window


@dataclass
class StripeTarget:
    """Which Stripe the stack talks to, and how webhooks are signed."""

    api_base: str | None  # None = real Stripe
    api_key: str
    webhook_secret: str | None  # None = register the endpoint to get one
    description: str

    @property
    def is_emulator(self) -> bool:
        return self.api_key == EMULATOR_API_KEY

    @property
    def starts_emulator(self) -> bool:
        """No Stripe named: `local` starts the billing emulator in its own process."""
        return self.api_base is None and self.is_emulator


def check_test_key(key: str) -> None:
    """Only secret or restricted test-mode keys; say what a valid key looks like."""
    if key.startswith(("sk_test_", "rk_test_")) and len(key) > len("sk_test_"):
        return
    if key.startswith(("sk_live_", "rk_live_")):
        problem = "is a live key; meterbridge local never uses live keys"
    elif key.startswith(("pk_test_", "pk_live_")):
        problem = "is a publishable key, which cannot call the API meterbridge uses"
    else:
        problem = "is not a Stripe test-mode secret key"
    shown = key[:8] + "…" if len(key) > 8 else key
    raise CliError(
        f"STRIPE_API_KEY {shown!r} {problem}: use a test-mode secret key (sk_test_…) or"
        " restricted key (rk_test_…) from the Stripe dashboard, or unset it to use the"
        " built-in billing emulator"
    )


def run_local(
    args: argparse.Namespace,
    stop: threading.Event | None = None,
    out: TextIO = sys.stdout,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Start everything, print where it is, wait for Ctrl-C / SIGTERM (or `stop`)."""
    stop = stop or threading.Event()
    overrides = _parameter_overrides(args.param)
    environ = os.environ if environ is None else environ
    target_choice = _choose_stripe(args.stripe_api_base, environ)
    from meterbridge_local.stack import LocalStack

    with (
        _stripe(target_choice) as (target, emulator_url),
        _usage_source(args.usage_source) as (usage_source, usage_server),
    ):
        stack = LocalStack(
            stripe_api_base=target.api_base,
            stripe_api_key=target.api_key,
            webhook_secret=target.webhook_secret,
            usage_source=usage_source,
            port=args.port,
            parameter_overrides=overrides,
        )
        try:
            stack.start()
        except OSError as exc:
            raise CliError(
                f"cannot listen on port {args.port}: {exc.strerror}; choose another with"
                " --port N (0 picks a free one)"
            ) from exc
        try:
            with _stop_on_signals(stop):
                if target.webhook_secret is None:
                    stack.register_webhook_endpoint()
                records_url = usage_server.records_url if usage_server else None
                # Handlers are in place before anything is printed: a script that reads the
                # summary may interrupt at once, and still gets a clean stop.
                print_summary(out, stack, target, emulator_url, records_url)
                if getattr(args, "seed", False):
                    print_seed(out, seed(target, usage_server), target)
                stop.wait()
        finally:
            print("stopping…", file=out, flush=True)
            stack.stop()
    return 0


def _parameter_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise CliError(
                f"--param wants NAME=VALUE, e.g. --param WorkerBatchSize=5; got {pair!r}"
            )
        overrides[name] = value
    return overrides


def _choose_stripe(api_base: str | None, environ: Mapping[str, str]) -> StripeTarget:
    """Which Stripe, from the flags and the environment; refuses before anything starts."""
    key = environ.get("STRIPE_API_KEY", "").strip() or None
    secret = environ.get("STRIPE_WEBHOOK_SECRET", "").strip() or None
    if key == EMULATOR_API_KEY and not api_base:
        # Left over from a previous start's export line: that emulator is gone; start anew.
        key = secret = None
    if key:
        check_test_key(key)
    if api_base:
        return StripeTarget(api_base, key or EMULATOR_API_KEY, secret, api_base)
    if key:
        if not secret:
            raise CliError(
                "real Stripe test mode needs STRIPE_WEBHOOK_SECRET: run "
                "`stripe listen --forward-to http://127.0.0.1:<port>/stripe/webhook` and "
                "export the whsec_… secret it prints (or unset STRIPE_API_KEY to use the "
                "built-in billing emulator)"
            )
        return StripeTarget(None, key, secret, "Stripe test mode (api.stripe.com)")
    return StripeTarget(None, EMULATOR_API_KEY, None, "billing emulator")


@contextmanager
def _stripe(target: StripeTarget) -> Iterator[tuple[StripeTarget, str | None]]:
    """Start the emulator when no other Stripe was named."""
    if not target.starts_emulator:
        yield target, None
        return
    from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

    emulator = StripeEmulator(EmulatorConfig()).start()
    try:
        yield StripeTarget(emulator.url, EMULATOR_API_KEY, None, "billing emulator"), emulator.url
    finally:
        emulator.stop()


@contextmanager
def _usage_source(url: str | None) -> Iterator[tuple[str, "UsageServer | None"]]:
    """The given usage source, or a built-in one the user feeds over HTTP."""
    if url:
        yield url, None
        return
    from meterbridge_local.usage_server import UsageServer

    with UsageServer() as server:
        yield server.url, server


def export_line(stack: "LocalStack", target: StripeTarget) -> str:
    """What points the AWS CLI and the operator commands at this stack."""
    from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT

    urls = stack.urls()
    exports = {**LOCAL_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": urls["aws_endpoint_url"]}
    if target.api_base:
        exports.update(STRIPE_API_BASE=target.api_base, STRIPE_API_KEY=target.api_key)
    # What the operator commands (dlq, status, report) read; names as the functions use them.
    exports.update(
        QUEUE_URL=urls["event_queue_url"],
        DEAD_LETTER_QUEUE_URL=urls["dead_letter_queue_url"],
        LEDGER_TABLE=urls["ledger_table"],
    )
    if stack.usage_source:
        exports["USAGE_SOURCE"] = stack.usage_source
    return "export " + " ".join(f"{key}={value}" for key, value in exports.items())


def print_summary(
    out: TextIO,
    stack: "LocalStack",
    target: StripeTarget,
    emulator_url: str | None,
    records_url: str | None = None,
) -> None:
    urls = stack.urls()
    lines = [
        "meterbridge local is running (Ctrl-C stops it)",
        f"  webhook URL        {urls['webhook_url']}",
        f"  Stripe             {target.description}"
        + (f" at {emulator_url}" if emulator_url else ""),
        f"  AWS endpoint       {urls['aws_endpoint_url']}",
        f"  event queue        {urls['event_queue_url']}",
        f"  dead-letter queue  {urls['dead_letter_queue_url']}",
        f"  ledger table       {urls['ledger_table']}",
        f"  usage source       {stack.usage_source}"
        + (" (built-in; --usage-source URL uses yours)" if records_url else ""),
        "",
        "In another shell, point the AWS CLI and `meterbridge` at it:",
        "  " + export_line(stack, target),
    ]
    if target.api_base is None:
        lines.append(f"  stripe listen --forward-to {urls['webhook_url']}")
    if records_url:
        # An instant inside the first period of a clock started 32 days back (as --seed and
        # the README do): usage outside every service period bills 0.
        at = int(time.time()) - (SEED_CLOCK_DAYS_BACK - 1) * DAY
        lines += [
            "Feed the built-in usage source (account = customer id or tenant metadata value,"
            " meter = meter event name, at = unix seconds inside the service period):",
            f"  curl -X POST {records_url} -d "
            f"""'{{"account": "cus_…", "meter": "{SEED_METER}", "at": {at}, "value": "42"}}'""",
        ]
    print("\n".join(lines), file=out, flush=True)


# --------------------------------------------------------------------------- --seed


@dataclass(frozen=True)
class Seeded:
    meter_id: str
    event_name: str
    price_id: str
    clock_id: str
    clock_start: int
    customer_id: str
    subscription_id: str
    period: tuple[int, int]  # the first service period [start, end)
    usage: Decimal | None  # fed into the built-in usage server (None: your source)
    usage_at: int
    grace_period_seconds: int
    confirm_delay_seconds: int


def seed(target: StripeTarget, usage_server: "UsageServer | None") -> Seeded:
    """Meter, metered price, test clock, customer and subscription through the real SDK;
    usage for the first period into the built-in usage server."""
    import stripe

    from meterbridge.settings import WorkerSettings
    from meterbridge_local.demo import BillingDriver, add_months

    base = target.api_base or "https://api.stripe.com"
    driver = BillingDriver(base, usage_server, api_key=target.api_key)
    # A meter's event name is unique per account: a fresh emulator has none, test mode may.
    event_name = SEED_METER if target.is_emulator else f"{SEED_METER}_{os.urandom(3).hex()}"
    try:
        catalog = driver.create_catalog(event_name)
        clock_start = int(time.time()) - SEED_CLOCK_DAYS_BACK * DAY
        clock_id = driver.create_clock(clock_start, name="meterbridge local --seed")
        subscriber = driver.subscribe(clock_id, "First Customer", "first-customer", catalog)
    except stripe.StripeError as error:
        raise CliError(f"--seed: Stripe refused a step: {error.user_message or error}") from error
    period = (subscriber.anchor, add_months(subscriber.anchor, 1))
    usage_at = period[0] + (period[1] - period[0]) // 2
    usage = None
    if usage_server is not None:
        usage = SEED_USAGE
        usage_server.add(subscriber.customer_id, event_name, at=usage_at, value=usage)
    fields = WorkerSettings.model_fields
    return Seeded(
        meter_id=catalog.meter_id,
        event_name=event_name,
        price_id=catalog.price_id,
        clock_id=clock_id,
        clock_start=clock_start,
        customer_id=subscriber.customer_id,
        subscription_id=subscriber.subscription_id,
        period=period,
        usage=usage,
        usage_at=usage_at,
        grace_period_seconds=3600,
        confirm_delay_seconds=int(
            os.environ.get("CONFIRM_DELAY_SECONDS") or fields["confirm_delay_seconds"].default
        ),
    )


def _utc(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_seed(out: TextIO, seeded: Seeded, target: StripeTarget) -> None:
    start, end = seeded.period
    base = target.api_base or "https://api.stripe.com"
    clock_url = f"{base}/v1/test_helpers/test_clocks/{seeded.clock_id}"
    advance = f'curl -s -u "$STRIPE_API_KEY:" {clock_url}/advance'
    renew_at = end + 60
    finalize_at = end + seeded.grace_period_seconds + 120
    fed = (
        f"{seeded.usage} {seeded.event_name} for {seeded.customer_id} at {_utc(seeded.usage_at)},"
        " inside the first period"
        if seeded.usage is not None
        else f"nothing: feed your usage source {seeded.event_name} for {seeded.customer_id}"
        f" between {_utc(start)} and {_utc(end)}"
    )
    lines = [
        "",
        f"Seeded through the stripe SDK ({target.description}):",
        f"  meter       {seeded.meter_id} (event name {seeded.event_name}, sum)",
        f"  price       {seeded.price_id} (0.5¢ a request, metered, monthly)",
        f"  test clock  {seeded.clock_id}, frozen at {_utc(seeded.clock_start)}"
        f" ({SEED_CLOCK_DAYS_BACK} days back)",
        f"  customer    {seeded.customer_id}, subscription {seeded.subscription_id}",
        f"  period 1    {_utc(start)} → {_utc(end)} (test-clock time)",
        f"  usage fed   {fed}",
        "Two monthly renewals of this clock fit Stripe's 35-day meter event window; a third"
        " period starts in the future, so its usage cannot be reported: start a new clock.",
        "",
        "Bill it, in another shell after the export line above (times are test-clock time):",
        f"  1. Renew: advance the clock to the end of period 1 ({_utc(end)}).",
        f"     {advance} -d frozen_time={renew_at}",
        "     The clock is ready within a second; Stripe creates the renewal draft and sends"
        " invoice.created; the worker reports the usage a second or two later:",
        f"     meterbridge status customer {seeded.customer_id}",
        f"  2. Wait {seeded.confirm_delay_seconds} s (real time, CONFIRM_DELAY_SECONDS): the"
        " worker then reads Stripe's meter event summary and marks the report confirmed;"
        " until then `status` shows it pending. (Real Stripe aggregates within minutes.)",
        f"  3. Finalize: advance past the {seeded.grace_period_seconds // 60}-minute grace"
        " period (clock time, so no real wait):",
        f"     {advance} -d frozen_time={finalize_at}",
        "     invoice.finalized follows; `status` shows the report reconciled with the"
        " invoice line.",
    ]
    print("\n".join(lines), file=out, flush=True)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the wait; outside the main thread (tests) nothing to do."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
