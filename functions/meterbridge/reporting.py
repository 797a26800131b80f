"""The worker's use case: one Stripe event in, each eligible invoice line's usage reported once.

invoice.created → eligible draft? → lines (all pages) → meters → customer (tenant) → for
each (subscription item, service period): ledger claim → usage → ledger value → Stripe
meter event → ledger sent/late. The ledger claim is keyed on the report identifier, not
on the event id, because Stripe may send two events for one invoice.
"""

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from meterbridge.adapters.ledger import OUTCOME_UNKNOWN, Claim, Ledger
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import UsageQuery, UsageSource
from meterbridge.domain.eligibility import ineligibility_reason, reported_line_meters
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, MeteredPrice
from meterbridge.domain.reports import (
    PlannedReport,
    SendOutcomeUnknown,
    check_resend,
    is_late,
    meter_event_timestamp,
    plan_reports,
    stripe_value_text,
    usage_value,
)
from meterbridge.errors import PermanentError, TransientError
from meterbridge.guard import InvoiceGuard
from meterbridge.messages import EventEnvelope
from meterbridge.observability import count, logger

__all__ = ["EventOutcome", "ReportingPolicy", "UsageReporter", "count"]


class Unread:
    """Marks an argument the caller did not read (as opposed to read and found absent)."""


UNREAD = Unread()

INVOICE_CREATED = "invoice.created"
INVOICE_FINALIZED = "invoice.finalized"
# Thin events: Stripe's asynchronous verdicts on meter events already accepted with a 200.
METER_ERROR_EVENT_TYPES = frozenset(
    {"v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"}
)


@dataclass(frozen=True)
class ReportingPolicy:
    """What to report and how long to remember; built from WorkerSettings."""

    billing_reasons: Collection[str] = frozenset({"subscription_cycle"})
    meter_event_names: Collection[str] = frozenset()
    report_zero_usage: bool = True
    grace_period_seconds: int = 3600
    tenant_metadata_key: str | None = None
    lease_seconds: int = 120
    event_memory_seconds: int = 4 * 86_400


@dataclass
class EventOutcome:
    """What happened to one event, for logs and tests."""

    event_id: str
    event_type: str
    result: str  # reported | skipped | duplicate_event | reconciled | mismatch | … | ignored
    reason: str | None = None
    reports: dict[str, str] = field(default_factory=dict)  # identifier → status


class UsageReporter:
    def __init__(
        self,
        gateway: StripeGateway,
        ledger: Ledger,
        usage_source: UsageSource,
        policy: ReportingPolicy,
        clock: Callable[[], float] = time.time,
        *,
        guard: InvoiceGuard | None = None,
    ):
        self._gateway = gateway
        self._ledger = ledger
        self._usage = usage_source
        self._policy = policy
        self.clock = clock
        self.guard = guard
        if guard is not None:
            guard.usage_lookup = self.current_usage

    def handle(
        self,
        envelope: EventEnvelope,
        event: dict[str, Any] | None,
        *,
        retry: bool = False,
        deadline: float | None = None,
    ) -> EventOutcome:
        """Process one queued Stripe event; raises TransientError / PermanentError to retry.

        `retry`: an earlier delivery of this message failed. `deadline` (time.monotonic()):
        no report starts after it, so the invocation ends before its timeout.
        """
        now = int(self.clock())
        if envelope.type == INVOICE_CREATED:
            return self._invoice_created(envelope, event, now, retry, deadline)
        if self._ledger.event_seen(envelope.id, now):
            count("DuplicateEvents")
            return EventOutcome(envelope.id, envelope.type, "duplicate_event")
        if envelope.type == INVOICE_FINALIZED and self.guard is not None:
            if event is None:
                event = self._gateway.event(envelope.id)
            document = (event.get("data") or {}).get("object")
            if not isinstance(document, dict):
                raise PermanentError(f"event {envelope.id} carries no invoice")
            outcome = EventOutcome(envelope.id, envelope.type, self.guard.reconcile(document, now))
        elif envelope.type in METER_ERROR_EVENT_TYPES and self.guard is not None:
            # The queued body is the thin notification as Stripe signed it (already verified).
            notification = json.dumps(event) if event is not None else None
            matched = self.guard.meter_errors(envelope.id, notification, now)
            outcome = EventOutcome(envelope.id, envelope.type, "meter_errors_recorded")
            outcome.reason = f"{matched} report(s) marked failed"
        else:
            logger.info("event type ignored", extra={"stripe_event_type": envelope.type})
            outcome = EventOutcome(envelope.id, envelope.type, "ignored")
        self._ledger.remember_event(
            envelope.id, envelope.type, now, self._policy.event_memory_seconds
        )
        return outcome

    def _invoice_created(
        self,
        envelope: EventEnvelope,
        event: dict[str, Any] | None,
        now: int,
        retry: bool,
        deadline: float | None,
    ) -> EventOutcome:
        """The event is remembered on its invoice's ledger item, read here once: it says
        whether the event was processed, and whether an earlier attempt touched the invoice
        (then each report is claimed before its usage is read: reports already sent cost
        no usage query)."""
        if event is None:  # travelled as an envelope: too large for the queue
            event = self._gateway.event(envelope.id)
        document = (event.get("data") or {}).get("object")
        if not isinstance(document, dict) or not isinstance(document.get("id"), str):
            raise PermanentError(f"event {envelope.id} carries no invoice")
        recorded = self._ledger.invoice(document["id"])
        if Ledger.created_event_seen(recorded, envelope.id):
            count("DuplicateEvents")
            return EventOutcome(envelope.id, envelope.type, "duplicate_event")
        outcome = self.report_invoice(
            document,
            now,
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
        record: dict[str, Any] | Unread | None = UNREAD,
    ) -> EventOutcome:
        """Report one invoice's usage; `created_event` is remembered once it is done.

        `careful`: claim each report before reading its usage (a retry: some reports may be
        sent already). Otherwise usage is read first and claimed with the claim.
        `record`: the invoice's ledger item, if the caller has just read it (None: none).
        """
        invoice_id = str(document.get("id"))
        try:
            invoice = Invoice.model_validate(document)
        except ValidationError as error:
            raise PermanentError(f"invoice {invoice_id} is not readable: {error}") from None
        context = {"invoice_id": invoice.id, "customer_id": invoice.customer_id}
        reason = ineligibility_reason(invoice, self._policy.billing_reasons)
        tenant: str | None = None
        if reason is None:
            try:
                plans = self._plan(invoice)
                tenant = self._tenant(invoice) if plans else None
            except PermanentError as error:
                self._ledger.record_invoice(
                    invoice.id, invoice.customer_id, status="failed", reason=str(error), now=now
                )
                count("InvoicesFailed")
                logger.error("invoice cannot be reported", extra={**context, "reason": str(error)})
                raise
            if not plans:
                reason = "no line is priced by a meter that meterbridge reports"
        if reason is not None:
            self._record_invoice(invoice, "skipped", reason, now, 0, created_event=created_event)
            count("InvoicesSkipped")
            logger.info("invoice skipped", extra={**context, "reason": reason})
            return EventOutcome("", "", "skipped", reason=reason)

        statuses: dict[str, str] = {}
        transient: list[str] = []
        permanent: list[str] = []
        guard = self.guard if self.guard is not None and self.guard.policy.mode != "off" else None
        if guard is not None and isinstance(record, Unread):
            record = self._ledger.invoice(invoice.id)
        try:
            if guard is not None:
                assert not isinstance(record, Unread)
                guard.hold(invoice, now, report_count=len(plans), record=record)
            clock_offset = self._clock_offset(invoice, now)
            for plan in plans:
                if deadline is not None and time.monotonic() > deadline:
                    statuses[plan.identifier] = "retry"
                    transient.append(f"{plan.identifier}: not started, out of invocation time")
                    continue
                try:
                    # Each report's own `now`: leases and timestamps from when it starts.
                    statuses[plan.identifier] = self._report(
                        plan, tenant, int(self.clock()), clock_offset, careful=careful
                    )
                except TransientError as error:
                    statuses[plan.identifier] = "retry"
                    transient.append(f"{plan.identifier}: {error}")
                except PermanentError as error:
                    statuses[plan.identifier] = "failed"
                    permanent.append(f"{plan.identifier}: {error}")
        except BaseException:
            if guard is not None:
                # Whatever happened (a ledger error, a Stripe outage while holding): a held
                # draft must reach its release check, or it stays held.
                guard.start_confirmation(invoice, now)
            raise
        failed = transient + permanent
        # Failed reports too: a held draft is released by its checks, never left held.
        confirmation = (
            guard.queue_confirmation(invoice, now, None if isinstance(record, Unread) else record)
            if guard is not None
            else {}
        )
        self._record_invoice(
            invoice,
            "failed" if failed else "reported",
            "; ".join(failed)[:1000] or None,
            now,
            len(plans),
            # A failed event is not done: its redelivery (or DLQ replay) must run.
            created_event=None if failed else created_event,
            fields=confirmation,
        )
        # Sent reports are skipped on retry, so retrying the whole event is safe.
        if transient:
            raise TransientError("; ".join(transient))
        if permanent:
            raise PermanentError("; ".join(permanent))
        return EventOutcome("", "", "reported", reports=statuses)

    def _record_invoice(
        self,
        invoice: Invoice,
        status: str,
        reason: str | None,
        now: int,
        report_count: int,
        *,
        created_event: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self._ledger.record_invoice(
            invoice.id,
            invoice.customer_id,
            status=status,
            reason=reason,
            now=now,
            report_count=report_count,
            created_event=created_event,
            fields=fields,
        )

    def _clock_offset(self, invoice: Invoice, now: int) -> int:
        """Lateness is judged on the invoice's clock: a test clock runs weeks in the past."""
        if self.guard is None or not invoice.test_clock:
            return 0
        try:
            return self.guard.invoice_now(invoice, now) - now
        except PermanentError as error:  # the clock is gone: judge by real time
            logger.warning(
                "test clock unreadable", extra={"invoice_id": invoice.id, "reason": str(error)}
            )
            return 0

    def _plan(self, invoice: Invoice) -> list[PlannedReport]:
        lines = list(invoice.lines)
        if invoice.lines_have_more:
            after = lines[-1].id if lines else None
            lines += [
                InvoiceLine.from_stripe(x) for x in self._gateway.invoice_lines(invoice.id, after)
            ]
        meter_by_line = {line.id: self._meter_of(line) for line in lines}
        selected = reported_line_meters(lines, meter_by_line, self._policy.meter_event_names)
        return plan_reports(invoice, selected, self._policy.grace_period_seconds)

    def _meter_of(self, line: InvoiceLine) -> Meter | None:
        price = line.price
        if price is None and line.price_id is not None:
            price = MeteredPrice.from_stripe(self._gateway.price(line.price_id))
        if price is None or not price.is_metered or price.meter_id is None:
            return None
        return Meter.from_stripe(self._gateway.meter(price.meter_id))

    def _tenant(self, invoice: Invoice) -> str | None:
        """With TENANT_METADATA_KEY, the customer is fetched once per invoice for its tenant.

        Without it nothing is fetched: Stripe made the invoice for this customer, and a
        customer gone since then makes Stripe reject the meter event asynchronously, which
        the guard records as a failed report (meter error events). A read per invoice would
        cost a Stripe round trip and a share of Stripe's basic rate limit (100 requests/s in
        live mode), which meter events do not count against.
        """
        key = self._policy.tenant_metadata_key
        if key is None:
            return None
        customer = self._gateway.customer(invoice.customer_id)
        if customer.get("deleted"):
            raise PermanentError(f"customer {invoice.customer_id} is deleted")
        tenant = (customer.get("metadata") or {}).get(key)
        if not tenant:
            # Reporting without the tenant would silently bill nothing: stop instead.
            raise PermanentError(
                f"customer {invoice.customer_id} has no metadata[{key!r}] (TENANT_METADATA_KEY)"
            )
        return str(tenant)

    def _report(
        self,
        plan: PlannedReport,
        tenant: str | None,
        now: int,
        clock_offset: int = 0,
        *,
        careful: bool = True,
    ) -> str:
        context = {
            "invoice_id": plan.invoice_id,
            "customer_id": plan.customer_id,
            "identifier": plan.identifier,
        }
        # Not careful (a first attempt): usage first, so that a report nobody has touched
        # yet is claimed together with its value in one ledger write. Whatever an earlier
        # attempt recorded still wins below: the general claim hands back the value that
        # may already have reached Stripe.
        value: Decimal | Exception | None = None
        timestamp: int | Exception | None = None
        claim: Claim | None = None
        if not careful:
            value, timestamp = self._measure(plan, tenant, now)
            ready = isinstance(value, Decimal) and isinstance(timestamp, int)
            if ready and (value != 0 or self._policy.report_zero_usage):
                assert isinstance(value, Decimal)
                assert isinstance(timestamp, int)
                claim = self._ledger.claim_new(
                    plan, value, timestamp, now, self._policy.lease_seconds
                )
        fresh = claim is not None
        if claim is None:
            claim = self._ledger.claim(plan, now, self._policy.lease_seconds)
        if claim is None:
            count("ReportsAlreadyRecorded")
            logger.info("report already recorded; not sent again", extra=context)
            return "already_recorded"
        try:
            if not fresh:
                check_resend(plan.identifier, claim.send_started_at, now)
            if claim.value is not None and claim.timestamp is not None:
                value, timestamp = claim.value, claim.timestamp
            elif value is None or timestamp is None:
                value, timestamp = self._measure(plan, tenant, now)
            if isinstance(value, Exception):
                raise value
            if isinstance(timestamp, Exception):
                raise timestamp
            if value == 0 and not self._policy.report_zero_usage:
                self._ledger.mark_skipped(
                    claim, reason="zero usage (REPORT_ZERO_USAGE=false)", now=now
                )
                count("ReportsSkipped")
                return "skipped"
            if not fresh:
                self._ledger.record_value(claim, value, timestamp, now)
            receipt = self._send(plan, value, timestamp)
        except (TransientError, PermanentError) as error:
            self._fail(claim, error, now, context)
            raise
        sent_at = int(self.clock())
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
            extra={**context, "value": str(value), "duplicate": receipt.duplicate},
        )
        return "late" if late else "sent"

    def current_usage(
        self, customer_id: str, meter_event_name: str, start: int, end: int
    ) -> Decimal:
        """The usage source's value now, for reconciliation: usage may arrive after reporting."""
        key = self._policy.tenant_metadata_key
        tenant = None
        if key:
            tenant = (self._gateway.customer(customer_id).get("metadata") or {}).get(key)
        query = UsageQuery(
            customer=customer_id,
            tenant=str(tenant) if tenant else None,
            meter=meter_event_name,
            start=start,
            end=end,
        )
        return usage_value(self._usage.usage(query))

    # --- for operators (`meterbridge report`): the worker's own planning and sending -----

    @property
    def gateway(self) -> StripeGateway:
        """Stripe as the worker reaches it; operator tools read invoices and meters with it."""
        return self._gateway

    def plan_invoice(self, invoice: Invoice) -> list[PlannedReport]:
        """The reports `report_invoice` would make for this invoice (every line page)."""
        return self._plan(invoice)

    def tenant_of(self, invoice: Invoice) -> str | None:
        """The customer's tenant as `report_invoice` reads it (PermanentError if unusable)."""
        return self._tenant(invoice)

    def usage_of(self, plan: PlannedReport, tenant: str | None) -> Decimal:
        """The usage source's value for one planned report, now."""
        return self._usage_of(plan, tenant)

    def report_plan(
        self, invoice: Invoice, plan: PlannedReport, tenant: str | None, now: int
    ) -> str:
        """Claim, send and record one planned report exactly as `report_invoice` does."""
        return self._report(plan, tenant, now, self._clock_offset(invoice, now))

    def with_usage_source(self, usage_source: UsageSource) -> "UsageReporter":
        """This reporter with usage from elsewhere (an operator's correction delta). The
        guard is shared only to read the invoice's clock; it keeps the real usage source."""
        other = UsageReporter(self._gateway, self._ledger, usage_source, self._policy, self.clock)
        other.guard = self.guard
        return other

    def _measure(
        self, plan: PlannedReport, tenant: str | None, now: int
    ) -> tuple[Decimal | Exception, int | Exception]:
        """The report's usage value and timestamp, or the error that prevents each."""
        try:
            timestamp = meter_event_timestamp(plan.period, now, plan.test_clock)
            return self._usage_of(plan, tenant), timestamp
        except (TransientError, PermanentError) as error:
            return error, error

    def _usage_of(self, plan: PlannedReport, tenant: str | None) -> Decimal:
        started = time.perf_counter()
        try:
            raw = self._usage.usage(
                UsageQuery(
                    customer=plan.customer_id,
                    tenant=tenant,
                    meter=plan.meter.event_name,
                    start=plan.period.start,
                    end=plan.period.end,
                )
            )
        finally:
            count(
                "UsageSourceLatency",
                (time.perf_counter() - started) * 1000,
                MetricUnit.Milliseconds,
            )
        return usage_value(raw)

    def _send(self, plan: PlannedReport, value: Decimal, timestamp: int) -> Any:
        started = time.perf_counter()
        try:
            return self._gateway.create_meter_event(
                event_name=plan.meter.event_name,
                payload={
                    plan.meter.customer_payload_key: plan.customer_id,
                    plan.meter.value_payload_key: stripe_value_text(value),
                },
                identifier=plan.identifier,
                timestamp=timestamp,
            )
        finally:
            count("StripeLatency", (time.perf_counter() - started) * 1000, MetricUnit.Milliseconds)

    def _fail(self, claim: Claim, error: Exception, now: int, context: dict[str, str]) -> None:
        failure_class = "permanent" if isinstance(error, PermanentError) else "transient"
        if isinstance(error, SendOutcomeUnknown):
            failure_class = OUTCOME_UNKNOWN
        try:
            self._ledger.mark_failed(claim, failure_class=failure_class, reason=str(error), now=now)
        except TransientError:
            logger.exception("could not record the failure in the ledger", extra=context)
        if failure_class != "transient":
            count("ReportsFailed")
            logger.error("report failed permanently", extra={**context, "reason": str(error)})
        else:
            logger.warning("report failed; will retry", extra={**context, "reason": str(error)})
