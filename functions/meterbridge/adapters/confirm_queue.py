"""Delayed confirmation checks on the event queue: SQS DelaySeconds is the guard's timer.

A check that waits inside the Lambda would bill idle time and hold a batch hostage; a
message that becomes visible later costs nothing until then. SQS caps a delay at 15 min,
so longer waits are several hops (domain.guard.next_check_delay).
"""

from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.domain.guard import SQS_MAX_DELAY_SECONDS
from meterbridge.errors import TransientError
from meterbridge.messages import ConfirmRequest, confirm_attributes, confirm_body

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class ConfirmQueue(Protocol):
    def schedule(self, request: ConfirmRequest, delay_seconds: int) -> None: ...


class SqsConfirmQueue:
    def __init__(self, queue_url: str, client: "SQSClient | None" = None):
        self._queue_url = queue_url
        self._client: Any = client or boto3.client(
            "sqs", config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 3})
        )

    def schedule(self, request: ConfirmRequest, delay_seconds: int) -> None:
        """Raises TransientError: the caller's message is retried rather than the check lost."""
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=confirm_body(request),
                DelaySeconds=max(0, min(int(delay_seconds), SQS_MAX_DELAY_SECONDS)),
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in confirm_attributes(request).items()
                },
            )
        except (BotoCoreError, ClientError) as error:
            raise TransientError(f"could not queue the confirmation check: {error}") from error
