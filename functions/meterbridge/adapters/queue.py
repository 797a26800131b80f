"""SqsQueue: the only code that talks to SQS, for both functions.

The webhook sends Stripe's events; the worker sends itself delayed confirmation checks
(SQS DelaySeconds is the invoice guard's timer: a check waiting inside the Lambda would
bill idle time) and pushes failed messages' retries into the future (a longer visibility
timeout per attempt turns the queue into a growing back-off without a scheduler).

Every client comes from the one botocore session (adapters/aws_clients.py), with short
timeouts and few retries: the webhook must answer Stripe quickly (a 503 makes Stripe
redeliver, so nothing is lost by giving up early), and the worker's callers retry.
"""

from typing import TYPE_CHECKING, Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.adapters.aws_clients import aws_client
from meterbridge.domain.guard import SQS_MAX_DELAY_SECONDS
from meterbridge.domain.retries import SQS_MAX_VISIBILITY_SECONDS
from meterbridge.errors import PermanentError, TransientError
from meterbridge.messages import ConfirmRequest, confirm_attributes, confirm_body
from meterbridge.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


SQS_BATCH_LIMIT = 10  # entries per SendMessageBatch


class UnqueueableBody(PermanentError):
    """SQS will never take this body as it is (characters outside its allowed set)."""


class EventQueue(Protocol):
    def send(self, body: str, attributes: dict[str, str]) -> str: ...


def message_size(body: str, attributes: dict[str, str]) -> int:
    """Bytes SQS counts against MaximumMessageSize: body plus each attribute's name, type, value."""
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(b"String") + len(value.encode())
    return size


def _attributes(attributes: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


class SqsQueue:
    def __init__(self, queue_url: str, client: "SQSClient | None" = None, *, attempts: int = 2):
        self._queue_url = queue_url
        # A botocore client, the same one boto3.client("sqs") returns, without importing
        # boto3 and s3transfer: ~30 ms of every cold start (bench/webhook.py).
        self._client: Any = client or aws_client(
            "sqs",
            config=Config(
                connect_timeout=2,
                read_timeout=3,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        )

    def send(self, body: str, attributes: dict[str, str], delay_seconds: int = 0) -> str:
        try:
            response = self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes=_attributes(attributes),
                **({"DelaySeconds": delay_seconds} if delay_seconds else {}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidMessageContents":
                # SQS refuses some characters JSON allows (e.g. U+FFFF): never retryable.
                raise UnqueueableBody(f"queue refused the body: {exc}") from exc
            raise TransientError(f"queue unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"queue unavailable: {exc}") from exc
        return str(response["MessageId"])

    def send_batch(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Send many messages, ten a request (SendMessageBatch, authorised by the same
        sqs:SendMessage permission): a sweep's fan-out. Any entry SQS did not take fails the
        whole call transiently; its retry resends all, which the receivers tolerate (a sweep's
        messages are idempotent)."""
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            entries = [
                {"Id": str(index), "MessageBody": body, "MessageAttributes": _attributes(attrs)}
                for index, (body, attrs) in enumerate(messages[start : start + SQS_BATCH_LIMIT])
            ]
            try:
                answer = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                raise TransientError(f"queue unavailable: {exc}") from exc
            if answer.get("Failed"):
                raise TransientError(f"queue refused {len(answer['Failed'])} message(s)")

    def schedule(self, request: ConfirmRequest, delay_seconds: int) -> None:
        """A confirmation check, visible after `delay_seconds` (SQS allows at most 15 min).
        Raises TransientError: the caller's message is retried rather than the check lost."""
        delay = max(0, min(int(delay_seconds), SQS_MAX_DELAY_SECONDS))
        try:
            self.send(confirm_body(request), confirm_attributes(request), delay)
        except UnqueueableBody as error:  # our own JSON: cannot happen, but never lose it
            raise TransientError(f"could not queue the confirmation check: {error}") from error

    def delay(self, receipt_handle: str, seconds: int) -> None:
        """Push a received message's next delivery `seconds` out. Failing only means an
        earlier retry, so errors are logged, not raised."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=min(seconds, SQS_MAX_VISIBILITY_SECONDS),
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not delay the message's retry", extra={"error": str(error)})
