"""What happens to a message whose work failed: retried, continued, or dead-lettered.

- A permanent failure goes to the dead-letter queue at once (DEAD_LETTER_QUEUE_URL): retrying
  it as it is cannot help, and the DLQ alarm tells a person now, not after maxReceiveCount.
- A transient failure (an outage of Stripe, the usage source, DynamoDB) stays in the queue
  with a growing visibility back-off until shortly before its invoice finalizes (or for
  RETRY_WINDOW_SECONDS where no finalization time applies), then is dead-lettered and
  alarmed: an ordinary outage heals by itself, one that outlasts the grace period is a
  person's (docs/runbook.md, "Retries and the dead-letter queue").
- An invoice too large for one invocation that made progress continues in a fresh message
  at once, without spending one of the queue's receives.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from meterbridge.domain.retries import next_delay, retry_until
from meterbridge.domain.usage_limits import scrub_usage_source_text
from meterbridge.errors import MeterbridgeError
from meterbridge.observability import count, logger
from meterbridge.worker.ports import MessageQueue, MessageVisibility

ATTR_FAILURE = "failure"
ATTR_FAILURE_REASON = "failure_reason"
INVOICE_CREATED = "invoice.created"


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base_seconds: int = 30
    backoff_max_seconds: int = 900
    window_seconds: int = 2700
    deadline_margin_seconds: int = 300
    grace_period_seconds: int = 3600


class FailedMessages:
    def __init__(
        self,
        policy: RetryPolicy,
        *,
        visibility: MessageVisibility | None,
        event_queue: MessageQueue | None,
        dead_letter_queue: MessageQueue | None,
        clock: Callable[[], float] = time.time,
    ):
        self._policy = policy
        self._visibility = visibility
        self._event_queue = event_queue
        self._dead_letters = dead_letter_queue
        self._clock = clock

    def permanent(self, record: SQSRecord, error: Exception) -> str | None:
        """'dead_lettered' when the message went to the DLQ now; None: the caller re-raises
        (no DLQ configured, or it refused), and the queue's redrive takes it later."""
        count("PermanentFailures")
        moved = self._dead_letter(record, "permanent", error)
        logger.error(
            "event failed permanently"
            + ("; moved to the dead-letter queue" if moved else "; retried until the DLQ takes it"),
            extra={"message_id": record.message_id, "reason": _short(error)},
        )
        if moved:
            return "dead_lettered"
        self._delay(record, self._policy.backoff_base_seconds)
        return None

    def transient(
        self, record: SQSRecord, error: Exception, event: dict[str, Any] | None
    ) -> str | None:
        """Back off and retry (None: the caller re-raises), or dead-letter once the retry
        window has passed."""
        attempt = int(record.attributes.approximate_receive_count or 1)
        now = int(self._clock())
        until = retry_until(
            _first_received(record, now),
            finalizes_at=self._finalizes_at(event),
            margin_seconds=self._policy.deadline_margin_seconds,
            window_seconds=self._policy.window_seconds,
        )
        count("TransientFailures")
        context = {"message_id": record.message_id, "attempt": attempt}
        if now >= until and self._dead_letters is not None:
            count("RetriesExhausted")
            logger.error(
                "event still failing when its retries ran out: moved to the dead-letter queue",
                extra={
                    "message_id": record.message_id,
                    "attempt": attempt,
                    "reason": _short(error),
                },
            )
            if self._dead_letter(record, "retries_exhausted", error):
                return "dead_lettered"
        delay = next_delay(
            attempt,
            self._policy.backoff_base_seconds,
            self._policy.backoff_max_seconds,
            now=now,
            until=until,
        )
        logger.warning(
            "event will be retried",
            extra={
                **context,
                "retry_in_seconds": delay,
                "retry_until": until,
                "reason": f"{type(error).__name__}: {_short(error)}",
            },
        )
        self._delay(record, delay)
        return None

    def continue_later(self, record: SQSRecord, error: Exception) -> str | None:
        """The same message again, at once, as a new one (receive count 1): the retry skips
        what this attempt sent. None when there is no queue to send it to."""
        if self._event_queue is None:
            return None
        self._event_queue.send(record.body, _attributes(record))
        count("InvoicesContinued")
        logger.info(
            "invoice too large for one invocation: continues in a new message",
            extra={"message_id": record.message_id, "reason": _short(error)},
        )
        return "continued"

    def _dead_letter(self, record: SQSRecord, failure: str, error: Exception) -> bool:
        if self._dead_letters is None:
            return False
        attributes = {
            **_attributes(record),
            ATTR_FAILURE: failure,
            ATTR_FAILURE_REASON: scrub_usage_source_text(str(error), 250) or failure,
        }
        try:
            self._dead_letters.send(record.body, attributes)
        except MeterbridgeError as problem:  # the DLQ is down: the queue's redrive will do
            logger.warning("could not reach the dead-letter queue", extra={"error": str(problem)})
            return False
        count("DeadLettered")
        return True

    def _delay(self, record: SQSRecord, seconds: int) -> None:
        if self._visibility is not None:
            self._visibility.delay(record.receipt_handle, seconds)

    def _finalizes_at(self, event: dict[str, Any] | None) -> int | None:
        """An invoice.created's finalization time, when it is real time (not a test clock's)."""
        if not event or event.get("type") != INVOICE_CREATED:
            return None
        invoice = (event.get("data") or {}).get("object") or {}
        if not isinstance(invoice, dict) or invoice.get("test_clock"):
            return None
        scheduled = invoice.get("automatically_finalizes_at")
        if isinstance(scheduled, int):
            return scheduled
        created = invoice.get("created")
        return created + self._policy.grace_period_seconds if isinstance(created, int) else None


def _first_received(record: SQSRecord, now: int) -> int:
    sent = record.attributes.sent_timestamp
    return int(sent) // 1000 if sent else now


def _attributes(record: SQSRecord) -> dict[str, str]:
    raw: dict[str, Any] = record.raw_event.get("messageAttributes") or {}
    return {
        name: str(value.get("stringValue"))
        for name, value in raw.items()
        if isinstance(value, dict)
        and value.get("stringValue") is not None
        and name not in (ATTR_FAILURE, ATTR_FAILURE_REASON)
    }


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 2000 else text[:2000] + f"… ({len(text)} characters)"
