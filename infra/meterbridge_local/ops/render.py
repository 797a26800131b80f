"""Rich tables and progress bars for the operator commands; nothing here decides anything."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # each command imports only its own job's module (start-up time)
    from meterbridge_local.ops.dlq import DeadLetter, ReplayResult
    from meterbridge_local.ops.report import ReportRun
    from meterbridge_local.ops.status import InvoiceSummary, ReportRow
    from meterbridge_local.ops.verify import Step

WIDE = 400  # when not a terminal (CI logs, pipes): never fold tables into unreadable columns
# Below this width a report's ten columns fold into unreadable slivers: each report is
# printed as a few labelled lines instead.
REPORTS_TABLE_MIN_WIDTH = 160
DEADLINE = "deadline (invoice clock)"
SENT_AT = "sent at (real time)"
CLOCKS_NOTE = (
    "Times are UTC. The deadline is on the invoice's clock: its test clock's time when the"
    " customer is on a test clock, else real time; sent at is real time."
)


def console(out: TextIO) -> Console:
    """A terminal's own width; elsewhere COLUMNS if set, else wide (CI logs, pipes)."""
    if out.isatty():
        width = None
    else:
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else WIDE
    return Console(file=out, width=width, highlight=False)


@contextmanager
def progress(out: Console, description: str, total: int | None) -> Iterator[Progress]:
    """A bar on a terminal; nothing in logs (rich skips live output there)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as bar:
        bar.add_task(description, total=total)
        yield bar


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def dead_letters(out: Console, letters: list[DeadLetter], reasons: dict[str, str]) -> None:
    if not letters:
        out.print("The dead-letter queue is empty.")
        return
    now = time.time()
    table = Table(title=f"{len(letters)} message(s) in the dead-letter queue")
    for column in ("event type", "Stripe event id", "invoice", "receives", "age", "why"):
        table.add_column(column, overflow="fold")
    for letter in sorted(letters, key=lambda x: x.sent_at_ms or 0):
        table.add_row(
            letter.event_type or "?",
            letter.event_id or "?",
            letter.invoice_id or "-",
            str(letter.receive_count),
            _age(letter.age_seconds(now)),
            reasons.get(letter.message_id, ""),
        )
    out.print(table)


def replay(out: Console, result: ReplayResult) -> None:
    if result.note:
        out.print(f"note: {result.note}")
    if result.method == "move-task":
        out.print(
            f"Moved {result.moved} message(s) back to the event queue with SQS's"
            f" StartMessageMoveTask (task {result.task_handle})."
        )
        return
    verb = "Would replay" if result.dry_run else "Replayed"
    if result.replayed:
        table = Table(title=f"{verb} {len(result.replayed)} message(s)")
        for column in ("event type", "Stripe event id", "invoice"):
            table.add_column(column, overflow="fold")
        for letter in result.replayed:
            table.add_row(
                letter.event_type or "?", letter.event_id or "?", letter.invoice_id or "-"
            )
        out.print(table)
    summary = f"{verb} {len(result.replayed)} message(s) (receive → send → delete)"
    if result.dry_run:
        summary += "; dry run: nothing was sent or deleted"
    if result.not_selected:
        summary += f"; {result.not_selected} not matching the filters left in place"
    if result.beyond_max:
        summary += f"; {result.beyond_max} more matching left for later (--max)"
    out.print(summary + ".")
    for letter, reason in result.send_failures:
        out.print(f"[red]not replayed[/red] {letter.event_id} ({letter.message_id}): {reason}")
    for letter, reason in result.left_in_both:
        out.print(
            f"[yellow]sent but not deleted[/yellow] {letter.event_id} ({letter.message_id}):"
            f" {reason}. It is in both queues; replaying it again is harmless (the worker"
            " dedupes on the event id and the ledger)."
        )


def invoice_summaries(out: Console, summaries: list[InvoiceSummary]) -> None:
    for summary in summaries:
        header = f"invoice {summary.invoice_id}: {summary.status}"
        if not summary.invoice_id:
            header = summary.status
        if summary.reason:
            header += f" — {summary.reason}"
        for part in (summary.guard, summary.reconciliation):
            if part:
                header += f"; {part}"
        out.print(header)
        if not summary.reports:
            out.print("  (no reports)")
        elif out.width >= REPORTS_TABLE_MIN_WIDTH:
            out.print(_reports_table(summary))
        else:
            for row in summary.reports:
                _report_lines(out, row)
        for reason in summary.attention:
            out.print(f"  [red]needs attention:[/red] {reason}")
    if any(summary.reports for summary in summaries):
        out.print(f"[dim]{CLOCKS_NOTE}[/dim]")


def _report_lines(out: Console, row: ReportRow) -> None:
    """One report as labelled lines: fits 80 columns, every verdict kept. The identifier
    (up to 100 characters, Stripe's limit) is the one line that may be longer: it is what
    operators copy, so it is printed whole on a line of its own, never folded."""
    out.print(f"[bold]{row.identifier}[/bold]", soft_wrap=True)
    status = _styled(row.status, {"sent": "green", "late": "yellow", "failed": "red"})
    lines = [
        f"status {status} · value {row.value} · tries {row.attempts}",
        f"service period {row.period}",
        f"{DEADLINE} {row.deadline}",
        f"{SENT_AT} {row.sent_at}",
        "confirmation "
        + _styled(row.confirmation, {"confirmed": "green", "missing": "red"})
        + " · reconciliation "
        + _styled(row.reconciliation, {"reconciled": "green", "mismatch": "red"}),
    ]
    if row.last_error:
        lines.append(f"last error {row.last_error}")
    for line in lines:
        out.print(f"    {line}", overflow="fold")


def _reports_table(summary: InvoiceSummary) -> Table:
    table = Table()
    for column in (
        "identifier",
        "status",
        "value",
        "service period",
        DEADLINE,
        SENT_AT,
        "tries",
        "confirmation",
        "reconciliation",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    # Identifiers are what operators copy (into `report`, Stripe's dashboard): never folded.
    table.columns[0].min_width = max(len(row.identifier) for row in summary.reports)
    for row in summary.reports:
        table.add_row(
            row.identifier,
            _styled(row.status, {"sent": "green", "late": "yellow", "failed": "red"}),
            row.value,
            row.period,
            row.deadline,
            row.sent_at,
            str(row.attempts),
            _styled(row.confirmation, {"confirmed": "green", "missing": "red"}),
            _styled(row.reconciliation, {"reconciled": "green", "mismatch": "red"}),
            row.last_error,
        )
    return table


def _styled(text: str, styles: dict[str, str]) -> str:
    """Colour a cell by its first word (rich markup is dropped when not a terminal)."""
    style = styles.get(text.split(" ", maxsplit=1)[0].rstrip(",:"))
    return f"[{style}]{text}[/{style}]" if style else text


def report_run(out: Console, run: ReportRun) -> None:
    if run.outcome is not None:
        statuses = ", ".join(f"{k}: {v}" for k, v in run.outcome.reports.items())
        detail = run.outcome.reason or statuses or "nothing to report"
        out.print(f"reporting {run.invoice_id}: {run.outcome.result} ({detail})")
    if run.error:
        out.print(f"[red]reporting {run.invoice_id} failed:[/red] {run.error}")
    if run.confirmation:
        out.print(run.confirmation)
    if not run.corrections:
        return
    table = Table(title="usage source now vs what Stripe counts")
    for column in ("meter", "period", "counted", "usage now", "result", "note"):
        table.add_column(column, overflow="fold")
    for c in run.corrections:
        result = c.result
        if c.result in {"sent", "late", "differs"} and c.delta is not None:
            result += f" {'=' if c.full_value else 'Δ'} {c.delta} as {c.identifier}"
        table.add_row(
            c.meter,
            f"{time.strftime('%Y-%m-%d', time.gmtime(c.period_start))} →"
            f" {time.strftime('%Y-%m-%d', time.gmtime(c.period_end))}",
            "-" if c.counted is None else str(c.counted),
            "-" if c.correct is None else str(c.correct),
            result,
            c.note or "",
        )
    out.print(table)


def verify_step(out: Console, step: Step) -> None:
    mark = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[dim]SKIP[/dim]"}
    out.print(f"{mark[step.passed]} {step.name}: {step.detail}")
