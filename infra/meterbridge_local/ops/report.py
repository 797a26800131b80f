"""Re-run reporting for one invoice, and correct a report that was sent with a wrong value.

Everything runs through the worker's own pipeline, built by the worker's composition root
from the same settings: plain re-runs are `InvoiceReporting.report_invoice` (what is
already sent stays sent, what failed or never ran is reported now), with the invoice guard
when QUEUE_URL is set, so re-sent reports get confirmation checks like any other. A correction
(`--force`) cannot re-send the same identifier — Stripe would call it a duplicate, or,
after 24 h, count it twice — so it sends the *difference* between the usage source's
value now and what the ledger says Stripe already counts, as a new report with the next
revision identifier (`report_identifier(..., revision=n)`), claimed and sent by the
worker's `ReportSender`, so a retried correction is never sent twice. Deltas only add up
on `sum` meters without pre-aggregation windows; on `last` meters and pre-aggregated ones
(event_time_window) the newest event replaces the older ones, so the correction carries
the full corrected value instead (docs/stripe.md#S-AGG-2, #S-WINDOW-1). `count` meters are refused.
"""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3

from meterbridge.adapters.stripe_calls import UnknownStripeObject
from meterbridge.domain.continuous import true_up_value
from meterbridge.domain.guard import sent_usage
from meterbridge.domain.invoices import Invoice
from meterbridge.domain.records import InvoiceChanges, ReportRecord
from meterbridge.domain.reports import PlannedReport, meter_event_timestamp, refusal
from meterbridge.errors import PermanentError, SettingsError, TransientError
from meterbridge.worker.composition import Pipeline, build_pipeline, connect, worker_settings
from meterbridge.worker.invoices import parse_invoice
from meterbridge.worker.reporting import EventOutcome
from meterbridge.worker.sending import SendResult
from meterbridge_local.ledger_reader import LedgerReader
from meterbridge_local.ops.config import OperatorError


@dataclass
class Correction:
    """One report (customer, meter, service period) compared with the usage source now."""

    meter: str  # the meter's event name
    period_start: int
    period_end: int
    counted: Decimal | None  # what the ledger says Stripe counts (all delivered revisions)
    correct: Decimal | None  # the usage source's value now
    result: str  # unchanged | differs | sent | late | refused | failed | not_reported
    identifier: str | None = None  # the revision sent (or that would be sent)
    delta: Decimal | None = None  # what that revision sends: a difference, or the full value
    full_value: bool = False  # the revision replaces (last / pre-aggregated meters)
    note: str | None = None


@dataclass
class ReportRun:
    invoice_id: str
    outcome: EventOutcome | None = None
    error: str | None = None  # the worker's use case failed (ledger has details)
    corrections: list[Correction] = field(default_factory=list)
    confirmation: str | None = None  # what the invoice guard does after this run

    @property
    def ok(self) -> bool:
        return self.error is None and all(
            c.result in {"unchanged", "sent", "late"} for c in self.corrections
        )


@dataclass
class ReportingTools:
    """The deployed worker's pipeline, plus the operator's ledger reader."""

    pipeline: Pipeline
    reader: LedgerReader
    guard_note: str | None = None  # why this run schedules no confirmation checks


def reporting_tools(environ: Mapping[str, str] | None = None) -> ReportingTools:
    """Same settings as the worker (LEDGER_TABLE, USAGE_SOURCE, STRIPE_API_KEY or
    STRIPE_SECRET_ARN, TENANT_METADATA_KEY, INVOICE_GUARD, QUEUE_URL, …), same wiring."""
    environ = dict(os.environ if environ is None else environ)
    note = None
    try:
        settings = worker_settings(environ)
        if settings.invoice_guard != "off" and not settings.queue_url:
            # The worker would log a warning and run without checks; say it plainly instead.
            note = (
                f"INVOICE_GUARD={settings.invoice_guard} needs QUEUE_URL (the event queue):"
                " no confirmation checks scheduled for this run"
            )
            settings = settings.model_copy(update={"invoice_guard": "off"})
        dynamodb = boto3.client("dynamodb")
        reader = LedgerReader(settings.ledger_table, dynamodb)
        dependencies = dataclasses.replace(
            connect(settings, dynamodb=dynamodb), ledger=reader.ledger
        )
        pipeline = build_pipeline(settings, dependencies)
    except (SettingsError, TransientError, PermanentError) as error:
        raise OperatorError(f"worker settings: {error}") from error
    return ReportingTools(pipeline, reader, note)


class InvoiceReRun:
    def __init__(self, tools: ReportingTools):
        self._tools = tools
        self._pipeline = tools.pipeline

    def run(self, invoice_id: str, *, force: bool = False) -> ReportRun:
        document = self._invoice(invoice_id)
        invoice = parse_invoice(document)
        if invoice.status != "draft":
            raise OperatorError(
                f"invoice {invoice_id} is {invoice.status!r}, not a draft: Stripe no longer adds"
                " usage to it. Correct it with an invoice item or credit note instead."
            )
        now = self._pipeline.now()
        run = ReportRun(invoice_id, confirmation=self._tools.guard_note)
        guarded = self._rearm_confirmation(invoice, now)
        try:
            run.outcome = self._pipeline.reporting.report_invoice(document, now, careful=True)
        except (TransientError, PermanentError) as error:
            run.error = f"{type(error).__name__}: {error}"
        if run.outcome is not None and run.outcome.result == "skipped":
            return run
        try:
            plan = self._pipeline.planner.plan(invoice)
            tenant = self._pipeline.usage.tenant(invoice.customer_id) if plan.reports else None
        except (TransientError, PermanentError) as error:
            run.error = run.error or f"{type(error).__name__}: {error}"
            return run
        for report in plan.reports:
            run.corrections.append(self._compare(invoice, report, tenant, force=force))
        for line in plan.unreported:
            refused = refusal(line.meter)
            if refused:
                run.corrections.append(
                    Correction(
                        line.meter.event_name,
                        line.period.start,
                        line.period.end,
                        None,
                        None,
                        "refused",
                        note=refused,
                    )
                )
        if guarded:
            run.confirmation = self._confirmation_scheduled(invoice, now)
        return run

    def _rearm_confirmation(self, invoice: Invoice, now: int) -> bool:
        """Let `report_invoice` queue a fresh chain of confirmation checks.

        The guard queues one chain per invoice (`confirmation_scheduled_at`); the first
        run's chain may have ended (all confirmed, or given up) before this re-run sends
        anything, so a re-run always starts its own. A chain still running alongside only
        repeats reads: checks are idempotent and a released hold is never released again.
        """
        if not self._pipeline.guard_policy.on:
            return False
        self._pipeline.ledger.update_invoice(
            invoice.id, invoice.customer_id, InvoiceChanges(clear_confirmation_schedule=True), now
        )
        return True

    def _confirmation_scheduled(self, invoice: Invoice, now: int) -> str:
        # After a failure report_invoice queued it already; after a skip nothing is to confirm.
        self._pipeline.confirmation.start(invoice, now)
        return (
            f"confirmation checks queued (INVOICE_GUARD={self._pipeline.guard_policy.mode});"
            f" follow them with `meterbridge status invoice {invoice.id}`"
        )

    # --- one report ----------------------------------------------------------------------

    def _compare(
        self, invoice: Invoice, plan: PlannedReport, tenant: str | None, *, force: bool
    ) -> Correction:
        correction = Correction(
            plan.meter.event_name, plan.period.start, plan.period.end, None, None, ""
        )
        revisions = self._tools.reader.revisions(plan.customer_id, plan.meter.id, plan.period)
        first = revisions.items[0] if revisions.items else None
        if first is None or (not first.status.done and not first.closed):
            correction.result = "not_reported"
            correction.note = (first.last_error if first else None) or "no report in the ledger"
            return correction
        # A revision Stripe rejected asynchronously was never counted: `counted` leaves it
        # out, so the correction re-sends its value under the next revision.
        # With continuous reporting, the sweeps' windows in the period count too
        # (docs/continuous.md): the correction is a true-up over all of them.
        swept = self._swept(plan) if self._pipeline.continuous_policy.trues_up else []
        correction.counted = revisions.counted(plan.meter, swept)
        try:
            correction.correct = self._pipeline.usage.read(plan, tenant)
        except (TransientError, PermanentError) as error:
            correction.result, correction.note = "failed", f"usage source: {error}"
            return correction
        unfinished = revisions.unfinished
        revision = unfinished.revision if unfinished is not None else revisions.next_revision
        replaces = plan.meter.formula != "sum" or plan.meter.event_time_window is not None
        correction.full_value = replaces
        difference = correction.correct - correction.counted
        correction.delta = correction.correct if replaces else difference
        if swept:
            delivered = [sent_usage(r) for r in [*revisions.items, *swept] if r.delivered]
            at = meter_event_timestamp(plan.period, self._pipeline.now(), plan.test_clock)
            correction.delta = true_up_value(plan.meter, correction.correct, delivered, at)
        correction.identifier = plan.revised(revision).identifier
        if difference == 0 and unfinished is None:
            correction.result, correction.identifier = "unchanged", None
            return correction
        unknown = revisions.outcome_unknown
        if not force:
            correction.result = "differs"
            what = "the corrected value" if replaces else "the difference"
            correction.note = f"run again with --force to send {what}"
            if unknown is not None:
                correction.note = (
                    f"{unknown.identifier} may or may not be counted by Stripe (its send"
                    " outcome is unknown and Stripe no longer remembers the identifier); it"
                    " is counted as missing here. Check the customer's meter event summary"
                    f" in Stripe first: --force sends {what} under a new revision"
                )
            return correction
        return self._send_correction(invoice, plan.revised(revision), tenant, correction)

    def _swept(self, plan: PlannedReport) -> list[ReportRecord]:
        """The sweeps' delivered windows of the customer's meter inside the period."""
        period = plan.period
        return [
            r
            for r in self._pipeline.ledger.customer_reports(plan.customer_id, since=period.start)
            if r.sweep
            and r.delivered
            and r.meter_id == plan.meter.id
            and r.timestamp is not None
            and period.start <= r.timestamp < period.end
        ]

    def _send_correction(
        self, invoice: Invoice, plan: PlannedReport, tenant: str | None, correction: Correction
    ) -> Correction:
        """The worker's own claim → value → send → record, with the correction's value."""
        now = self._pipeline.now()
        try:
            offset = self._pipeline.reporting.clock_offset(invoice, now)
            result = self._pipeline.sender.send(
                plan, tenant, now, clock_offset=offset, value=correction.delta
            )
        except (TransientError, PermanentError) as error:
            correction.result, correction.note = "failed", str(error)
            return correction
        if result is SendResult.ALREADY_RECORDED:  # another operator's run finished it
            correction.result, correction.note = "unchanged", "revision already recorded"
            return correction
        recorded = self._tools.reader.ledger.report(plan.identifier)
        if recorded is not None and recorded.value is not None:
            correction.delta = recorded.value  # a retried revision keeps its first value
        delivered = result in {SendResult.SENT, SendResult.LATE}
        correction.result = result.value if delivered else "unchanged"
        if result is SendResult.SKIPPED:
            correction.note = "zero difference not sent (REPORT_ZERO_USAGE=false)"
        return correction

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        try:
            return self._pipeline.stripe.invoice(invoice_id)
        except UnknownStripeObject as error:
            raise OperatorError(f"Stripe has no invoice {invoice_id}: {error}") from error
        except (TransientError, PermanentError) as error:
            raise OperatorError(f"cannot read invoice {invoice_id}: {error}") from error
