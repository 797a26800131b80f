"""SQS → worker: each record is one Stripe event; failures come back as batch item failures.

Records of a batch run in a bounded thread pool so Stripe's latency overlaps (reports are
I/O-bound). Every failed record is reported in `batchItemFailures` — also when all of them
fail, so the invocation itself never errors into a whole-batch retry storm. Transient
failures are delayed with a growing visibility timeout; permanent ones are recorded in the
ledger and keep failing until the queue's maxReceiveCount moves them to the dead-letter
queue, where an operator replays them after the fix.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from pydantic import ValidationError

from meterbridge.adapters.confirm_queue import SqsConfirmQueue
from meterbridge.adapters.ledger import Ledger
from meterbridge.adapters.message_visibility import SqsMessageVisibility, backoff_seconds
from meterbridge.adapters.secrets import EnvironmentSecrets, secret_source
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import usage_source_from
from meterbridge.errors import PermanentError, SettingsError
from meterbridge.guard import GuardPolicy, InvoiceGuard
from meterbridge.messages import ATTR_BODY_KIND, CONFIRM, read_body, read_confirm
from meterbridge.observability import logger, metrics, tracer
from meterbridge.reporting import EventOutcome, ReportingPolicy, UsageReporter, count
from meterbridge.settings import WorkerSettings, load_settings


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' SQS BatchProcessor, with records processed by a bounded thread pool.

    Powertools runs records one after another; its success/failure bookkeeping only
    appends to lists, which is safe from threads, so only `process` changes.
    """

    def __init__(self, pool: ThreadPoolExecutor | None):
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)
        self._pool = pool

    def process(self) -> list[tuple[Any, ...]]:
        records = list(self.records)
        if len(records) <= 1 or self._pool is None:
            return super().process()
        return list(self._pool.map(self._process_record, records))


@dataclass
class Worker:
    """Everything one container needs, built once at cold start."""

    reporter: UsageReporter
    visibility: SqsMessageVisibility | None
    concurrency: int
    backoff_base_seconds: int = 30
    backoff_max_seconds: int = 900
    # No report starts later than this before the invocation's timeout: one usage query
    # and one Stripe call (with retries) must still fit, or Lambda would kill the
    # invocation mid-report.
    time_margin_seconds: float = 17.0

    def __post_init__(self) -> None:
        # One pool per container, not per batch: its threads (and what they keep, such as
        # connections) live on across warm invocations.
        self._pool = (
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="record")
            if self.concurrency > 1
            else None
        )

    def handle_batch(
        self, event: dict[str, Any], context: LambdaContext | None = None
    ) -> PartialItemFailureResponse:
        deadline = self._deadline(context)
        processor = ConcurrentBatchProcessor(self._pool)
        with processor(
            records=event.get("Records", []),
            handler=lambda record: self.handle_record(record, deadline),
        ):
            processor.process()
        return processor.response()

    def _deadline(self, context: LambdaContext | None) -> float | None:
        """When reports must stop starting; reports left over fail transiently and their
        retry skips what was sent. Half the remaining time at least, so work goes on."""
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is None:
            return None
        remaining = float(remaining_ms()) / 1000
        return time.monotonic() + max(remaining - self.time_margin_seconds, remaining / 2)

    def handle_record(self, record: SQSRecord, deadline: float | None = None) -> str:
        attempt = int(record.attributes.approximate_receive_count or 1)
        attribute: Any = record.raw_event.get("messageAttributes", {}).get(ATTR_BODY_KIND) or {}
        body_kind = attribute.get("stringValue") or "event"
        try:
            if body_kind == CONFIRM:
                return self._confirm(record)
            try:
                envelope, full_event = read_body(record.body, body_kind)
            except (ValueError, KeyError, TypeError, ValidationError) as error:
                raise PermanentError(
                    f"message {record.message_id} is not a Stripe event"
                ) from error
            outcome: EventOutcome = self.reporter.handle(
                envelope, full_event, retry=attempt > 1, deadline=deadline
            )
        except PermanentError as error:
            count("PermanentFailures")
            logger.error(
                "event failed permanently; it goes to the dead-letter queue after the"
                " queue's maxReceiveCount",
                extra={"message_id": record.message_id, "attempt": attempt, "reason": str(error)},
            )
            self._delay(record, self.backoff_base_seconds)
            raise
        except Exception as error:  # TransientError, and anything unforeseen: retry later
            delay = backoff_seconds(attempt, self.backoff_base_seconds, self.backoff_max_seconds)
            count("TransientFailures")
            logger.warning(
                "event will be retried",
                extra={
                    "message_id": record.message_id,
                    "attempt": attempt,
                    "retry_in_seconds": delay,
                    "reason": f"{type(error).__name__}: {error}",
                },
            )
            self._delay(record, delay)
            raise
        return outcome.result

    def _confirm(self, record: SQSRecord) -> str:
        """A delayed confirmation check the worker queued itself (InvoiceGuard.check)."""
        guard = self.reporter.guard
        try:
            request = read_confirm(record.body)
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise PermanentError(f"message {record.message_id} is no confirm request") from error
        if guard is None:
            return "ignored"
        outcome = guard.check(request, int(self.reporter.clock()))
        return "released" if outcome.released else "checked"

    def _delay(self, record: SQSRecord, seconds: int) -> None:
        if self.visibility is not None:
            self.visibility.delay(record.receipt_handle, seconds)


def build_worker(environ: dict[str, str] | None = None, **overrides: Any) -> Worker:
    """Wire the worker from settings; a missing variable fails here, naming it."""
    settings = load_settings(WorkerSettings, os.environ if environ is None else environ)
    source = secret_source(settings)
    if isinstance(source, EnvironmentSecrets):
        source = EnvironmentSecrets(settings, usage_source_token=settings.usage_source_token)
    secrets = source.stripe_secrets()
    if not secrets.api_key:
        raise SettingsError("the Stripe secret has no api_key")
    # Parameter validation off: the ledger builds every request itself, and DynamoDB
    # validates them anyway; botocore's check cost ~10 % of the worker's CPU per report.
    pool = Config(
        max_pool_connections=max(10, settings.batch_concurrency * 2), parameter_validation=False
    )
    dynamodb: Any = overrides.get("dynamodb") or boto3.client("dynamodb", config=pool)
    gateway = overrides.get("gateway") or StripeGateway(
        secrets.api_key,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_network_retries=settings.stripe_max_network_retries,
        rate_limit_retries=settings.stripe_rate_limit_retries,
        pool_size=settings.batch_concurrency,
        meter_event_api=settings.meter_event_api,
        meter_event_rate=settings.meter_event_rate,
        stream_linger_seconds=settings.stream_linger_seconds,
    )
    usage_source = overrides.get("usage_source") or usage_source_from(
        settings.usage_source,
        timeout_seconds=settings.usage_source_timeout_seconds,
        token=secrets.usage_source_token,
        dynamodb=lambda: dynamodb,
    )
    ledger = overrides.get("ledger") or Ledger(settings.ledger_table, dynamodb)
    clock = overrides.get("clock")
    mode = settings.invoice_guard
    if mode != "off" and not settings.queue_url:
        logger.warning(
            "INVOICE_GUARD needs QUEUE_URL for its delayed checks: only reconciliation and"
            " meter error reports run",
            extra={"invoice_guard": mode},
        )
        mode = "off"
    guard = InvoiceGuard(
        gateway=gateway,
        ledger=ledger,
        queue=overrides.get("confirm_queue")
        or (SqsConfirmQueue(settings.queue_url) if settings.queue_url else None),
        policy=GuardPolicy(
            mode=mode,
            hold_limit_seconds=settings.hold_limit_seconds,
            confirmation_margin_seconds=settings.confirmation_margin_seconds,
            confirm_delay_seconds=settings.confirm_delay_seconds,
            confirm_max_delay_seconds=settings.confirm_max_delay_seconds,
            confirm_max_checks=settings.confirm_max_checks,
            grace_period_seconds=settings.grace_period_seconds,
        ),
    )
    reporter = UsageReporter(
        gateway=gateway,
        ledger=ledger,
        usage_source=usage_source,
        policy=ReportingPolicy(
            billing_reasons=settings.billing_reasons,
            meter_event_names=settings.meter_event_names,
            report_zero_usage=settings.report_zero_usage,
            grace_period_seconds=settings.grace_period_seconds,
            tenant_metadata_key=settings.tenant_metadata_key,
            lease_seconds=settings.report_lease_seconds,
            event_memory_seconds=settings.event_memory_seconds,
        ),
        **({"clock": clock} if clock is not None else {}),
        guard=guard,
    )
    return Worker(
        reporter=reporter,
        visibility=SqsMessageVisibility(settings.queue_url) if settings.queue_url else None,
        concurrency=settings.batch_concurrency,
        backoff_base_seconds=settings.retry_backoff_base_seconds,
        backoff_max_seconds=settings.retry_backoff_max_seconds,
        # One usage query and one Stripe call with the SDK's retries, and the ledger writes.
        time_margin_seconds=settings.usage_source_timeout_seconds
        + settings.stripe_timeout_seconds * (1 + settings.stripe_max_network_retries)
        + 2,
    )


_worker: Worker | None = None


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(
    event: dict[str, Any], context: LambdaContext, worker: Worker | None = None
) -> PartialItemFailureResponse:
    global _worker  # noqa: PLW0603 - built once per container, at cold start
    if worker is None:
        if _worker is None:
            _worker = build_worker()
        worker = _worker
    return worker.handle_batch(event, context)
