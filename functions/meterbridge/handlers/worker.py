"""SQS → worker: each record is one Stripe event, one of the worker's own confirmation
checks, or a continuous-reporting sweep; failures come back as batch item failures.

The one router of the worker: (body kind, event type) → the step that handles it
(functions/meterbridge/worker/). Records of a batch run in a bounded thread pool so
Stripe's latency overlaps (reports are I/O-bound). Every failed record is reported in
`batchItemFailures` — also when all of them fail, so the invocation itself never errors
into a whole-batch retry storm. Transient failures are delayed with a growing visibility
timeout; permanent ones are recorded in the ledger and keep failing until the queue's
maxReceiveCount moves them to the dead-letter queue, where an operator replays them.
"""

import asyncio
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from meterbridge.adapters.aws_clients import (
    LEDGER_CONNECT_TIMEOUT_SECONDS,
    LEDGER_READ_TIMEOUT_SECONDS,
)
from meterbridge.adapters.outbound_http import outbound_deadline
from meterbridge.errors import PermanentError
from meterbridge.messages import (
    ATTR_BODY_KIND,
    CONFIRM,
    SWEEP,
    EventEnvelope,
    is_sweep_body,
    read_body,
    read_confirm,
    read_sweep,
)
from meterbridge.observability import count, logger, metrics, tracer
from meterbridge.worker.composition import Pipeline, build_pipeline, connect, worker_settings
from meterbridge.worker.reporting import EventOutcome, OutOfInvocationTime
from meterbridge.worker.retrying import FailedMessages, RetryPolicy
from meterbridge.worker.subscription_changes import DELETED, UPDATED

INVOICE_CREATED = "invoice.created"
INVOICE_FINALIZED = "invoice.finalized"
# A metered item removed, its price switched or the subscription cancelled mid-period.
SUBSCRIPTION_EVENT_TYPES = frozenset({UPDATED, DELETED})
# Thin events: Stripe's asynchronous verdicts on meter events already accepted with a 200.
METER_ERROR_EVENT_TYPES = frozenset(
    {"v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"}
)


@dataclass
class Worker:
    """Everything one container needs, built once at cold start."""

    pipeline: Pipeline
    concurrency: int
    failed: FailedMessages
    # No report starts later than this before the invocation's timeout: one usage query
    # and one Stripe call (with retries) must still fit, or Lambda would kill the
    # invocation mid-report.
    time_margin_seconds: float = 17.0

    def __post_init__(self) -> None:
        # One pool per container, not per batch: its threads (and what they keep, such as
        # connections) live on across warm invocations.
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="record")

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> "Worker":
        settings, dependencies = pipeline.settings, pipeline.dependencies
        return cls(
            pipeline=pipeline,
            concurrency=settings.batch_concurrency,
            failed=FailedMessages(
                RetryPolicy(
                    backoff_base_seconds=settings.retry_backoff_base_seconds,
                    backoff_max_seconds=settings.retry_backoff_max_seconds,
                    window_seconds=settings.retry_window_seconds,
                    deadline_margin_seconds=settings.retry_deadline_margin_seconds,
                    grace_period_seconds=settings.grace_period_seconds,
                ),
                visibility=dependencies.visibility,
                event_queue=dependencies.event_queue,
                dead_letter_queue=dependencies.dead_letter_queue,
                clock=dependencies.clock,
            ),
            # One usage query and one Stripe call with the SDK's retries, and ledger writes.
            time_margin_seconds=settings.usage_source_timeout_seconds
            + settings.stripe_timeout_seconds * (1 + settings.stripe_max_network_retries)
            + 2,
        )

    def handle_batch(
        self, event: dict[str, Any], context: LambdaContext | None = None
    ) -> PartialItemFailureResponse:
        """Powertools' AsyncBatchProcessor (its public API) runs the records concurrently;
        each record's blocking work runs in the container's thread pool, at most
        `concurrency` at a time."""
        deadline, hard_deadline = self._deadlines(context)

        def work(record: SQSRecord) -> str:
            # Every Stripe and usage-source call of this record ends by the hard deadline.
            with outbound_deadline(hard_deadline):
                return self.handle_record(record, deadline)

        async def handle(record: SQSRecord) -> str:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, work, record)

        processor = AsyncBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
        with processor(records=event.get("Records", []), handler=handle):
            processor.async_process()
        return processor.response()

    def _deadlines(self, context: LambdaContext | None) -> tuple[float | None, float | None]:
        """(when reports must stop starting, when every outbound call must have ended).

        Reports left over fail transiently and their retry skips what was sent; the first
        deadline leaves half the remaining time at least, so work goes on. The second leaves
        one ledger call's worth (to record the outcome) before Lambda's own timeout."""
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is None:
            return None, None
        now, remaining = time.monotonic(), float(remaining_ms()) / 1000
        soft = now + max(remaining - self.time_margin_seconds, remaining / 2)
        hard = now + remaining - LEDGER_CONNECT_TIMEOUT_SECONDS - LEDGER_READ_TIMEOUT_SECONDS - 1
        return soft, max(hard, soft)

    def handle_record(self, record: SQSRecord, deadline: float | None = None) -> str:
        attempt = int(record.attributes.approximate_receive_count or 1)
        attribute: Any = record.raw_event.get("messageAttributes", {}).get(ATTR_BODY_KIND) or {}
        body_kind = attribute.get("stringValue") or "event"
        full_event: dict[str, Any] | None = None
        try:
            if body_kind == CONFIRM:
                return self._confirm(record)
            # The schedule's message carries no attributes: it is known by its body.
            if body_kind == SWEEP or (body_kind == "event" and is_sweep_body(record.body)):
                return self._sweep(record, deadline)
            try:
                envelope, full_event = read_body(record.body, body_kind)
            except (ValueError, KeyError, TypeError, ValidationError) as error:
                raise PermanentError(
                    f"message {record.message_id} is not a Stripe event"
                ) from error
            return self.route(envelope, full_event, retry=attempt > 1, deadline=deadline).result
        except PermanentError as error:
            handled = self.failed.permanent(record, error)
            if handled is None:
                raise
            return handled
        except OutOfInvocationTime as error:
            handled = self.failed.continue_later(record, error) if error.progressed else None
            if handled is None:
                handled = self.failed.transient(record, error, full_event)
            if handled is None:
                raise
            return handled
        except Exception as error:  # TransientError, and anything unforeseen: retry later
            handled = self.failed.transient(record, error, full_event)
            if handled is None:
                raise
            return handled

    def route(
        self,
        envelope: EventEnvelope,
        event: dict[str, Any] | None,
        *,
        retry: bool = False,
        deadline: float | None = None,
    ) -> EventOutcome:
        """One Stripe event → its step. invoice.created events are remembered on their
        invoice's record; the others in the ledger's event memory."""
        pipeline = self.pipeline
        if envelope.type == INVOICE_CREATED:
            return pipeline.reporting.on_invoice_created(
                envelope, event, retry=retry, deadline=deadline
            )
        now = pipeline.now()
        if pipeline.ledger.event_seen(envelope.id, now):
            count("DuplicateEvents")
            return EventOutcome(envelope.id, envelope.type, "duplicate_event")
        if envelope.type == INVOICE_FINALIZED:
            if event is None:
                event = pipeline.stripe.event(envelope.id)
            document = (event.get("data") or {}).get("object")
            if not isinstance(document, dict):
                raise PermanentError(f"event {envelope.id} carries no invoice")
            result = pipeline.reconciliation.reconcile(document, now)
            outcome = EventOutcome(envelope.id, envelope.type, result)
        elif envelope.type in SUBSCRIPTION_EVENT_TYPES:
            if event is None:
                event = pipeline.stripe.event(envelope.id)
            cut = pipeline.subscription_changes.on_event(event)
            outcome = EventOutcome(
                envelope.id, envelope.type, "usage_not_reported" if cut else "checked"
            )
            outcome.reason = (
                "; ".join(
                    f"{c.meter.event_name} of {c.customer_id}: {c.usage} unreported" for c in cut
                )
                or None
            )
        elif envelope.type in METER_ERROR_EVENT_TYPES:
            # The queued body is the thin notification as Stripe signed it (already verified).
            notification = json.dumps(event) if event is not None else None
            matched = pipeline.meter_errors.record(envelope.id, notification, now)
            outcome = EventOutcome(envelope.id, envelope.type, "meter_errors_recorded")
            outcome.reason = f"{matched} report(s) marked failed"
        else:
            logger.info("event type ignored", extra={"stripe_event_type": envelope.type})
            outcome = EventOutcome(envelope.id, envelope.type, "ignored")
        pipeline.ledger.remember_event(
            envelope.id, envelope.type, now, pipeline.reporting_policy.event_memory_seconds
        )
        return outcome

    def _confirm(self, record: SQSRecord) -> str:
        """A delayed confirmation check the worker queued itself (worker/confirmation.py)."""
        try:
            request = read_confirm(record.body)
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise PermanentError(f"message {record.message_id} is no confirm request") from error
        outcome = self.pipeline.confirmation.check(request, self.pipeline.now())
        return "released" if outcome.released else "checked"

    def _sweep(self, record: SQSRecord, deadline: float | None) -> str:
        """A continuous-reporting sweep: a page of subscriptions, or a batch of pairs."""
        try:
            request = read_sweep(record.body)
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise PermanentError(f"message {record.message_id} is no sweep request") from error
        return self.pipeline.sweeps.handle(request, deadline).result


def build_worker(environ: Mapping[str, str] | None = None) -> Worker:
    """The deployed worker: settings from the environment, the real adapters."""
    settings = worker_settings(environ)
    return Worker.from_pipeline(build_pipeline(settings, connect(settings)))


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
