"""Sending one report: claim → value → meter event → record, exactly once.

The ledger claim is keyed on the report identifier, not on the event id, because Stripe
may send two events for one invoice. Whatever an earlier attempt recorded wins: its value
may already be in Stripe, so it is sent again as it was (Stripe drops the repeat as a
duplicate identifier), never recomputed.
"""

import time
from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.adapters.stripe_gateway import MeterEventReceipt
from meterbridge.domain.records import Claim, FailureClass, ReportRecord
from meterbridge.domain.reports import (
    PlannedReport,
    SendOutcomeUnknown,
    check_resend,
    is_late,
    stripe_value_text,
)
from meterbridge.errors import PermanentError, TransientError
from meterbridge.observability import count, logger
from meterbridge.worker.policy import ReportingPolicy
from meterbridge.worker.ports import Pace, ReportLedger, Stripe
from meterbridge.worker.usage import Measured, Measurement, Unmeasured, UsageReader


class SendResult(StrEnum):
    SENT = "sent"
    LATE = "late"
    SKIPPED = "skipped"
    ALREADY_RECORDED = "already_recorded"
    # Recorded for another invoice: the same customer, meter and period are billed on a line
    # of another invoice too (two subscriptions on one meter). Sent once, never again.
    REPORTED_ELSEWHERE = "reported_elsewhere"


class ReportSender:
    def __init__(
        self,
        ledger: ReportLedger,
        stripe: Stripe,
        usage: UsageReader,
        policy: ReportingPolicy,
        clock: Callable[[], float] = time.time,
    ):
        self._ledger = ledger
        self._stripe = stripe
        self._usage = usage
        self._policy = policy
        self._clock = clock

    def send(
        self,
        plan: PlannedReport,
        tenant: str | None,
        now: int,
        *,
        clock_offset: int = 0,
        careful: bool = True,
        value: Decimal | None = None,
        pace: Pace | None = None,
    ) -> SendResult:
        """Report one planned report; raises TransientError / PermanentError when it fails.

        `careful` (a retry: some reports may be sent already): claim before reading usage,
        so that reports already sent cost no usage query. Otherwise usage comes first, so a
        report nobody has touched yet is claimed together with its value in one write.
        `clock_offset`: the invoice's clock minus real time (lateness is judged on it).
        `value`: send this instead of the usage source's value (an operator's correction).
        `pace`: waited for right before the meter event (a sweep's share of Stripe's limit).
        """
        context = {
            "invoice_id": plan.invoice_id,
            "customer_id": plan.customer_id,
            "identifier": plan.identifier,
        }
        measurement: Measurement | None = None
        claim: Claim | None = None
        if not careful:
            measurement = self._usage.measure(plan, tenant, now, value)
            if isinstance(measurement, Measured) and self._worth_sending(measurement.value):
                claim = self._ledger.claim_new(
                    plan, measurement.value, measurement.timestamp, now, self._policy.lease_seconds
                )
        fresh = claim is not None
        if claim is None:
            claimed = self._ledger.claim(plan, now, self._policy.lease_seconds)
            if isinstance(claimed, ReportRecord):
                return self.recorded(plan, claimed)
            claim = claimed
        try:
            if not fresh:
                check_resend(plan.identifier, claim.send_started_at, now)
            if claim.value is not None and claim.timestamp is not None:
                measurement = Measured(claim.value, claim.timestamp)
            elif measurement is None:
                measurement = self._usage.measure(plan, tenant, now, value)
            if isinstance(measurement, Unmeasured):
                raise measurement.error
            if not self._worth_sending(measurement.value):
                self._ledger.mark_skipped(
                    claim, reason="zero usage (REPORT_ZERO_USAGE=false)", now=now
                )
                count("ReportsSkipped")
                return SendResult.SKIPPED
            if not fresh:
                self._ledger.record_value(claim, measurement.value, measurement.timestamp, now)
            if pace is not None:
                pace.acquire()
            receipt = self._send(plan, measurement, claim.attempt)
        except (TransientError, PermanentError) as error:
            self._fail(claim, error, now, context)
            raise
        sent_at = int(self._clock())
        late = is_late(sent_at + clock_offset, plan.finalizes_at)
        self._ledger.mark_sent(
            claim,
            late=late,
            request_id=receipt.request_id,
            duplicate=receipt.duplicate,
            now=sent_at,
        )
        if receipt.duplicate:
            count("DuplicatesAcknowledged")
        count("ReportsLate" if late else "ReportsSent")
        log = logger.warning if late else logger.info
        log(
            "usage reported after the invoice finalized" if late else "usage reported",
            extra={**context, "value": str(measurement.value), "duplicate": receipt.duplicate},
        )
        return SendResult.LATE if late else SendResult.SENT

    def _worth_sending(self, value: Decimal) -> bool:
        return value != 0 or self._policy.report_zero_usage

    def recorded(self, plan: PlannedReport, record: ReportRecord) -> SendResult:
        """What a report already done (sent, skipped or closed) means for `plan`'s invoice."""
        context = {"invoice_id": plan.invoice_id, "identifier": plan.identifier}
        if record.invoice_id != plan.invoice_id:
            if plan.invoice_id not in record.also_billed_on:
                # Written on the report, so the first invoice's reconciliation sees it too.
                self._ledger.note_also_billed(plan.identifier, plan.invoice_id, int(self._clock()))
            count("SharedMeter")
            logger.error(
                "the same usage is billed on another invoice's line (shared meter): reported"
                " once, for that invoice",
                extra={**context, "other_invoice_id": record.invoice_id, "meter": plan.meter.id},
            )
            return SendResult.REPORTED_ELSEWHERE
        count("ReportsAlreadyRecorded")
        logger.info("report already recorded; not sent again", extra=context)
        return SendResult.ALREADY_RECORDED

    def _send(self, plan: PlannedReport, measurement: Measured, attempt: int) -> MeterEventReceipt:
        """`attempt` keys the request: a retry after a 5xx must never reuse a key whose saved
        answer is that failure (docs/stripe.md#S-IDEM-1); the identifier's own duplicate
        check keeps the event from counting twice."""
        started = time.perf_counter()
        try:
            return self._stripe.create_meter_event(
                event_name=plan.meter.event_name,
                payload={
                    plan.meter.customer_payload_key: plan.customer_id,
                    plan.meter.value_payload_key: stripe_value_text(measurement.value),
                },
                identifier=plan.identifier,
                timestamp=measurement.timestamp,
                attempt=attempt,
            )
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            count("StripeLatency", elapsed_ms, MetricUnit.Milliseconds)

    def _fail(self, claim: Claim, error: Exception, now: int, context: dict[str, str]) -> None:
        failure_class = (
            FailureClass.PERMANENT if isinstance(error, PermanentError) else FailureClass.TRANSIENT
        )
        if isinstance(error, SendOutcomeUnknown):
            failure_class = FailureClass.OUTCOME_UNKNOWN
        try:
            self._ledger.mark_failed(claim, failure_class=failure_class, reason=str(error), now=now)
        except TransientError:
            logger.exception("could not record the failure in the ledger", extra=context)
        if failure_class is not FailureClass.TRANSIENT:
            count("ReportsFailed")
            logger.error("report failed permanently", extra={**context, "reason": str(error)})
        else:
            logger.warning("report failed; will retry", extra={**context, "reason": str(error)})
