"""The `meterbridge` command.

Start-up stays light: this module imports the standard library only, and each subcommand
imports its own machinery when it runs. `meterbridge --help`, `status`, `dlq` and
`report` never load moto, cfn-lint or the Stripe emulator (tests/integration/test_cli_imports.py
checks it). Each subcommand is one `register_*` function that adds its parser and sets
`run`; adding one means writing that function and listing it in SUBCOMMANDS.
"""

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import urlsplit

from meterbridge_local.errors import CliError

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line: what was wrong, and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- local


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number: use 1-65535, or 0 for any free port"
        ) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{port} is not a port number: use 1-65535, or 0 for any free port"
        )
    return port


def usage_source_reference(text: str) -> str:
    """What the worker's USAGE_SOURCE accepts, checked before anything starts."""
    scheme, _, rest = text.partition("://")
    if scheme in {"http", "https"} and urlsplit(text).hostname:
        return text
    if scheme == "dynamodb" and rest and "/" not in rest:
        return text
    if scheme == "python" and rest.count(":") == 1 and all(rest.split(":")):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a usage source: give an http(s):// URL (POST"
        ' {"customer","tenant","meter","start","end"} → {"value": "…"}), dynamodb://TABLE or'
        " python://module:function, or leave --usage-source out for the built-in usage server"
    )


def register_local(subparsers: Any) -> None:
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
    parser.add_argument(
        "--port", type=port_number, default=8080, help="webhook port (0 = any free)"
    )
    parser.add_argument("--stripe-api-base", help="a Stripe-compatible server to use")
    parser.add_argument(
        "--usage-source",
        type=usage_source_reference,
        help="USAGE_SOURCE for the worker (http(s)://…, dynamodb://TABLE, python://module:fn);"
        " default: a built-in usage server fed with POST /usage/records",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template parameter (repeatable), e.g. WorkerBatchSize=5",
    )
    parser.add_argument(
        "--seed",
        action="store_true",
        help="create a meter, a metered monthly price, a test clock 32 days back and a"
        " subscribed customer, feed usage into its first period, and print each next step",
    )
    parser.set_defaults(run=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    from meterbridge_local.local_command import run_local

    return run_local(args)


# --------------------------------------------------------------------------- demo


def register_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="two months of billing end to end on this machine, checked invoice by invoice",
        description=(
            "Start the Stripe billing emulator, the local stack with the real handlers and a "
            "usage source; subscribe a few customers on a test clock, feed known usage, "
            "advance through two renewals and check every finalized invoice. Exits 0 only "
            "if each carries exactly its usage. No network, no accounts."
        ),
    )
    parser.add_argument(
        "--naive",
        action="store_true",
        help="run the naive integration instead (random identifiers, no waiting): "
        "shows the lost and double-counted usage; exits 1",
    )
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="with continuous reporting (hourly sweeps): Stripe's invoice preview grows during "
        "the month, and the renewal sends only the rest (docs/continuous.md)",
    )
    parser.add_argument(
        "--months",
        type=int,
        default=2,
        choices=(1, 2),
        help="renewals to run (default 2, the most that fit: the test clock starts 32 days"
        " back so that every meter event timestamp stays inside Stripe's 35-day window)",
    )
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from meterbridge_local.demo import MeterbridgeFlow, run_demo

    if args.naive:
        from meterbridge_local.naive import NaiveFlow

        return run_demo(flow=NaiveFlow, renewals=args.months)
    if args.continuous:
        from meterbridge_local.demo_continuous import ContinuousFlow

        return run_demo(flow=ContinuousFlow, renewals=args.months)
    return run_demo(flow=MeterbridgeFlow, renewals=args.months)


# --------------------------------------------------------------------------- operations


def register_operations(subparsers: Any) -> None:
    """dlq, status, report, verify: operating a running meterbridge (meterbridge_local.ops)."""
    from meterbridge_local.ops.commands import register_all

    register_all(subparsers)


# --------------------------------------------------------------------------- entry point

SUBCOMMANDS: list[Callable[[Any], None]] = [register_local, register_operations, register_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="meterbridge",
        description="Usage on every Stripe invoice, exactly once: local stack and operations.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Diagnostics go to stderr; stdout is for what a person reads (tables, summaries).
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("meterbridge_local").setLevel(logging.INFO)
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"meterbridge {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meterbridge {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
