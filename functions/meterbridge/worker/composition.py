"""The composition root: the worker's steps wired from WorkerSettings and their dependencies.

The Lambda handler, the operator CLI and the tests all build the pipeline here; only the
dependencies differ (real adapters from the settings, or stand-ins and fakes).
"""

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from meterbridge.adapters.aws_clients import ledger_client_config
from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.adapters.queue import SqsQueue
from meterbridge.adapters.rate_limiter import AdaptiveRateLimiter
from meterbridge.adapters.secrets import worker_secrets
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import UsageSource, usage_source_from
from meterbridge.domain.guard import GuardMode
from meterbridge.domain.usage_limits import parse_usage_value_ceilings
from meterbridge.observability import logger
from meterbridge.settings import WorkerSettings, load_settings
from meterbridge.worker.confirmation import Confirmation
from meterbridge.worker.holding import DraftHold
from meterbridge.worker.invoices import InvoiceReader
from meterbridge.worker.meter_errors import MeterErrors
from meterbridge.worker.planning import InvoicePlanner
from meterbridge.worker.policy import ContinuousPolicy, GuardPolicy, ReportingPolicy
from meterbridge.worker.ports import (
    ConfirmQueue,
    Ledger,
    MessageQueue,
    MessageVisibility,
    Stripe,
    SweepQueue,
)
from meterbridge.worker.reconciliation import InvoiceReconciliation
from meterbridge.worker.reporting import InvoiceReporting
from meterbridge.worker.sending import ReportSender
from meterbridge.worker.subscription_changes import Continuous, SubscriptionChanges
from meterbridge.worker.sweeps import Sweeps
from meterbridge.worker.true_up import TrueUp
from meterbridge.worker.usage import UsageLimits, UsageReader
from meterbridge.worker.windows import Windows


@dataclass(frozen=True)
class Dependencies:
    """What the worker talks to. The queues are None without QUEUE_URL (the event queue:
    checks, back-off, continuations) or DEAD_LETTER_QUEUE_URL."""

    stripe: Stripe
    ledger: Ledger
    usage_source: UsageSource
    confirm_queue: ConfirmQueue | None
    visibility: MessageVisibility | None
    clock: Callable[[], float] = time.time
    event_queue: MessageQueue | None = None
    dead_letter_queue: MessageQueue | None = None
    sweep_queue: SweepQueue | None = None  # the event queue, for a sweep's fan-out


@dataclass(frozen=True)
class Pipeline:
    """The worker's steps, built once per container."""

    settings: WorkerSettings
    dependencies: Dependencies
    reporting: InvoiceReporting
    planner: InvoicePlanner
    usage: UsageReader
    sender: ReportSender
    hold: DraftHold
    confirmation: Confirmation
    reconciliation: InvoiceReconciliation
    meter_errors: MeterErrors
    subscription_changes: SubscriptionChanges
    sweeps: Sweeps
    reporting_policy: ReportingPolicy
    guard_policy: GuardPolicy
    continuous_policy: ContinuousPolicy

    @property
    def ledger(self) -> Ledger:
        return self.dependencies.ledger

    @property
    def stripe(self) -> Stripe:
        return self.dependencies.stripe

    def now(self) -> int:
        return int(self.dependencies.clock())


def worker_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """The worker's settings from the environment; a missing variable fails here, naming it."""
    return load_settings(WorkerSettings, os.environ if environ is None else environ)


def guard_mode(settings: WorkerSettings) -> GuardMode:
    """INVOICE_GUARD as it can run: confirm and hold need QUEUE_URL for their checks."""
    if settings.invoice_guard != "off" and not settings.queue_url:
        return "off"
    return settings.invoice_guard


def connect(settings: WorkerSettings, *, dynamodb: Any = None) -> Dependencies:
    """The real adapters: Stripe, the DynamoDB ledger, the usage source, SQS."""
    secrets = worker_secrets(settings)
    api_key = secrets.api_key or ""  # worker_secrets refused a secret without one
    if dynamodb is None:
        # Connect and read timeouts, three attempts: a ledger call never outlives the
        # invocation (adapters/aws_clients.py).
        config = ledger_client_config(max(10, settings.batch_concurrency * 2))
        dynamodb = boto3.client("dynamodb", config=config)
    ledger = DynamoDbLedger(settings.ledger_table, dynamodb)
    stripe = StripeGateway(
        api_key,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_network_retries=settings.stripe_max_network_retries,
        rate_limit_retries=settings.stripe_rate_limit_retries,
        pool_size=settings.batch_concurrency,
        meter_event_api=settings.meter_event_api,
        meter_event_rate=settings.meter_event_rate,
        stream_linger_seconds=settings.stream_linger_seconds,
        on_stream_request=lambda key, identifiers: ledger.record_stream_request(
            key, identifiers, int(time.time())
        ),
    )
    usage_source = usage_source_from(
        settings.usage_source,
        timeout_seconds=settings.usage_source_timeout_seconds,
        token=secrets.usage_source_token,
        dynamodb=lambda: dynamodb,
        max_answer_bytes=settings.usage_source_max_answer_bytes,
        pool_size=settings.batch_concurrency,
    )
    queue = SqsQueue(settings.queue_url, attempts=3) if settings.queue_url else None
    dead_letters = settings.dead_letter_queue_url
    return Dependencies(
        stripe=stripe,
        ledger=ledger,
        usage_source=usage_source,
        confirm_queue=queue,
        visibility=queue,
        event_queue=queue,
        dead_letter_queue=SqsQueue(dead_letters, attempts=3) if dead_letters else None,
        sweep_queue=queue,
    )


def build_pipeline(settings: WorkerSettings, dependencies: Dependencies) -> Pipeline:
    mode = guard_mode(settings)
    if mode != settings.invoice_guard:
        logger.warning(
            "INVOICE_GUARD needs QUEUE_URL for its delayed checks: only reconciliation and"
            " meter error reports run",
            extra={"invoice_guard": settings.invoice_guard},
        )
    reporting_policy = ReportingPolicy(
        billing_reasons=settings.billing_reasons,
        meter_event_names=settings.meter_event_names,
        report_zero_usage=settings.report_zero_usage,
        grace_period_seconds=settings.grace_period_seconds,
        tenant_metadata_key=settings.tenant_metadata_key,
        lease_seconds=settings.report_lease_seconds,
        event_memory_seconds=settings.event_memory_seconds,
    )
    guard_policy = GuardPolicy(
        mode=mode,
        hold_limit_seconds=settings.hold_limit_seconds,
        confirmation_margin_seconds=settings.confirmation_margin_seconds,
        confirm_delay_seconds=settings.confirm_delay_seconds,
        confirm_max_delay_seconds=settings.confirm_max_delay_seconds,
        confirm_max_checks=settings.confirm_max_checks,
        grace_period_seconds=settings.grace_period_seconds,
    )
    continuous_policy = ContinuousPolicy(
        cadence=settings.continuous_reporting,
        settle_seconds=settings.sweep_settle_minutes * 60,
        grace_period_seconds=settings.grace_period_seconds,
        meter_event_names=settings.meter_event_names,
        tenant_metadata_key=settings.tenant_metadata_key,
        event_memory_seconds=settings.event_memory_seconds,
    )
    stripe, ledger, clock = dependencies.stripe, dependencies.ledger, dependencies.clock
    invoices = InvoiceReader(stripe)
    limits = UsageLimits(
        ceilings=parse_usage_value_ceilings(settings.usage_value_ceiling),
        allow_negative=settings.allow_negative_usage,
    )
    usage = UsageReader(dependencies.usage_source, stripe, settings.tenant_metadata_key, limits)
    planner = InvoicePlanner(stripe, invoices, reporting_policy)
    sender = ReportSender(ledger, stripe, usage, reporting_policy, clock)
    hold = DraftHold(stripe, ledger, invoices, guard_policy)
    # A fixed pace: growth 0, and no 429 ever reaches it (the gateway's limiter handles those).
    pace = AdaptiveRateLimiter(settings.sweep_meter_event_rate, growth_per_second=0.0)
    windows = Windows(ledger, usage, sender, continuous_policy, clock=clock, pace=pace)
    continuous = Continuous(ledger, windows, clock) if continuous_policy.trues_up else None
    confirmation = Confirmation(
        stripe,
        ledger,
        queue=dependencies.confirm_queue,
        invoices=invoices,
        planner=planner,
        hold=hold,
        policy=guard_policy,
    )
    return Pipeline(
        settings=settings,
        dependencies=dependencies,
        reporting=InvoiceReporting(
            stripe=stripe,
            ledger=ledger,
            invoices=invoices,
            planner=planner,
            usage=usage,
            sender=sender,
            hold=hold,
            confirmation=confirmation,
            policy=reporting_policy,
            guarded=guard_policy.on,
            clock=clock,
            true_up=TrueUp(ledger, windows, usage) if continuous_policy.trues_up else None,
        ),
        planner=planner,
        usage=usage,
        sender=sender,
        hold=hold,
        confirmation=confirmation,
        reconciliation=InvoiceReconciliation(ledger, planner, usage, hold),
        meter_errors=MeterErrors(stripe, ledger),
        subscription_changes=SubscriptionChanges(stripe, usage, continuous),
        sweeps=Sweeps(
            stripe,
            ledger,
            dependencies.sweep_queue,
            windows,
            policy=continuous_policy,
            clock=clock,
        ),
        reporting_policy=reporting_policy,
        guard_policy=guard_policy,
        continuous_policy=continuous_policy,
    )
