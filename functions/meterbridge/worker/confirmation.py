"""Confirming that Stripe counts what was sent (INVOICE_GUARD=confirm|hold).

A report Stripe accepted (HTTP 200) is not yet usage on the invoice: Stripe aggregates
asynchronously and finalizes the draft when its grace period ends. After reporting, a
delayed `confirm` message asks the meter's event summaries whether Stripe counts the
invoice's reports (the rule: domain/guard.py); still unconfirmed within
CONFIRMATION_MARGIN_SECONDS of finalization raises ConfirmationMissing while someone can
still act. A held draft is released from here (worker/holding.py).
"""

from dataclasses import dataclass

from meterbridge.domain.guard import (
    CheckState,
    NextStep,
    confirmation_at_risk,
    decide_after_check,
    expected_aggregate,
    in_window,
    same_value,
    sent_usage,
    summary_window,
)
from meterbridge.domain.invoices import Invoice, Meter
from meterbridge.domain.records import (
    ConfirmationStatus,
    HoldStatus,
    InvoiceChanges,
    InvoiceRecord,
    ReleaseAction,
    ReportRecord,
    ReportStatus,
)
from meterbridge.messages import ConfirmRequest
from meterbridge.observability import count, logger
from meterbridge.worker.holding import DraftHold
from meterbridge.worker.invoices import InvoiceReader
from meterbridge.worker.planning import InvoicePlanner
from meterbridge.worker.policy import GuardPolicy
from meterbridge.worker.ports import ConfirmQueue, GuardLedger, Stripe


@dataclass
class CheckOutcome:
    """What one confirmation check found, for logs and tests."""

    invoice_id: str
    confirmed: int = 0
    unconfirmed: int = 0
    released: ReleaseAction | None = None
    next_check_in: int | None = None  # seconds; None when polling ended


class Confirmation:
    def __init__(
        self,
        stripe: Stripe,
        ledger: GuardLedger,
        *,
        queue: ConfirmQueue | None,
        invoices: InvoiceReader,
        planner: InvoicePlanner,
        hold: DraftHold,
        policy: GuardPolicy,
    ):
        self._stripe = stripe
        self._ledger = ledger
        self._queue = queue
        self._invoices = invoices
        self._planner = planner
        self._hold = hold
        self._policy = policy

    @property
    def active(self) -> bool:
        """Whether checks are queued at all (INVOICE_GUARD on and a queue to use)."""
        return self._policy.on and self._queue is not None

    def start(self, invoice: Invoice, now: int) -> bool:
        """Queue the first check once per invoice (a redelivered event finds it queued)."""
        if not self.active:
            return False  # nothing to queue: no need to read the invoice's record
        changes = self.first_check(invoice, now, self._ledger.invoice(invoice.id))
        if changes is not None:
            self._ledger.update_invoice(invoice.id, invoice.customer_id, changes, now)
        return changes is not None

    def first_check(
        self, invoice: Invoice, now: int, record: InvoiceRecord | None
    ) -> InvoiceChanges | None:
        """Queue the first check unless `record` says it is queued; the changes to write on
        the invoice's record are the caller's, so the worker writes them with the invoice's
        outcome, in the same round trip."""
        if not self.active or self._queue is None:
            return None
        if record is not None and record.confirmation_scheduled_at is not None:
            return None
        request = ConfirmRequest(
            invoice_id=invoice.id, customer_id=invoice.customer_id, livemode=invoice.livemode
        )
        self._queue.schedule(request, self._policy.confirm_delay_seconds)
        return InvoiceChanges(confirmation_scheduled_at=now, guard_mode=self._policy.mode)

    def check(self, request: ConfirmRequest, now: int) -> CheckOutcome:
        """One look at Stripe's aggregates for an invoice's reports; queue the next one."""
        outcome = CheckOutcome(request.invoice_id)
        record = self._ledger.invoice(request.invoice_id) or InvoiceRecord(
            request.invoice_id, request.customer_id
        )
        invoice = self._invoices.read(request.invoice_id)
        # The invoice's reports by their identifiers (consistent reads): a report shared
        # with another invoice (two subscriptions on one meter) belongs to this one too.
        planned = [r.identifier for r in self._planner.plan(invoice).reports]
        found = self._ledger.reports(planned)
        reports = list(found.values())
        invoice_now = self._invoices.now(invoice, now)
        draft = invoice.status == "draft"
        finalizes_at = None
        if draft and invoice.auto_advance is not False:
            finalizes_at = invoice.automatically_finalizes_at or _planned_deadline(reports)
        at_risk = draft and confirmation_at_risk(
            invoice_now=invoice_now,
            finalizes_at=finalizes_at,
            margin_seconds=self._policy.confirmation_margin_seconds,
        )
        confirmed = self._observe(invoice, reports, now, at_risk=at_risk)
        expected = [r for r in reports if r.status is not ReportStatus.SKIPPED]
        outcome.confirmed = sum(1 for r in expected if r.identifier in confirmed)
        # Reports not claimed yet (reporting still running, or failed before) are
        # unconfirmed, never a reason to release a hold.
        unseen = len(planned) - len(found)
        outcome.unconfirmed = len(expected) - outcome.confirmed + unseen
        decision = decide_after_check(
            CheckState(
                draft=draft,
                held=record.held and invoice.auto_advance is False,
                all_confirmed=outcome.unconfirmed == 0,
                checks_done=request.check,
                max_checks=self._policy.confirm_max_checks,
                invoice_now=invoice_now,
                hold_deadline=record.hold_deadline,
                finalizes_at=finalizes_at,
            ),
            base_seconds=self._policy.confirm_delay_seconds,
            max_seconds=self._policy.confirm_max_delay_seconds,
            margin_seconds=self._policy.confirmation_margin_seconds,
        )
        context = {"invoice_id": invoice.id, "check": request.check}
        if decision.step is NextStep.HAND_OVER:
            if record.held:
                self._hold.mark_released(invoice, HoldStatus.RELEASED, ReleaseAction.NONE, now)
            logger.info("invoice no longer a draft; reconciliation takes over", extra=context)
        elif decision.step is NextStep.RELEASE:
            outcome.released = self._hold.release(
                invoice, record, invoice_now, now, HoldStatus.RELEASED
            )
        elif decision.step is NextStep.RELEASE_AT_LIMIT:
            count("HoldLimitReached")
            logger.error(
                "hold limit reached with usage unconfirmed: releasing the draft",
                extra={**context, "unconfirmed": outcome.unconfirmed},
            )
            outcome.released = self._hold.release(
                invoice, record, invoice_now, now, HoldStatus.RELEASED_AT_LIMIT
            )
        elif decision.step is NextStep.ABANDON:
            count("ConfirmationAbandoned")
            logger.error("confirmation checks exhausted; usage unconfirmed", extra=context)
        elif decision.step is NextStep.CHECK_AGAIN and self._queue is not None:
            delay = decision.delay_seconds or 0
            self._queue.schedule(request.model_copy(update={"check": request.check + 1}), delay)
            outcome.next_check_in = delay
        return outcome

    def _observe(
        self, invoice: Invoice, reports: list[ReportRecord], now: int, *, at_risk: bool
    ) -> set[str]:
        """Identifiers Stripe is known to count; records each check's numbers."""
        confirmed = {r.identifier for r in reports if r.confirmed}
        pending = [r for r in reports if r.delivered and r.identifier not in confirmed]
        groups: dict[tuple[str, tuple[int, int]], list[ReportRecord]] = {}
        for report in pending:
            groups.setdefault((report.meter_id, summary_window(report.period)), []).append(report)
        for (meter_id, window), members in groups.items():
            observed = self._stripe.meter_usage(meter_id, invoice.customer_id, window[0], window[1])
            peers = [
                sent_usage(r)
                for r in self._ledger.customer_reports(invoice.customer_id, since=window[0])
                if r.meter_id == meter_id
                and r.delivered
                and r.timestamp is not None
                and in_window(r.timestamp, window)
            ]
            meter = Meter.from_stripe(self._stripe.meter(meter_id))
            expected = expected_aggregate(meter.formula, peers, meter.event_time_window)
            counted = same_value(observed, expected)
            status = ConfirmationStatus.CONFIRMED
            if not counted:
                status = ConfirmationStatus.MISSING if at_risk else ConfirmationStatus.PENDING
            for report in members:
                previous = self._ledger.record_confirmation(
                    report.identifier, status=status, observed=observed, expected=expected, now=now
                )
                if counted:
                    confirmed.add(report.identifier)
                    count("ReportsConfirmed")
                elif (
                    status is ConfirmationStatus.MISSING
                    and previous is not ConfirmationStatus.MISSING
                ):
                    count("ConfirmationMissing")
                    logger.error(
                        "usage not yet counted by Stripe and the invoice finalizes soon",
                        extra={
                            "invoice_id": invoice.id,
                            "identifier": report.identifier,
                            "observed": str(observed),
                            "expected": str(expected),
                        },
                    )
        return confirmed


def _planned_deadline(reports: list[ReportRecord]) -> int | None:
    deadlines = [r.finalizes_at for r in reports if r.finalizes_at is not None]
    return min(deadlines) if deadlines else None
