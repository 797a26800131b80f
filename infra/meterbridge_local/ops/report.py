"""Re-run reporting for one invoice, and correct a report that was sent with a wrong value.

Plain re-runs go through the worker's own use case (`UsageReporter.report_invoice`): what
is already sent stays sent, what failed or never ran is reported now. A correction
(`--force`) cannot re-send the same identifier — Stripe would call it a duplicate, or,
after 24 h, count it twice — so it sends the *difference* between the usage source's
value now and what the ledger says Stripe already counts, as a new report with the next
revision identifier (`report_identifier(..., revision=n)`). Each revision is claimed in
the ledger like any report, so a retried correction is never sent twice. Deltas only add
up on meters whose formula is `sum` without pre-aggregation windows; others are refused.
"""

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import stripe

from meterbridge.adapters.ledger import DONE_STATUSES, Claim
from meterbridge.adapters.secrets import EnvironmentSecrets, secret_source
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import UsageQuery, UsageSource, usage_source_from
from meterbridge.domain.eligibility import reported_line_meters
from meterbridge.domain.invoices import Invoice, InvoiceLine, Meter, MeteredPrice
from meterbridge.domain.reports import (
    PlannedReport,
    is_late,
    meter_event_timestamp,
    plan_reports,
    report_identifier,
    stripe_value_text,
    usage_value,
)
from meterbridge.errors import PermanentError, SettingsError, TransientError
from meterbridge.reporting import EventOutcome, ReportingPolicy, UsageReporter
from meterbridge.settings import WorkerSettings, load_settings
from meterbridge_local.ledger_reader import LedgerReader, is_rejected
from meterbridge_local.ops.config import OperatorError


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

    @property
    def ok(self) -> bool:
        return self.error is None and all(
            c.result in {"unchanged", "sent", "late"} for c in self.corrections
        )


@dataclass
class ReportingTools:
    """The worker's building blocks, wired from WorkerSettings like the deployed worker."""

    gateway: StripeGateway
    reader: LedgerReader
    usage: UsageSource
    policy: ReportingPolicy
    stripe_client: stripe.StripeClient
    clock: Callable[[], float] = time.time

    def reporter(self) -> UsageReporter:
        return UsageReporter(
            gateway=self.gateway,
            ledger=self.reader.ledger,
            usage_source=self.usage,
            policy=self.policy,
            clock=self.clock,
        )


def reporting_tools(environ: Mapping[str, str] | None = None) -> ReportingTools:
    """Same settings as the worker (LEDGER_TABLE, USAGE_SOURCE, STRIPE_API_KEY or
    STRIPE_SECRET_ARN, TENANT_METADATA_KEY, GRACE_PERIOD_SECONDS, …)."""
    environ = dict(os.environ if environ is None else environ)
    try:
        settings = load_settings(WorkerSettings, environ)
        source = secret_source(settings)
        if isinstance(source, EnvironmentSecrets):
            source = EnvironmentSecrets(settings, usage_source_token=settings.usage_source_token)
        secrets = source.stripe_secrets()
    except (SettingsError, TransientError, PermanentError) as error:
        raise OperatorError(f"worker settings: {error}") from error
    if not secrets.api_key:
        raise OperatorError("the Stripe secret has no api_key")
    dynamodb = boto3.client("dynamodb")
    base = settings.stripe_api_base
    return ReportingTools(
        gateway=StripeGateway(
            secrets.api_key,
            api_base=base,
            timeout_seconds=settings.stripe_timeout_seconds,
            max_network_retries=settings.stripe_max_network_retries,
        ),
        reader=LedgerReader(settings.ledger_table, dynamodb),
        usage=usage_source_from(
            settings.usage_source,
            timeout_seconds=settings.usage_source_timeout_seconds,
            token=secrets.usage_source_token,
            dynamodb=lambda: dynamodb,
        ),
        policy=ReportingPolicy(
            billing_reasons=settings.billing_reasons,
            meter_event_names=settings.meter_event_names,
            report_zero_usage=settings.report_zero_usage,
            grace_period_seconds=settings.grace_period_seconds,
            tenant_metadata_key=settings.tenant_metadata_key,
            lease_seconds=settings.report_lease_seconds,
            event_memory_seconds=settings.event_memory_seconds,
        ),
        stripe_client=stripe.StripeClient(
            secrets.api_key,
            base_addresses={"api": base, "meter_events": base} if base else None,
            max_network_retries=settings.stripe_max_network_retries,
        ),
    )


class InvoiceReRun:
    def __init__(self, tools: ReportingTools):
        self._tools = tools

    def run(self, invoice_id: str, *, force: bool = False) -> ReportRun:
        document = self._invoice(invoice_id)
        invoice = Invoice.model_validate(document)
        if invoice.status != "draft":
            raise OperatorError(
                f"invoice {invoice_id} is {invoice.status!r}, not a draft: Stripe no longer adds"
                " usage to it. Correct it with an invoice item or credit note instead."
            )
        now = int(self._tools.clock())
        run = ReportRun(invoice_id)
        try:
            run.outcome = self._tools.reporter().report_invoice(document, now)
        except (TransientError, PermanentError) as error:
            run.error = f"{type(error).__name__}: {error}"
        if run.outcome is not None and run.outcome.result == "skipped":
            return run
        try:
            plans = self._plans(invoice)
            tenant = self._tenant(invoice) if plans else None
        except (TransientError, PermanentError) as error:
            run.error = run.error or f"{type(error).__name__}: {error}"
            return run
        for plan in plans:
            run.corrections.append(self._compare(plan, tenant, force=force))
        return run

    # --- one (item, period) -------------------------------------------------------------

    def _compare(self, plan: PlannedReport, tenant: str | None, *, force: bool) -> Correction:
        revisions = self._tools.reader.revisions(plan.subscription_item_id, plan.period)
        correction = Correction(
            plan.subscription_item_id, plan.period.start, plan.period.end, None, None, ""
        )
        first = revisions.items[0] if revisions.items else None
        if first is None or (first.get("status") not in DONE_STATUSES and not is_rejected(first)):
            correction.result = "not_reported"
            correction.note = (first or {}).get("last_error") or "no report in the ledger"
            return correction
        correction.counted = revisions.counted_total
        try:
            correction.correct = usage_value(self._tools.usage.usage(self._query(plan, tenant)))
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
        if not force:
            correction.result = "differs"
            correction.note = "run again with --force to send the difference"
            return correction
        refusal = self._delta_refusal(plan.meter)
        if refusal:
            correction.result, correction.note = "refused", refusal
            return correction
        revision_plan = dataclasses.replace(plan, identifier=identifier)
        return self._send_delta(revision_plan, correction)

    def _send_delta(self, plan: PlannedReport, correction: Correction) -> Correction:
        ledger = self._tools.reader.ledger
        now = int(self._tools.clock())
        claim: Claim | None = ledger.claim(plan, now, self._tools.policy.lease_seconds)
        if claim is None:  # another operator's run finished this revision meanwhile
            correction.result, correction.note = "unchanged", "revision already recorded"
            return correction
        assert correction.delta is not None
        value = claim.value if claim.value is not None else correction.delta
        try:
            timestamp = claim.timestamp or meter_event_timestamp(plan.period, now, plan.test_clock)
            ledger.record_value(claim, value, timestamp, now)
            receipt = self._tools.gateway.create_meter_event(
                event_name=plan.meter.event_name,
                payload={
                    plan.meter.customer_payload_key: plan.customer_id,
                    plan.meter.value_payload_key: stripe_value_text(value),
                },
                identifier=plan.identifier,
                timestamp=timestamp,
            )
        except (TransientError, PermanentError) as error:
            failure_class = "permanent" if isinstance(error, PermanentError) else "transient"
            ledger.mark_failed(claim, failure_class=failure_class, reason=str(error), now=now)
            correction.result, correction.note = "failed", str(error)
            return correction
        sent_at = int(self._tools.clock())
        late = is_late(sent_at, plan.finalizes_at)
        ledger.mark_sent(
            claim,
            late=late,
            request_id=receipt.request_id,
            duplicate=receipt.duplicate,
            now=sent_at,
        )
        correction.delta = value
        correction.result = "late" if late else "sent"
        return correction

    def _delta_refusal(self, meter: Meter) -> str | None:
        raw = self._tools.gateway.meter(meter.id)
        formula = (raw.get("default_aggregation") or {}).get("formula")
        if formula != "sum":
            return f"meter {meter.id} aggregates with {formula!r}: a delta cannot correct it"
        if raw.get("event_time_window"):
            return (
                f"meter {meter.id} pre-aggregates per {raw['event_time_window']}: a newer event"
                " replaces older ones, so a delta would replace the total"
            )
        return None

    # --- the worker's planning, from its public pieces ----------------------------------

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        try:
            document: dict[str, Any] = self._tools.stripe_client.v1.invoices.retrieve(
                invoice_id
            ).to_dict()
        except stripe.InvalidRequestError as error:
            raise OperatorError(f"Stripe has no invoice {invoice_id}: {error}") from error
        except stripe.StripeError as error:
            raise OperatorError(f"cannot read invoice {invoice_id}: {error}") from error
        return document

    def _plans(self, invoice: Invoice) -> list[PlannedReport]:
        gateway = self._tools.gateway
        lines = list(invoice.lines)
        if invoice.lines_have_more:
            after = lines[-1].id if lines else None
            lines += [InvoiceLine.from_stripe(x) for x in gateway.invoice_lines(invoice.id, after)]
        meters: dict[str, Meter | None] = {}
        for line in lines:
            price = line.price
            if price is None and line.price_id is not None:
                price = MeteredPrice.from_stripe(gateway.price(line.price_id))
            metered = price is not None and price.is_metered and price.meter_id is not None
            meters[line.id] = (
                Meter.from_stripe(gateway.meter(str(price.meter_id))) if metered and price else None
            )
        selected = reported_line_meters(lines, meters, self._tools.policy.meter_event_names)
        return plan_reports(invoice, selected, self._tools.policy.grace_period_seconds)

    def _tenant(self, invoice: Invoice) -> str | None:
        key = self._tools.policy.tenant_metadata_key
        if key is None:
            return None
        customer = self._tools.gateway.customer(invoice.customer_id)
        tenant = (customer.get("metadata") or {}).get(key)
        if not tenant:
            raise PermanentError(f"customer {invoice.customer_id} has no metadata[{key!r}]")
        return str(tenant)

    @staticmethod
    def _query(plan: PlannedReport, tenant: str | None) -> UsageQuery:
        return UsageQuery(
            customer=plan.customer_id,
            tenant=tenant,
            meter=plan.meter.event_name,
            start=plan.period.start,
            end=plan.period.end,
        )


def _revision_identifier(plan: PlannedReport, revision: int) -> str:
    return report_identifier(plan.subscription_item_id, plan.period, revision)
