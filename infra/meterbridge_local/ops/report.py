"""Re-run reporting for one invoice, and correct a report that was sent with a wrong value.

Everything runs through the worker's own reporter, built by the worker's `build_worker`
from the same settings: plain re-runs are `UsageReporter.report_invoice` (what is already
sent stays sent, what failed or never ran is reported now), with the invoice guard when
QUEUE_URL is set, so re-sent reports get confirmation checks like any other. A correction
(`--force`) cannot re-send the same identifier — Stripe would call it a duplicate, or,
after 24 h, count it twice — so it sends the *difference* between the usage source's
value now and what the ledger says Stripe already counts, as a new report with the next
revision identifier (`report_identifier(..., revision=n)`), claimed and sent by the
worker's `report_plan`, so a retried correction is never sent twice. Deltas only add up
on meters whose formula is `sum` without pre-aggregation windows; others are refused.
"""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3

from meterbridge.adapters.ledger import DONE_STATUSES
from meterbridge.adapters.stripe_gateway import UnknownStripeObject
from meterbridge.adapters.usage_sources import CallableUsageSource
from meterbridge.domain.invoices import Invoice, Meter
from meterbridge.domain.reports import PlannedReport, report_identifier
from meterbridge.errors import PermanentError, SettingsError, TransientError
from meterbridge.handlers.worker import build_worker
from meterbridge.reporting import EventOutcome, UsageReporter
from meterbridge.settings import WorkerSettings, load_settings
from meterbridge_local.ledger_reader import LedgerReader, is_closed_failure
from meterbridge_local.ops.config import OperatorError

INVOICE_GUARD = "INVOICE_GUARD"


@dataclass
class Correction:
    """One (subscription item, service period) compared with the usage source now."""

    subscription_item_id: str
    period_start: int
    period_end: int
    counted: Decimal | None  # what the ledger says Stripe counts (all delivered revisions)
    correct: Decimal | None  # the usage source's value now
    result: str  # unchanged | differs | sent | late | refused | failed | not_reported
    identifier: str | None = None  # the revision sent (or that would be sent)
    delta: Decimal | None = None
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
    """The deployed worker's reporter (and guard), plus the operator's ledger reader."""

    reporter: UsageReporter
    reader: LedgerReader
    guard_note: str | None = None  # why this run schedules no confirmation checks


def reporting_tools(environ: Mapping[str, str] | None = None) -> ReportingTools:
    """Same settings as the worker (LEDGER_TABLE, USAGE_SOURCE, STRIPE_API_KEY or
    STRIPE_SECRET_ARN, TENANT_METADATA_KEY, INVOICE_GUARD, QUEUE_URL, …), same wiring."""
    environ = dict(os.environ if environ is None else environ)
    note = None
    try:
        settings = load_settings(WorkerSettings, environ)
        if settings.invoice_guard != "off" and not settings.queue_url:
            # The worker would log a warning and run without checks; say it plainly instead.
            environ[INVOICE_GUARD] = "off"
            note = (
                f"INVOICE_GUARD={settings.invoice_guard} needs QUEUE_URL (the event queue):"
                " no confirmation checks scheduled for this run"
            )
        dynamodb = boto3.client("dynamodb")
        reader = LedgerReader(settings.ledger_table, dynamodb)
        worker = build_worker(environ, dynamodb=dynamodb, ledger=reader.ledger)
    except (SettingsError, TransientError, PermanentError) as error:
        raise OperatorError(f"worker settings: {error}") from error
    return ReportingTools(worker.reporter, reader, note)


class InvoiceReRun:
    def __init__(self, tools: ReportingTools):
        self._tools = tools
        self._reporter = tools.reporter

    def run(self, invoice_id: str, *, force: bool = False) -> ReportRun:
        document = self._invoice(invoice_id)
        invoice = Invoice.model_validate(document)
        if invoice.status != "draft":
            raise OperatorError(
                f"invoice {invoice_id} is {invoice.status!r}, not a draft: Stripe no longer adds"
                " usage to it. Correct it with an invoice item or credit note instead."
            )
        now = int(self._reporter.clock())
        run = ReportRun(invoice_id, confirmation=self._tools.guard_note)
        guarded = self._rearm_confirmation(invoice, now)
        try:
            run.outcome = self._reporter.report_invoice(document, now, careful=True)
        except (TransientError, PermanentError) as error:
            run.error = f"{type(error).__name__}: {error}"
        if run.outcome is not None and run.outcome.result == "skipped":
            return run
        try:
            plans = self._reporter.plan_invoice(invoice)
            tenant = self._reporter.tenant_of(invoice) if plans else None
        except (TransientError, PermanentError) as error:
            run.error = run.error or f"{type(error).__name__}: {error}"
            return run
        for plan in plans:
            run.corrections.append(self._compare(invoice, plan, tenant, force=force))
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
        guard = self._reporter.guard
        if guard is None or guard.policy.mode == "off":
            return False
        self._tools.reader.ledger.update_invoice(
            invoice.id, invoice.customer_id, {"confirmation_scheduled_at": None}, now
        )
        return True

    def _confirmation_scheduled(self, invoice: Invoice, now: int) -> str:
        guard = self._reporter.guard
        assert guard is not None
        # After a failure report_invoice queued it already; after a skip nothing is to confirm.
        guard.start_confirmation(invoice, now)
        return (
            f"confirmation checks queued (INVOICE_GUARD={guard.policy.mode}); follow them with"
            f" `meterbridge status invoice {invoice.id}`"
        )

    # --- one (item, period) -------------------------------------------------------------

    def _compare(
        self, invoice: Invoice, plan: PlannedReport, tenant: str | None, *, force: bool
    ) -> Correction:
        revisions = self._tools.reader.revisions(plan.subscription_item_id, plan.period)
        correction = Correction(
            plan.subscription_item_id, plan.period.start, plan.period.end, None, None, ""
        )
        first = revisions.items[0] if revisions.items else None
        if first is None or (
            first.get("status") not in DONE_STATUSES and not is_closed_failure(first)
        ):
            correction.result = "not_reported"
            correction.note = (first or {}).get("last_error") or "no report in the ledger"
            return correction
        # A revision Stripe rejected asynchronously was never counted: counted_total leaves
        # it out, so the correction re-sends its value under the next revision.
        correction.counted = revisions.counted_total
        try:
            correction.correct = self._reporter.usage_of(plan, tenant)
        except (TransientError, PermanentError) as error:
            correction.result, correction.note = "failed", f"usage source: {error}"
            return correction
        unfinished = revisions.unfinished
        identifier = (
            str(unfinished["identifier"])
            if unfinished is not None
            else _revision_identifier(plan, revisions.next_revision)
        )
        correction.delta = correction.correct - correction.counted
        correction.identifier = identifier
        if correction.delta == 0 and unfinished is None:
            correction.result, correction.identifier = "unchanged", None
            return correction
        unknown = revisions.outcome_unknown
        if not force:
            correction.result = "differs"
            correction.note = "run again with --force to send the difference"
            if unknown is not None:
                correction.note = (
                    f"{unknown['identifier']} may or may not be counted by Stripe (its send"
                    " outcome is unknown and Stripe no longer remembers the identifier); it"
                    " is counted as missing here. Check the customer's meter event summary"
                    " in Stripe first: --force sends the difference under a new revision"
                )
            return correction
        refusal = self._delta_refusal(plan.meter)
        if refusal:
            correction.result, correction.note = "refused", refusal
            return correction
        revision_plan = dataclasses.replace(plan, identifier=identifier)
        return self._send_delta(invoice, revision_plan, tenant, correction)

    def _send_delta(
        self, invoice: Invoice, plan: PlannedReport, tenant: str | None, correction: Correction
    ) -> Correction:
        """The worker's own claim → value → send → record, with the delta as the usage."""
        delta = correction.delta
        reporter = self._reporter.with_usage_source(CallableUsageSource(lambda _query: delta))
        try:
            result = reporter.report_plan(invoice, plan, tenant, int(self._reporter.clock()))
        except (TransientError, PermanentError) as error:
            correction.result, correction.note = "failed", str(error)
            return correction
        if result == "already_recorded":  # another operator's run finished this revision
            correction.result, correction.note = "unchanged", "revision already recorded"
            return correction
        recorded = self._tools.reader.ledger.report(plan.identifier) or {}
        if recorded.get("value") is not None:  # a retried revision keeps its first value
            correction.delta = Decimal(str(recorded["value"]))
        correction.result = result if result in {"sent", "late"} else "unchanged"
        if result == "skipped":
            correction.note = "zero difference not sent (REPORT_ZERO_USAGE=false)"
        return correction

    def _delta_refusal(self, meter: Meter) -> str | None:
        raw = self._reporter.gateway.meter(meter.id)
        formula = (raw.get("default_aggregation") or {}).get("formula")
        if formula != "sum":
            return f"meter {meter.id} aggregates with {formula!r}: a delta cannot correct it"
        if raw.get("event_time_window"):
            return (
                f"meter {meter.id} pre-aggregates per {raw['event_time_window']}: a newer event"
                " replaces older ones, so a delta would replace the total"
            )
        return None

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        try:
            return self._reporter.gateway.invoice(invoice_id)
        except UnknownStripeObject as error:
            raise OperatorError(f"Stripe has no invoice {invoice_id}: {error}") from error
        except (TransientError, PermanentError) as error:
            raise OperatorError(f"cannot read invoice {invoice_id}: {error}") from error


def _revision_identifier(plan: PlannedReport, revision: int) -> str:
    return report_identifier(plan.subscription_item_id, plan.period, revision)
