"""The `meterbridge` command.

Each subcommand is one `register_*` function that adds its parser and sets `run`; adding
a subcommand means writing that function and listing it in SUBCOMMANDS.
"""

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT
from meterbridge_local.demo import register_demo
from meterbridge_local.stack import LocalStack

EMULATOR_API_KEY = "sk_test_meterbridge_local"  # the emulator accepts any sk_test_ key


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


# --------------------------------------------------------------------------- local


@dataclass
class StripeTarget:
    """Which Stripe the stack talks to, and how webhooks are signed."""

    api_base: str | None  # None = real Stripe
    api_key: str
    webhook_secret: str | None  # None = register the endpoint to get one
    description: str


def register_local(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "local",
        help="run the whole stack on this machine (moto, webhook, worker, Stripe emulator)",
        description=(
            "Run meterbridge locally: moto for AWS, the webhook behind an HTTP front, the "
            "worker behind an SQS poller. Stripe is the billing emulator unless "
            "--stripe-api-base is given, or STRIPE_API_KEY=sk_test_... is set (real Stripe "
            "test mode; forward webhooks with `stripe listen --forward-to <webhook URL>` "
            "and export its signing secret as STRIPE_WEBHOOK_SECRET)."
        ),
    )
    parser.add_argument("--port", type=int, default=8080, help="webhook port (0 = any free)")
    parser.add_argument("--stripe-api-base", help="a Stripe-compatible server to use")
    parser.add_argument(
        "--usage-source",
        help="USAGE_SOURCE for the worker (http(s)://…); default: a built-in usage server "
        "fed with POST /usage/records",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template parameter (repeatable), e.g. WorkerBatchSize=5",
    )
    parser.set_defaults(run=run_local)


def run_local(
    args: argparse.Namespace,
    stop: threading.Event | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Start everything, print where it is, wait for Ctrl-C / SIGTERM (or `stop`)."""
    stop = stop or threading.Event()
    overrides = _parameter_overrides(args.param)
    environ = os.environ
    with (
        _stripe(args.stripe_api_base, environ) as (target, emulator_url),
        _usage_source(args.usage_source) as (usage_source, records_url),
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
            raise CliError(f"cannot listen on port {args.port}: {exc.strerror}") from exc
        try:
            if target.webhook_secret is None:
                stack.register_webhook_endpoint()
            _print_summary(out, stack, target, emulator_url, records_url)
            with _stop_on_signals(stop):
                stop.wait()
        finally:
            print("stopping…", file=out, flush=True)
            stack.stop()
    return 0


def _parameter_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator:
            raise CliError(f"--param wants NAME=VALUE, got {pair!r}")
        overrides[name] = value
    return overrides


@contextmanager
def _stripe(
    api_base: str | None, environ: Mapping[str, str]
) -> Iterator[tuple[StripeTarget, str | None]]:
    """Pick the Stripe to talk to; start the emulator when none is named."""
    key = environ.get("STRIPE_API_KEY")
    secret = environ.get("STRIPE_WEBHOOK_SECRET") or None
    if key and not key.startswith(("sk_test_", "rk_test_")):
        raise CliError("STRIPE_API_KEY must be a test-mode key (sk_test_…); never a live key")
    if api_base:
        yield StripeTarget(api_base, key or EMULATOR_API_KEY, secret, api_base), None
        return
    if key:
        if not secret:
            raise CliError(
                "real Stripe test mode needs STRIPE_WEBHOOK_SECRET: run "
                "`stripe listen --forward-to http://127.0.0.1:<port>/stripe/webhook` and "
                "export the whsec_… secret it prints"
            )
        yield StripeTarget(None, key, secret, "Stripe test mode (api.stripe.com)"), None
        return
    from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

    emulator = StripeEmulator(EmulatorConfig()).start()
    try:
        target = StripeTarget(emulator.url, EMULATOR_API_KEY, None, "billing emulator")
        yield target, emulator.url
    finally:
        emulator.stop()


@contextmanager
def _usage_source(url: str | None) -> Iterator[tuple[str, str | None]]:
    """The given usage source, or a built-in one the user feeds over HTTP."""
    if url:
        yield url, None
        return
    from meterbridge_local.usage_server import UsageServer

    with UsageServer() as server:
        yield server.url, server.records_url


def _print_summary(
    out: TextIO,
    stack: LocalStack,
    target: StripeTarget,
    emulator_url: str | None,
    records_url: str | None = None,
) -> None:
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
        "  export " + " ".join(f"{key}={value}" for key, value in exports.items()),
    ]
    if target.api_base is None:
        lines.append(f"  stripe listen --forward-to {urls['webhook_url']}")
    if records_url:
        lines += [
            "Feed the built-in usage source (account = customer id or tenant metadata value,"
            " meter = meter event name, at = unix seconds):",
            f"  curl -X POST {records_url} -d "
            """'{"account": "cus_…", "meter": "api_requests", "at": 1767225600, "value": "42"}'""",
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

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- operations


def register_operations(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """dlq, status, report, verify: operating a running meterbridge (meterbridge_local.ops)."""
    from meterbridge_local.ops.commands import register_all

    register_all(subparsers)


# --------------------------------------------------------------------------- entry point

SUBCOMMANDS: list[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [
    register_local,
    register_operations,
    register_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterbridge",
        description="Usage on every Stripe invoice, exactly once: local stack and operations.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("meterbridge_local").setLevel(logging.INFO)
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"meterbridge {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
