"""Retry back-off for queue messages: push a failed message's next delivery into the future.

SQS redelivers a batch item failure when its visibility timeout ends; lengthening it per
attempt (ApproximateReceiveCount) turns the queue into a growing back-off without a
scheduler. Failing to change it only means an earlier retry, so errors are logged, not raised.
"""

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_MAX_VISIBILITY_SECONDS = 43_200


def backoff_seconds(attempt: int, base: int, ceiling: int) -> int:
    """base, 2·base, 4·base … for attempts 1, 2, 3 …, capped (and within SQS's 12 h)."""
    exponent = max(attempt, 1) - 1
    return int(min(base * 2 ** min(exponent, 20), ceiling, SQS_MAX_VISIBILITY_SECONDS))


class SqsMessageVisibility:
    def __init__(self, queue_url: str, client: "SQSClient | None" = None):
        self._queue_url = queue_url
        self._client: Any = client or boto3.client(
            "sqs", config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2})
        )

    def delay(self, receipt_handle: str, seconds: int) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not delay the message's retry", extra={"error": str(error)})
