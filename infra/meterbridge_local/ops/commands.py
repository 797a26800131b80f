"""`meterbridge dlq | status | report | verify`: argument parsing and exit codes.

Exit status: 0 done and healthy; 1 done but something needs attention (a replay left
messages behind, an invoice not found, a report failed, late, unconfirmed close to
finalization, mismatched on the finalized invoice or differing, a verify step failed);
2 bad input or unreachable target (OperatorError, printed as one line).

Parsers only need argparse: each `run_*` imports what it uses (boto3, rich, the worker's
code), so `meterbridge --help` and one command's start-up load nothing of the others.
"""

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TextIO

from meterbridge_local.ops.config import (
    DEAD_LETTER_QUEUE_URL,
    LEDGER_TABLE,
    QUEUE_URL,
    AwsTarget,
    OperatorError,
    aws_target,
    dead_letter_queue_of,
    required,
    setting,
)

if TYPE_CHECKING:
    from meterbridge_local.ledger_reader import LedgerReader
    from meterbridge_local.ops.dlq import DeadLetter, DeadLetterQueue

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register_all(subparsers: Any) -> None:
    aws = _aws_options()
    _register_dlq(subparsers, aws)
    _register_status(subparsers, aws)
    _register_report(subparsers, aws)
    _register_verify(subparsers)


def _aws_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where (defaults from the environment)")
    group.add_argument("--endpoint-url", help="AWS endpoint (env AWS_ENDPOINT_URL; local stack)")
    group.add_argument("--region", help="AWS region (env AWS_REGION / AWS_DEFAULT_REGION)")
    group.add_argument("--queue-url", help=f"event queue URL (env {QUEUE_URL})")
    group.add_argument(
        "--dlq-url",
        help=f"dead-letter queue URL (env {DEAD_LETTER_QUEUE_URL}; else the event queue's"
        " RedrivePolicy target)",
    )
    group.add_argument("--ledger-table", help=f"ledger table name (env {LEDGER_TABLE})")
    return parent


# --------------------------------------------------------------------------- dlq


def _register_dlq(subparsers: Any, aws: argparse.ArgumentParser) -> None:
    dlq = subparsers.add_parser("dlq", help="list and replay dead-lettered Stripe events")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[aws],
        help="what is in the dead-letter queue, and why (from the ledger)",
        description="List dead-lettered events without removing them. Looking counts as a"
        " receive: each message's receive count grows by one.",
    )
    listing.add_argument("--max", type=_positive, default=None, help="list at most N messages")
    listing.set_defaults(run=run_dlq_list)
    replay = actions.add_parser(
        "replay",
        parents=[aws],
        help="send dead-lettered events back to the event queue",
        description="Put dead-lettered events back on the event queue, unchanged (same body,"
        " same attributes, same Stripe event id), so the worker processes them again. Without"
        " filters SQS's StartMessageMoveTask is used where available. The source must be the"
        " event queue's own dead-letter queue (its RedrivePolicy), unless --force-source"
        " names it; a queue with a Lambda event source mapping is never drained.",
    )
    replay.add_argument(
        "--event-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="only events of this type (repeatable), e.g. invoice.created",
    )
    replay.add_argument("--invoice", metavar="ID", help="only events about this invoice")
    replay.add_argument("--max", type=_positive, default=None, help="replay at most N messages")
    replay.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed; change nothing"
    )
    replay.add_argument(
        "--force-source",
        metavar="QUEUE_NAME",
        help="replay from a queue that is not the event queue's own dead-letter queue (its"
        " RedrivePolicy names another, or none): repeat that queue's name to confirm. A queue"
        " that feeds a Lambda function is refused even so",
    )
    replay.add_argument(
        "--no-move-task",
        action="store_true",
        help="always receive → send → delete (never SQS's move task)",
    )
    replay.set_defaults(run=run_dlq_replay)


def _dead_letter_queue(
    args: argparse.Namespace, *, replaying: bool = False
) -> tuple["DeadLetterQueue", AwsTarget]:
    from meterbridge_local.ops.dlq import DeadLetterQueue, refuse_unsafe_source

    target = aws_target(args)
    sqs = target.client("sqs")
    queue_url = setting(args, "queue_url", QUEUE_URL, os.environ)
    dlq_url = setting(args, "dlq_url", DEAD_LETTER_QUEUE_URL, os.environ)
    if dlq_url is None:
        dlq_url = dead_letter_queue_of(sqs, required(queue_url, "--queue-url", QUEUE_URL))
    if replaying and queue_url is None:
        raise OperatorError("replay needs the event queue: pass --queue-url or export QUEUE_URL")
    # Looking (list) hides messages for minutes and replay deletes them: never on a queue
    # a Lambda function reads; replay only into the queue whose dead-letter queue this is.
    refuse_unsafe_source(
        sqs,
        target.client("lambda"),
        dlq_url,
        queue_url if replaying else None,
        force_source=getattr(args, "force_source", None),
    )
    queue = DeadLetterQueue(
        sqs,
        dlq_url,
        queue_url,
        move_task_sqs=target.client("sqs", retries=1),  # moto answers 500: do not retry
        wait_seconds=0 if target.is_local else 2,
    )
    return queue, target


def _reader(args: argparse.Namespace, target: AwsTarget, needed: bool) -> "LedgerReader | None":
    from meterbridge_local.ledger_reader import LedgerReader

    table = setting(args, "ledger_table", LEDGER_TABLE, os.environ)
    if table is None:
        if needed:
            required(None, "--ledger-table", LEDGER_TABLE)
        return None
    return LedgerReader(table, target.client("dynamodb"))


def run_dlq_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render

    console = render.console(out or sys.stdout)
    queue, target = _dead_letter_queue(args)
    reader = _reader(args, target, needed=False)
    with render.progress(console, "reading the dead-letter queue", queue.depth()) as bar:
        letters = queue.peek(args.max, progress=lambda n: bar.advance(bar.task_ids[0], n))
    reasons = {letter.message_id: why_dead(letter, reader) for letter in letters}
    render.dead_letters(console, letters, reasons)
    if letters:
        console.print(
            "Fix the cause, then: meterbridge dlq replay [--event-type T] [--invoice ID]"
            " [--dry-run]"
        )
    return 0


def why_dead(letter: "DeadLetter", reader: "LedgerReader | None") -> str:
    """The first failure reason the ledger recorded for this message's invoice."""
    from meterbridge.domain.records import InvoiceStatus, ReportStatus
    from meterbridge_local.ledger_reader import LedgerUnavailable

    if letter.problem:
        return letter.problem
    if reader is None:
        return "(set LEDGER_TABLE or --ledger-table to see why)"
    if letter.invoice_id is None:
        return f"no ledger record for {letter.event_type} events; see the worker's logs"
    try:
        view = reader.invoice(letter.invoice_id)
    except LedgerUnavailable as error:
        return f"(ledger unreadable: {error})"
    record = view.record
    failed = [r for r in view.reports if r.status is ReportStatus.FAILED and r.last_error]
    if record is not None and record.status is InvoiceStatus.FAILED and record.reason:
        return record.reason
    if failed:
        return str(failed[0].last_error)
    if record is not None and record.status is not None:
        return f"ledger: invoice {record.status.value} since (replaying is harmless)"
    return (
        "no ledger record: it failed before reporting began (Stripe or the ledger"
        f" unreachable, settings); see the worker's logs for message {letter.message_id}"
    )


def run_dlq_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render
    from meterbridge_local.ops.dlq import Selection

    console = render.console(out or sys.stdout)
    queue, _ = _dead_letter_queue(args, replaying=True)
    selection = Selection(frozenset(args.event_type), args.invoice)
    total = queue.depth()
    if args.max is not None:
        total = min(total, args.max) if selection.everything else total
    with render.progress(console, "replaying", total) as bar:
        result = queue.replay(
            selection,
            max_messages=args.max,
            dry_run=args.dry_run,
            use_move_task=not args.no_move_task,
            progress=lambda n: bar.advance(bar.task_ids[0], n),
        )
    render.replay(console, result)
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- status


def _register_status(subparsers: Any, aws: argparse.ArgumentParser) -> None:
    status = subparsers.add_parser("status", help="what the ledger recorded")
    kinds = status.add_subparsers(dest="status_command", required=True, metavar="WHAT")
    invoice = kinds.add_parser(
        "invoice",
        parents=[aws],
        help="every report of one invoice (status, value, deadline, confirmation, reconciliation)",
    )
    invoice.add_argument("invoice_id", metavar="ID")
    invoice.set_defaults(run=run_status_invoice)
    customer = kinds.add_parser(
        "customer", parents=[aws], help="every invoice and report of one customer"
    )
    customer.add_argument("customer_id", metavar="ID")
    customer.add_argument(
        "--since", metavar="DATE", help="only records created since (YYYY-MM-DD, UTC)"
    )
    customer.set_defaults(run=run_status_customer)


def run_status_invoice(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render
    from meterbridge_local.ops.status import invoice_status

    console = render.console(out or sys.stdout)
    reader = _reader(args, aws_target(args), needed=True)
    assert reader is not None
    summary = _ledger(lambda: invoice_status(reader, args.invoice_id))
    if summary is None:
        console.print(
            f"No ledger record for invoice {args.invoice_id}: the worker has not processed an"
            " invoice.created for it. Check `meterbridge dlq list`, the queue's depth, and"
            " that the Stripe endpoint sends invoice.created."
        )
        return 1
    render.invoice_summaries(console, [summary])
    return 1 if summary.needs_attention else 0


def run_status_customer(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render
    from meterbridge_local.ops.status import customer_status

    console = render.console(out or sys.stdout)
    reader = _reader(args, aws_target(args), needed=True)
    assert reader is not None
    summaries = _ledger(lambda: customer_status(reader, args.customer_id, args.since))
    if not summaries:
        since = f" since {args.since}" if args.since else ""
        console.print(f"No ledger records for customer {args.customer_id}{since}.")
        return 1
    render.invoice_summaries(console, summaries)
    return 1 if any(summary.needs_attention for summary in summaries) else 0


def _ledger(read: Any) -> Any:
    from meterbridge_local.ledger_reader import LedgerUnavailable

    try:
        return read()
    except LedgerUnavailable as error:
        raise OperatorError(str(error)) from error


# --------------------------------------------------------------------------- report


def _register_report(subparsers: Any, aws: argparse.ArgumentParser) -> None:
    report = subparsers.add_parser(
        "report",
        parents=[aws],
        help="re-run reporting for one invoice (backfill after a usage-source fix)",
        description="Runs the worker's reporting for one draft invoice with the worker's"
        " settings from the environment (LEDGER_TABLE, USAGE_SOURCE, STRIPE_API_KEY or"
        " STRIPE_SECRET_ARN, STRIPE_API_BASE, TENANT_METADATA_KEY, …): reports not yet sent"
        " are sent; sent ones are compared with the usage source now. --force sends a"
        " difference as a new revision (never the full amount again).",
    )
    report.add_argument("--invoice", required=True, metavar="ID")
    report.add_argument(
        "--force",
        action="store_true",
        help="send the difference between the usage source and what Stripe counts",
    )
    report.add_argument("--usage-source", help="USAGE_SOURCE for this run (else the env)")
    report.set_defaults(run=run_report)


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render
    from meterbridge_local.ops.report import InvoiceReRun, reporting_tools

    console = render.console(out or sys.stdout)
    environ = dict(os.environ)
    for attribute, variable in (("ledger_table", LEDGER_TABLE), ("usage_source", "USAGE_SOURCE")):
        if getattr(args, attribute, None):
            environ[variable] = getattr(args, attribute)
    if args.endpoint_url:
        environ["AWS_ENDPOINT_URL"] = args.endpoint_url
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
    with _worker_output_to_stderr():
        run = InvoiceReRun(reporting_tools(environ)).run(args.invoice, force=args.force)
    render.report_run(console, run)
    return 0 if run.ok else 1


# --------------------------------------------------------------------------- verify


def _register_verify(subparsers: Any) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="run the test-clock scenario against Stripe and check usage lands on the invoice",
        description="Creates a test clock 32 days in the past, a customer, a metered price"
        " with a meter and a subscription; advances to the renewal; reports usage the way the"
        " worker does; checks the meter event summary before finalization; advances past the"
        " grace period; checks the finalized invoice. Uses STRIPE_API_KEY (test mode only)"
        " and STRIPE_API_BASE (e.g. the emulator printed by `meterbridge local`).",
    )
    verify.add_argument("--usage", default="42", help="usage value to report (default 42)")
    verify.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for clocks and for the summary (default 120)",
    )
    verify.add_argument(
        "--keep", action="store_true", help="keep the test clock and meter for inspection"
    )
    verify.add_argument("--stripe-api-base", help="Stripe-compatible server (env STRIPE_API_BASE)")
    verify.set_defaults(run=run_verify)


@contextmanager
def _worker_output_to_stderr() -> Iterator[None]:
    """`report` runs the worker's code in this process: its Powertools logger writes JSON
    lines, and its metrics EMF lines, to stdout, which is for the person here. Both go to
    stderr while it runs (`2>report.log` keeps them)."""
    from meterbridge.observability import logger

    handler = logger.registered_handler
    stream = handler.stream if isinstance(handler, logging.StreamHandler) else None
    if stream is not None:
        handler.setStream(sys.stderr)  # type: ignore[attr-defined]
    try:
        with redirect_stdout(sys.stderr):  # Powertools prints EMF with print()
            yield
    finally:
        if stream is not None:
            handler.setStream(stream)  # type: ignore[attr-defined]


def run_verify(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from meterbridge_local.ops import render
    from meterbridge_local.ops.verify import STEP_NAMES, Verifier

    console = render.console(out or sys.stdout)
    key = os.environ.get("STRIPE_API_KEY", "").strip()
    if not key:
        raise OperatorError("set STRIPE_API_KEY (a test-mode key, sk_test_…)")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise OperatorError("verify creates test clocks: STRIPE_API_KEY must be a test-mode key")
    try:
        usage = Decimal(args.usage)
    except InvalidOperation:
        raise OperatorError(f"--usage {args.usage!r} is not a number") from None
    if args.timeout <= 0:
        raise OperatorError("--timeout must be positive")
    base = args.stripe_api_base or os.environ.get("STRIPE_API_BASE") or None
    console.print(f"verifying against {base or 'Stripe test mode (api.stripe.com)'}")
    with render.progress(console, "verify", len(STEP_NAMES)) as bar:

        def on_step(step: Any) -> None:
            render.verify_step(bar.console, step)
            bar.advance(bar.task_ids[0])

        result = Verifier(
            key, base, usage=usage, timeout_seconds=args.timeout, keep=args.keep, on_step=on_step
        ).run()
    failed = [step.name for step in result.steps if step.passed is False]
    if failed:
        console.print(f"[red]verify failed[/red]: {'; '.join(failed)}")
        return 1
    console.print("[green]verify passed[/green]: the usage reached the finalized invoice")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
