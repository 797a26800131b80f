"""The invoice guard: a report Stripe accepted is not yet usage on a finalized invoice.

Stripe aggregates meter events asynchronously and finalizes drafts after the grace period
(STRIPE.md, "Why usage goes missing"), so meterbridge checks the outcome instead of
trusting the send:

- confirm (INVOICE_GUARD=confirm|hold): after reporting, a delayed `confirm` message asks
  the meter's event summaries whether Stripe counts the invoice's reports (rule in
  domain.guard); still unconfirmed within CONFIRMATION_MARGIN_SECONDS of finalization
  raises ConfirmationMissing while someone can still act.
- hold (INVOICE_GUARD=hold): on invoice.created the draft gets auto_advance=false before
  any report is sent, and is released once every report is confirmed — or at
  HOLD_LIMIT_SECONDS (< 72 h) with HoldLimitReached, never blocking billing for good.
- reconcile (always): on invoice.finalized each metered line's quantity is compared with
  what the ledger says it should bill.
- meter error reports (always): Stripe's asynchronous rejections mark reports failed.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from meterbridge.adapters.confirm_queue import ConfirmQueue
from meterbridge.adapters.ledger import CLOSED_FAILURES, Ledger, ReportStatus
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.domain.guard import (
    GuardMode,
    SentUsage,
    confirmation_at_risk,
    expected_aggregate,
    in_window,
    line_is_right,
    next_check_delay,
    same_value,
    summary_window,
)
from meterbridge.domain.invoices import Invoice, InvoiceLine, ServicePeriod
from meterbridge.errors import PermanentError
from meterbridge.messages import ConfirmRequest
from meterbridge.observability import count, logger

SENT_STATUSES = frozenset({ReportStatus.SENT.value, ReportStatus.LATE.value})
HELD = frozenset({"holding", "held"})


@dataclass(frozen=True)
class GuardPolicy:
    """Built from WorkerSettings."""

    mode: GuardMode = "confirm"
    hold_limit_seconds: int = 86_400
    confirmation_margin_seconds: int = 900
    confirm_delay_seconds: int = 60
    confirm_max_delay_seconds: int = 900
    confirm_max_checks: int = 200
    grace_period_seconds: int = 3600


@dataclass
class CheckOutcome:
    """What one confirmation check found, for logs and tests."""

    invoice_id: str
    confirmed: int = 0
    unconfirmed: int = 0
    released: str | None = None  # auto_advance | finalize | none
    next_check_in: int | None = None  # seconds; None when polling ended


class InvoiceGuard:
    def __init__(
        self,
        gateway: StripeGateway,
        ledger: Ledger,
        queue: ConfirmQueue | None,
        policy: GuardPolicy,
    ):
        self._gateway = gateway
        self._ledger = ledger
        self._queue = queue
        self.policy = policy
        # (customer, meter event name, start, end) -> the usage source's value now; the
        # reporter attaches it. None: reconciliation compares with the ledger only.
        self.usage_lookup: Callable[[str, str, int, int], Decimal] | None = None

    def invoice_now(self, invoice: Invoice, now: int) -> int:
        """'Now' as the invoice sees it: its test clock's frozen time, else real time."""
        if invoice.test_clock:
            return self._gateway.test_clock_time(invoice.test_clock)
        return now

    # --- invoice.created ------------------------------------------------------------------

    def hold(
        self,
        invoice: Invoice,
        now: int,
        report_count: int | None = None,
        *,
        record: dict[str, Any] | None = None,
    ) -> str | None:
        """With INVOICE_GUARD=hold, stop Stripe from finalizing the draft before reporting.

        `record`: the invoice's ledger item as the caller just read it (None: no item).
        """
        if self.policy.mode != "hold":
            return None
        context = {"invoice_id": invoice.id, "customer_id": invoice.customer_id}
        recorded = (record or {}).get("hold_status")
        if recorded is not None and recorded not in HELD:
            return str(recorded)  # released (or never ours) before: a redelivery changes nothing
        if recorded is None and invoice.auto_advance is False:
            # Someone else finalizes this draft by hand; it is not ours to release.
            return self._not_held(invoice, "auto_advance was already false", now)
        invoice_now = self.invoice_now(invoice, now)
        deadline = invoice.created + self.policy.hold_limit_seconds
        if invoice_now >= deadline:
            return self._not_held(invoice, "the hold limit had passed when the event arrived", now)
        if not self._ledger.begin_hold(
            invoice.id,
            invoice.customer_id,
            hold_deadline=deadline,
            scheduled_finalization_at=invoice.automatically_finalizes_at,
            now=now,
        ):
            return "not_held"
        try:
            self._gateway.hold_invoice(invoice.id)
        except PermanentError as error:  # e.g. finalized meanwhile: report anyway
            count("HoldFailed")
            logger.warning("could not hold the draft", extra={**context, "reason": str(error)})
            self._ledger.update_invoice(
                invoice.id,
                invoice.customer_id,
                {"hold_status": "not_held", "hold_reason": str(error)[:500]},
                now,
            )
            return "not_held"
        # The number of reports to expect, written with the hold: a check that runs before
        # reporting finished must not release the draft on the reports it can already see.
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            {"hold_status": "held", "guard_mode": "hold"}
            | ({"report_count": report_count} if report_count is not None else {}),
            now,
        )
        count("InvoicesHeld")
        logger.info("draft held until its usage is confirmed", extra=context)
        return "held"

    def _not_held(self, invoice: Invoice, reason: str, now: int) -> str:
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            {"hold_status": "not_held", "hold_reason": reason},
            now,
        )
        logger.info("draft not held", extra={"invoice_id": invoice.id, "reason": reason})
        return "not_held"

    @property
    def confirms(self) -> bool:
        """Whether start_confirmation queues checks (INVOICE_GUARD on and a queue to use)."""
        return self.policy.mode != "off" and self._queue is not None

    def start_confirmation(self, invoice: Invoice, now: int) -> bool:
        """Queue the first check once per invoice (a redelivered event finds it queued)."""
        if not self.confirms or self._queue is None:
            return False  # nothing to queue: no need to read the invoice's item
        fields = self.queue_confirmation(invoice, now, self._ledger.invoice(invoice.id))
        if fields:
            self._ledger.update_invoice(invoice.id, invoice.customer_id, fields, now)
        return bool(fields)

    def queue_confirmation(
        self, invoice: Invoice, now: int, record: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Queue the first check unless `record` (the invoice's ledger item) says it is
        queued; the attributes to write on that item are the caller's, so the worker writes
        them with the invoice's outcome, in the same round trip."""
        if not self.confirms or self._queue is None:
            return {}
        if (record or {}).get("confirmation_scheduled_at") is not None:
            return {}
        request = ConfirmRequest(
            invoice_id=invoice.id, customer_id=invoice.customer_id, livemode=invoice.livemode
        )
        self._queue.schedule(request, self.policy.confirm_delay_seconds)
        return {"confirmation_scheduled_at": now, "guard_mode": self.policy.mode}

    # --- confirm messages -----------------------------------------------------------------

    def check(self, request: ConfirmRequest, now: int) -> CheckOutcome:
        """One look at Stripe's aggregates for an invoice's reports; queue the next one."""
        outcome = CheckOutcome(request.invoice_id)
        reports = self._ledger.invoice_reports(request.invoice_id)
        record = self._ledger.invoice(request.invoice_id) or {}
        try:
            invoice = Invoice.model_validate(self._gateway.invoice(request.invoice_id))
        except ValidationError as error:
            raise PermanentError(f"invoice {request.invoice_id} is not readable: {error}") from None
        invoice_now = self.invoice_now(invoice, now)
        draft = invoice.status == "draft"
        held = record.get("hold_status") in HELD and invoice.auto_advance is False
        finalizes_at = None
        if draft and invoice.auto_advance is not False:
            finalizes_at = invoice.automatically_finalizes_at or _planned_deadline(reports)
        at_risk = draft and confirmation_at_risk(
            invoice_now=invoice_now,
            finalizes_at=finalizes_at,
            margin_seconds=self.policy.confirmation_margin_seconds,
        )
        confirmed = self._confirm(invoice, reports, now, at_risk=at_risk)
        expected = [r for r in reports if r.get("status") != ReportStatus.SKIPPED.value]
        outcome.confirmed = sum(1 for r in expected if r["identifier"] in confirmed)
        # The by_invoice index is eventually consistent: reports it does not show yet are
        # unconfirmed, never a reason to release a hold.
        unseen = max(0, int(record.get("report_count") or 0) - len(reports))
        outcome.unconfirmed = len(expected) - outcome.confirmed + unseen
        all_confirmed = outcome.unconfirmed == 0
        context = {"invoice_id": invoice.id, "check": request.check}

        if not draft:
            if record.get("hold_status") in HELD:
                self._released(invoice, "released", "none", now)
            logger.info("invoice no longer a draft; reconciliation takes over", extra=context)
            return outcome
        hold_deadline = record.get("hold_deadline")
        if held:
            if all_confirmed:
                outcome.released = self._release(invoice, record, invoice_now, now, "released")
                return outcome
            if hold_deadline is not None and invoice_now >= int(hold_deadline):
                count("HoldLimitReached")
                logger.error(
                    "hold limit reached with usage unconfirmed: releasing the draft",
                    extra={**context, "unconfirmed": outcome.unconfirmed},
                )
                outcome.released = self._release(
                    invoice, record, invoice_now, now, "released_at_limit"
                )
                return outcome
        elif all_confirmed:
            return outcome
        elif request.check >= self.policy.confirm_max_checks:
            count("ConfirmationAbandoned")
            logger.error("confirmation checks exhausted; usage unconfirmed", extra=context)
            return outcome

        until_margin = (
            finalizes_at - self.policy.confirmation_margin_seconds - invoice_now
            if finalizes_at is not None
            else None
        )
        until_hold = int(hold_deadline) - invoice_now if held and hold_deadline else None
        delay = next_check_delay(
            request.check,
            base_seconds=self.policy.confirm_delay_seconds,
            max_seconds=self.policy.confirm_max_delay_seconds,
            until_margin=until_margin,
            until_hold_limit=until_hold,
        )
        if self._queue is not None:
            self._queue.schedule(request.model_copy(update={"check": request.check + 1}), delay)
            outcome.next_check_in = delay
        return outcome

    def _confirm(
        self, invoice: Invoice, reports: list[dict[str, Any]], now: int, *, at_risk: bool
    ) -> set[str]:
        """Identifiers Stripe is known to count; records each check's numbers."""
        confirmed = {
            r["identifier"] for r in reports if r.get("confirmation_status") == "confirmed"
        }
        pending = [
            r
            for r in reports
            if r.get("status") in SENT_STATUSES and r["identifier"] not in confirmed
        ]
        groups: dict[tuple[str, tuple[int, int]], list[dict[str, Any]]] = {}
        for report in pending:
            period = ServicePeriod(start=int(report["period_start"]), end=int(report["period_end"]))
            groups.setdefault((str(report["meter_id"]), summary_window(period)), []).append(report)
        for (meter_id, window), members in groups.items():
            observed = self._gateway.meter_usage(
                meter_id, invoice.customer_id, window[0], window[1]
            )
            peers = [
                _sent_usage(r)
                for r in self._ledger.customer_reports(invoice.customer_id, since=window[0])
                if r.get("meter_id") == meter_id
                and r.get("status") in SENT_STATUSES
                and "timestamp" in r
                and in_window(int(r["timestamp"]), window)
            ]
            expected = expected_aggregate(self._formula(meter_id), peers)
            counted = same_value(observed, expected)
            status = "confirmed" if counted else ("missing" if at_risk else "pending")
            for report in members:
                identifier = str(report["identifier"])
                previous = self._ledger.record_confirmation(
                    identifier, status=status, observed=observed, expected=expected, now=now
                )
                context = {
                    "invoice_id": invoice.id,
                    "identifier": identifier,
                    "observed": str(observed),
                    "expected": str(expected),
                }
                if counted:
                    confirmed.add(identifier)
                    count("ReportsConfirmed")
                elif status == "missing" and previous != "missing":
                    count("ConfirmationMissing")
                    logger.error(
                        "usage not yet counted by Stripe and the invoice finalizes soon",
                        extra=context,
                    )
        return confirmed

    def _formula(self, meter_id: str) -> str:
        meter = self._gateway.meter(meter_id)
        return str((meter.get("default_aggregation") or {}).get("formula") or "sum")

    def _release(
        self,
        invoice: Invoice,
        record: dict[str, Any],
        invoice_now: int,
        now: int,
        status: str,
    ) -> str:
        """Hand the draft back to Stripe.

        Before its original schedule (`scheduled_finalization_at`), auto_advance=true
        restores exactly what Stripe would have done: finalization inside the grace period,
        where late usage is documented to count, and the rest of the grace period left to
        anything else that adds to the invoice. After it, waiting longer only delays
        billing, so the draft is finalized now (POST /v1/invoices/{id}/finalize, which
        "updates the invoice to reflect the latest quantity"; that this also holds past the
        grace period is not documented by Stripe — see README, "Invoice guard").
        """
        scheduled = record.get("scheduled_finalization_at")
        # Resume only with time to spare: re-enabling auto_advance after the schedule has
        # passed leaves the finalization time to Stripe (undocumented), so near or past it
        # the draft is finalized explicitly.
        spare = self.policy.confirmation_margin_seconds
        try:
            action = "finalize"
            if scheduled is not None and invoice_now + spare < int(scheduled):
                resumed = self._gateway.resume_invoice(invoice.id)
                action = "auto_advance"
                due = resumed.get("automatically_finalizes_at")
                if due is None or int(due) <= self.invoice_now(invoice, invoice_now):
                    action = "finalize"
            if action == "finalize":
                self._gateway.finalize_invoice(invoice.id)
        except PermanentError as error:
            current = self._gateway.invoice(invoice.id)
            if current.get("status") != "draft":
                action = "none"  # finalized by someone else meanwhile
            else:
                # Stripe refused to finalize (e.g. a tax or payment setting): never leave the
                # draft held on our account. auto_advance=true hands it back to Stripe's own
                # flow, which reports its finalization error to the account as usual.
                count("HoldReleaseFallback")
                logger.error(
                    "finalize refused: handing the held draft back to Stripe (auto_advance)",
                    extra={"invoice_id": invoice.id, "reason": str(error)[:500]},
                )
                self._gateway.resume_invoice(invoice.id)
                action = "auto_advance"
        self._released(invoice, status, action, now)
        count("InvoicesReleased")
        logger.info(
            "held draft released",
            extra={"invoice_id": invoice.id, "release_action": action, "hold_status": status},
        )
        return action

    def _released(self, invoice: Invoice, status: str, action: str, now: int) -> None:
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            {"hold_status": status, "released_at": now, "release_action": action},
            now,
        )

    # --- invoice.finalized ------------------------------------------------------------------

    def reconcile(self, document: dict[str, Any], now: int) -> str:
        """Compare each metered line meterbridge reported with the ledger's expectation."""
        record = self._ledger.invoice(str(document.get("id")))
        if record is None:
            return "ignored"  # never seen as a draft meterbridge reports for
        try:
            invoice = Invoice.model_validate(document)
        except ValidationError as error:
            raise PermanentError(f"invoice {document.get('id')} is not readable: {error}") from None
        if record.get("hold_status") in HELD:
            self._released(invoice, "released", "none", now)
        reports = self._ledger.invoice_reports(invoice.id)
        if not reports:
            self._ledger.update_invoice(
                invoice.id,
                invoice.customer_id,
                {"reconciliation_status": "not_reported", "reconciled_at": now},
                now,
            )
            return "not_reported"
        by_line = {
            (str(r["subscription_item_id"]), int(r["period_start"]), int(r["period_end"])): r
            for r in reports
        }
        lines = list(invoice.lines)
        if invoice.lines_have_more:
            after = lines[-1].id if lines else None
            lines += [
                InvoiceLine.from_stripe(x) for x in self._gateway.invoice_lines(invoice.id, after)
            ]
        right = wrong = 0
        for line in lines:
            key = (str(line.subscription_item_id), line.period.start, line.period.end)
            report = by_line.get(key)
            if report is None:
                continue
            if self._reconcile_line(invoice, line, report, now):
                right += 1
            else:
                wrong += 1
        status = "mismatch" if wrong else "reconciled"
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            {
                "reconciliation_status": status,
                "reconciled_lines": right,
                "mismatched_lines": wrong,
                "reconciled_at": now,
            },
            now,
        )
        count("InvoicesMismatched" if wrong else "InvoicesReconciled")
        return status

    def _reconcile_line(
        self, invoice: Invoice, line: InvoiceLine, report: dict[str, Any], now: int
    ) -> bool:
        meter_id = str(report["meter_id"])
        peers = [
            r
            for r in self._ledger.customer_reports(invoice.customer_id, since=line.period.start)
            if r.get("meter_id") == meter_id
            and r.get("status") != ReportStatus.SKIPPED.value
            and "timestamp" in r
            and line.period.start <= int(r["timestamp"]) < line.period.end
        ]
        replaced = superseded_failures(peers)
        peers = [r for r in peers if r.get("identifier") not in replaced]
        # What should be billed is what the usage source said, sent or not: a report that
        # failed to reach Stripe is exactly the loss reconciliation exists to show.
        expected = expected_aggregate(self._formula(meter_id), [_sent_usage(r) for r in peers])
        unknown = report.get("status") != ReportStatus.SKIPPED.value and "value" not in report
        invoiced = line.quantity if line.quantity is not None else Decimal(0)
        reason = None
        if unknown:
            reason = "no_value_recorded"
        elif not line_is_right(invoiced, expected, integer_quantity=line.quantity_is_integer):
            reason = "stripe_differs"  # lost (or extra) usage on Stripe's side
        source = self._source_now(invoice, report, line.period)
        reported = Decimal(str(report.get("value") or "0"))
        if reason is None and source is not None and not same_value(source, reported):
            reason = "usage_changed"  # the usage source moved on after the report was sent
        self._ledger.record_reconciliation(
            str(report["identifier"]),
            status="mismatch" if reason else "reconciled",
            invoiced=invoiced,
            expected=expected,
            source=source,
            reason=reason,
            now=now,
        )
        if reason:
            count("InvoiceLineMismatches")
            logger.error(
                "finalized invoice line does not bill the usage",
                extra={
                    "invoice_id": invoice.id,
                    "identifier": report["identifier"],
                    "mismatch_reason": reason,
                    "invoiced_quantity": str(invoiced),
                    "expected_quantity": "unknown" if unknown else str(expected),
                    "source_quantity": None if source is None else str(source),
                },
            )
        return reason is None

    def _source_now(
        self, invoice: Invoice, report: dict[str, Any], period: ServicePeriod
    ) -> Decimal | None:
        if self.usage_lookup is None or "meter_event_name" not in report:
            return None
        try:
            return self.usage_lookup(
                invoice.customer_id, str(report["meter_event_name"]), period.start, period.end
            )
        except PermanentError as error:  # transient errors retry the whole event
            logger.warning(
                "usage source unreadable at reconciliation",
                extra={"invoice_id": invoice.id, "reason": str(error)},
            )
            return None

    # --- v1.billing.meter.error_report_triggered ------------------------------------------------

    def meter_errors(self, event_id: str, notification: str | None, now: int) -> int:
        """Mark the sampled failing reports `failed` with Stripe's code; answers how many.

        `sample_errors[].request.identifier` is the failing request's idempotency key, which
        meterbridge sets to the report identifier. Only samples are listed: when the count
        exceeds them, the rest are found by reconciliation, and the log says so.
        """
        event = self._gateway.thin_event(notification, event_id)
        reason = ((event.get("data") or {}).get("reason")) or {}
        matched = sampled = 0
        for error_type in reason.get("error_types") or []:
            code = str(error_type.get("code") or "unknown")
            for sample in error_type.get("sample_errors") or []:
                sampled += 1
                identifier = str((sample.get("request") or {}).get("identifier") or "")
                if identifier and self._ledger.mark_rejected(
                    identifier,
                    code=code,
                    message=str(sample.get("error_message") or code),
                    event_id=event_id,
                    now=now,
                ):
                    matched += 1
                    count("ReportsRejected")
                    logger.error(
                        "Stripe rejected a report",
                        extra={"identifier": identifier, "stripe_error_code": code},
                    )
        total = int(reason.get("error_count") or sampled)
        count("MeterErrorReports")
        count("MeterEventErrors", total)
        if matched < total:
            logger.warning(
                "meter errors that match no ledger report (not ours, or beyond Stripe's samples)",
                extra={"stripe_event_id": event_id, "errors": total, "matched": matched},
            )
        return matched


_REVISION_SUFFIX = re.compile(r"-r(\d+)$")


def superseded_failures(reports: list[dict[str, Any]]) -> set[str]:
    """Identifiers of closed failures (Stripe rejected it; or its outcome is unknown) that a
    later, delivered revision of the same report (subscription item and period) replaced:
    the correction (`meterbridge report --force`) carries their usage, so counting both
    would expect the usage twice. (If Stripe did count an unknown one, it then bills more
    than expected: the mismatch that should alarm.)"""
    groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for report in reports:
        key = (
            report.get("subscription_item_id"),
            report.get("period_start"),
            report.get("period_end"),
        )
        groups.setdefault(key, []).append(report)
    replaced: set[str] = set()
    for members in groups.values():
        delivered = [
            m
            for m in members
            if m.get("status") in (ReportStatus.SENT.value, ReportStatus.LATE.value)
            and m.get("failure_class") not in CLOSED_FAILURES
        ]
        for closed in (m for m in members if m.get("failure_class") in CLOSED_FAILURES):
            if any(_revision_order(d) > _revision_order(closed) for d in delivered):
                replaced.add(str(closed.get("identifier")))
    return replaced


def _revision_order(report: dict[str, Any]) -> tuple[int, str]:
    """Revision from a readable identifier (`…-r2`), else -1; then when it was claimed."""
    match = _REVISION_SUFFIX.search(str(report.get("identifier", "")))
    return (int(match.group(1)) if match else -1, str(report.get("created_at", "")))


def _sent_usage(report: dict[str, Any]) -> SentUsage:
    return SentUsage(
        timestamp=int(report["timestamp"]),
        value=Decimal(str(report.get("value") or "0")),
        sent_at=int(report.get("sent_at") or 0),
    )


def _planned_deadline(reports: list[dict[str, Any]]) -> int | None:
    deadlines = [int(r["finalizes_at"]) for r in reports if r.get("finalizes_at") is not None]
    return min(deadlines) if deadlines else None
