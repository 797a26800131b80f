"""SqsQueue: the only code that sends to the event queue."""

from typing import TYPE_CHECKING, Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.adapters.aws_clients import aws_client
from meterbridge.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


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


class SqsQueue:
    """Sends with short timeouts and few retries: the webhook must answer Stripe quickly,
    and a 503 makes Stripe redeliver, so nothing is lost by giving up early."""

    def __init__(self, queue_url: str, client: "SQSClient | None" = None):
        self._queue_url = queue_url
        # A botocore client, the same one boto3.client("sqs") returns, without importing
        # boto3 and s3transfer: ~30 ms of every cold start (bench/webhook.py).
        self._client: Any = client or aws_client(
            "sqs",
            config=Config(
                connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"}
            ),
        )

    def send(self, body: str, attributes: dict[str, str]) -> str:
        try:
            response = self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in attributes.items()
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidMessageContents":
                # SQS refuses some characters JSON allows (e.g. U+FFFF): never retryable.
                raise UnqueueableBody(f"queue refused the body: {exc}") from exc
            raise TransientError(f"queue unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"queue unavailable: {exc}") from exc
        return str(response["MessageId"])
