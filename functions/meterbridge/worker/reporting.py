"""invoice.created: one draft in, each of its eligible lines' usage reported once.

eligible draft? → plan (worker/planning.py) → tenant → hold (INVOICE_GUARD=hold) → send
each report (worker/sending.py) → queue the first confirmation check → record the
invoice's outcome. Reports already sent are skipped on any retry, so retrying the whole
event is always safe.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meterbridge.domain.eligibility import ineligibility_reason
from meterbridge.domain.invoices import Invoice
from meterbridge.domain.records import InvoiceChanges, InvoiceRecord, InvoiceStatus, ReportRecord
from meterbridge.domain.reports import InvoicePlan, PlannedReport, refusal
from meterbridge.errors import PermanentError, TransientError
from meterbridge.messages import EventEnvelope
from meterbridge.observability import count, logger
from meterbridge.worker.confirmation import Confirmation
from meterbridge.worker.holding import DraftHold
from meterbridge.worker.invoices import InvoiceReader, invoice_of_event, parse_invoice
from meterbridge.worker.planning import InvoicePlanner
from meterbridge.worker.policy import ReportingPolicy
from meterbridge.worker.ports import ReportingLedger, Stripe
from meterbridge.worker.sending import ReportSender, SendResult
from meterbridge.worker.true_up import Remainders, TrueUp
from meterbridge.worker.usage import UsageReader


class Unread:
    """Marks an argument the caller did not read (as opposed to read and found absent)."""


UNREAD = Unread()


@dataclass
class EventOutcome:
    """What happened to one event, for logs and tests."""

    event_id: str
    event_type: str
    result: str  # reported | skipped | duplicate_event | reconciled | mismatch | … | ignored
    reason: str | None = None
    reports: dict[str, str] = field(default_factory=dict)  # identifier → status


class OutOfInvocationTime(TransientError):
    """Reports were left unstarted to end before the invocation's timeout. `progressed`: this
    attempt did send some (a large invoice): the work goes on in a fresh message at once,
    instead of spending one of the queue's receives on it (handlers/worker.py)."""

    def __init__(self, message: str, *, progressed: bool):
        super().__init__(message)
        self.progressed = progressed


def _remainders(  # noqa: PLR0917 - the invoice's reporting state, passed through
    true_up: TrueUp | None,
    invoice: Invoice,
    plan: InvoicePlan,
    done: dict[str, ReportRecord],
    tenant: str | None,
    now: int,
    clock_offset: int,
) -> Remainders | None:
    """With continuous reporting, the reports still to send closed against the sweeps."""
    if true_up is None:
        return None
    open_reports = [
        r
        for r in plan.reports
        if (found := done.get(r.identifier)) is None or not (found.status.done or found.closed)
    ]
    if not open_reports:
        return None
    return true_up.begin(invoice, open_reports, tenant, now, clock_offset)


REASONS_SHOWN = 5  # failures quoted in one message: a 10,000-line invoice must not log 800 KB


@dataclass
class Progress:
    """What one attempt did with an invoice's reports."""

    statuses: dict[str, str] = field(default_factory=dict)
    transient: list[str] = field(default_factory=list)
    permanent: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    attempted: int = 0  # reports this attempt claimed or tried to

    def note(self, report: PlannedReport, result: SendResult) -> None:
        self.statuses[report.identifier] = result.value
        if result is SendResult.REPORTED_ELSEWHERE:
            self.findings.append(
                f"meter {report.meter.event_name} for [{report.period.start},"
                f" {report.period.end}) is also billed on another invoice's line and was"
                " reported for it (shared meter)"
            )

    def summary(self) -> str:
        """The failures, a few quoted and the rest counted; empty when none."""
        parts = []
        for kind, reasons in (("failed", self.permanent), ("will retry", self.transient)):
            if reasons:
                more = len(reasons) - REASONS_SHOWN
                shown = "; ".join(reasons[:REASONS_SHOWN])
                parts.append(
                    f"{len(reasons)} {kind}: {shown}" + (f"; … {more} more" if more > 0 else "")
                )
        if self.not_started:
            parts.append(f"{len(self.not_started)} not started, out of invocation time")
        return " | ".join(parts)

    def raise_failures(self) -> None:
        if self.transient:
            raise TransientError(self.summary())
        if self.not_started:
            raise OutOfInvocationTime(self.summary(), progressed=self.attempted > 0)
        if self.permanent:
            raise PermanentError(self.summary())


class InvoiceReporting:
    def __init__(
        self,
        *,
        stripe: Stripe,
        ledger: ReportingLedger,
        invoices: InvoiceReader,
        planner: InvoicePlanner,
        usage: UsageReader,
        sender: ReportSender,
        hold: DraftHold,
        confirmation: Confirmation,
        policy: ReportingPolicy,
        guarded: bool,
        clock: Callable[[], float] = time.time,
        true_up: TrueUp | None = None,
    ):
        self._stripe = stripe
        self._ledger = ledger
        self._invoices = invoices
        self._planner = planner
        self._usage = usage
        self._sender = sender
        self._hold = hold
        self._confirmation = confirmation
        self._policy = policy
        self._guarded = guarded  # INVOICE_GUARD is not off
        self._clock = clock
        self._true_up = true_up  # continuous reporting: send remainders (worker/true_up.py)

    def on_invoice_created(
        self,
        envelope: EventEnvelope,
        event: dict[str, Any] | None,
        *,
        retry: bool = False,
        deadline: float | None = None,
    ) -> EventOutcome:
        """The event is remembered on its invoice's ledger record, read here once: it says
        whether the event was processed, and whether an earlier attempt touched the invoice
        (then each report is claimed before its usage is read: reports already sent cost
        no usage query).

        `retry`: an earlier delivery of this message failed. `deadline` (time.monotonic()):
        no report starts after it, so the invocation ends before its timeout.
        """
        if event is None:  # travelled as an envelope: too large for the queue
            event = self._stripe.event(envelope.id)
        document = invoice_of_event(event, envelope.id)
        recorded = self._ledger.invoice(document["id"])
        if recorded is not None and recorded.saw_created_event(envelope.id):
            count("DuplicateEvents")
            return EventOutcome(envelope.id, envelope.type, "duplicate_event")
        outcome = self.report_invoice(
            document,
            int(self._clock()),
            created_event=envelope.id,
            careful=retry or recorded is not None,
            deadline=deadline,
            record=recorded,
        )
        outcome.event_id, outcome.event_type = envelope.id, envelope.type
        return outcome

    def report_invoice(
        self,
        document: dict[str, Any],
        now: int,
        *,
        created_event: str | None = None,
        careful: bool = False,
        deadline: float | None = None,
        record: InvoiceRecord | Unread | None = UNREAD,
    ) -> EventOutcome:
        """Report one invoice's usage; `created_event` is remembered once it is done.

        `careful`: claim each report before reading its usage (a retry: some reports may be
        sent already). Otherwise usage is read first and claimed with the claim.
        `record`: the invoice's ledger record, if the caller has just read it (None: none).
        """
        invoice = parse_invoice(document)
        if invoice.verification:
            return EventOutcome("", "", "ignored", reason="meterbridge verify's own invoice")
        context = {"invoice_id": invoice.id, "customer_id": invoice.customer_id}
        reason = ineligibility_reason(invoice, self._policy.billing_reasons)
        tenant: str | None = None
        plan = InvoicePlan([], [], [])
        if reason is None:
            try:
                plan = self._planner.plan(invoice)
                tenant = self._usage.tenant(invoice.customer_id) if plan.reports else None
            except PermanentError as error:
                self._ledger.update_invoice(
                    invoice.id,
                    invoice.customer_id,
                    InvoiceChanges(status=InvoiceStatus.FAILED, reason=str(error), report_count=0),
                    now,
                )
                count("InvoicesFailed")
                logger.error("invoice cannot be reported", extra={**context, "reason": str(error)})
                raise
            if not plan.reports and not plan.unreported:
                reason = "no line is priced by a meter that meterbridge reports"
        findings = _findings(invoice, plan)
        refused = [u.reason for u in plan.unreported if refusal(u.meter)]
        if reason is not None or not plan.reports:
            reason = reason or "; ".join(findings) or "nothing to report"
            status = InvoiceStatus.FAILED if refused else InvoiceStatus.SKIPPED
            self._record(
                invoice,
                status,
                reason=reason[:1000],
                now=now,
                report_count=0,
                created_event=created_event,
                findings=findings,
            )
            count("InvoicesFailed" if refused else "InvoicesSkipped")
            logger.info("invoice not reported", extra={**context, "reason": reason})
            return EventOutcome("", "", status.value, reason=reason)

        if self._guarded and isinstance(record, Unread):
            record = self._ledger.invoice(invoice.id)
        known = None if isinstance(record, Unread) else record
        try:
            if self._guarded:
                self._hold.hold(invoice, now, report_count=len(plan.reports), record=known)
            progress = self._send_each(
                invoice, plan, tenant, now, careful=careful, deadline=deadline
            )
        except BaseException:
            if self._guarded:
                # Whatever happened (a ledger error, a Stripe outage while holding): a held
                # draft must reach its release check, or it stays held.
                self._confirmation.start(invoice, now)
            raise
        findings += progress.findings
        # Failed reports too: a held draft is released by its checks, never left held.
        first_check = self._confirmation.first_check(invoice, now, known) if self._guarded else None
        failed = progress.summary()
        self._record(
            invoice,
            InvoiceStatus.FAILED if failed or refused else InvoiceStatus.REPORTED,
            reason="; ".join([failed, *refused] if failed else refused)[:1000] or None,
            now=now,
            report_count=len(plan.reports),
            # A failed event is not done: its redelivery (or DLQ replay) must run.
            created_event=None if failed else created_event,
            guard=first_check,
            findings=findings,
        )
        progress.raise_failures()
        return EventOutcome("", "", "reported", reports=progress.statuses)

    def _send_each(
        self,
        invoice: Invoice,
        plan: InvoicePlan,
        tenant: str | None,
        now: int,
        *,
        careful: bool,
        deadline: float | None,
    ) -> "Progress":
        """Send every planned report that is not done. A retry (`careful`) first reads what
        the ledger holds for all of them in a few batched reads, so reports already sent
        cost nothing more; no report starts after `deadline`."""
        progress = Progress()
        done = self._ledger.reports([r.identifier for r in plan.reports]) if careful else {}
        clock_offset = self.clock_offset(invoice, now)
        remainders = _remainders(self._true_up, invoice, plan, done, tenant, now, clock_offset)
        for report in plan.reports:
            record = done.get(report.identifier)
            if record is not None and (record.status.done or record.closed):
                progress.note(report, self._sender.recorded(report, record))
                continue
            if deadline is not None and time.monotonic() > deadline:
                progress.not_started.append(report.identifier)
                progress.statuses[report.identifier] = "retry"
                continue
            try:
                sent, value = remainders.of(report) if remainders else (report, None)
                # Each report's own `now`: leases and timestamps from when it starts.
                result = self._sender.send(
                    sent,
                    tenant,
                    int(self._clock()),
                    clock_offset=clock_offset,
                    careful=careful,
                    value=value,
                )
                progress.attempted += 1
                progress.note(report, result)
            except TransientError as error:
                progress.attempted += 1
                progress.statuses[report.identifier] = "retry"
                progress.transient.append(f"{report.identifier}: {error}")
            except PermanentError as error:
                progress.attempted += 1
                progress.statuses[report.identifier] = "failed"
                progress.permanent.append(f"{report.identifier}: {error}")
        return progress

    def _record(
        self,
        invoice: Invoice,
        status: InvoiceStatus,
        *,
        reason: str | None,
        now: int,
        report_count: int,
        created_event: str | None,
        guard: InvoiceChanges | None = None,
        findings: list[str] | None = None,
    ) -> None:
        changes = InvoiceChanges(
            status=status,
            reason=reason,
            report_count=report_count,
            clear_reason=reason is None,
            findings=tuple(findings) if findings else None,
        )
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            guard.merged(changes) if guard is not None else changes,
            now,
            created_event=created_event,
        )

    def clock_offset(self, invoice: Invoice, now: int) -> int:
        """Lateness is judged on the invoice's clock: a test clock runs weeks in the past."""
        if not invoice.test_clock:
            return 0
        try:
            return self._invoices.now(invoice, now) - now
        except PermanentError as error:  # the clock is gone: judge by real time
            logger.warning(
                "test clock unreadable", extra={"invoice_id": invoice.id, "reason": str(error)}
            )
            return 0


def _findings(invoice: Invoice, plan: InvoicePlan) -> list[str]:
    """Shared meters and lines no report can reach, each alarmed and written down."""
    context = {"invoice_id": invoice.id, "customer_id": invoice.customer_id}
    findings = []
    for shared in plan.shared:
        count("SharedMeter")
        logger.error(
            "a meter is priced on several lines of one customer: Stripe bills the usage on"
            " each (reported once)",
            extra={**context, "meter": shared.meter.id, "lines": list(shared.line_ids)},
        )
        findings.append(shared.describe())
    for line in plan.unreported:
        if refusal(line.meter):
            # Refused for good: alarmed once, never retried in a loop.
            count("ReportsFailed")
            count("UnsupportedMeters")
            logger.error("meter not reportable", extra={**context, "reason": line.reason})
        else:
            logger.warning(
                "metered line not reportable",
                extra={**context, "line_id": line.line_id, "reason": line.reason},
            )
        findings.append(f"line {line.line_id}: {line.reason}")
    return findings
