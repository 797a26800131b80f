"""Where the operator commands point: flags first, then the variables `meterbridge local`
prints (QUEUE_URL, DEAD_LETTER_QUEUE_URL, LEDGER_TABLE, AWS_ENDPOINT_URL, STRIPE_*).

boto3 and botocore are imported by the functions that call AWS, so that parsing a
command line (and `--help`) does not pay for them.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterbridge_local.errors import CliError

QUEUE_URL = "QUEUE_URL"
DEAD_LETTER_QUEUE_URL = "DEAD_LETTER_QUEUE_URL"
LEDGER_TABLE = "LEDGER_TABLE"


class OperatorError(CliError):
    """Bad input or an unreachable target: printed as one line, exit status 2."""


@dataclass(frozen=True)
class AwsTarget:
    """The AWS the commands talk to; `endpoint_url` None means real AWS (or AWS_ENDPOINT_URL,
    which boto3 reads itself)."""

    endpoint_url: str | None = None
    region: str | None = None

    @property
    def is_local(self) -> bool:
        return bool(self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))

    def client(self, service: str, *, retries: int | None = None) -> Any:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        config = Config(retries={"max_attempts": retries, "mode": "standard"}) if retries else None
        try:
            return boto3.client(  # type: ignore[call-overload]
                service, endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        except BotoCoreError as error:  # e.g. no region configured
            raise OperatorError(f"cannot create an AWS {service} client: {error}") from error


def aws_target(args: Any) -> AwsTarget:
    return AwsTarget(
        endpoint_url=getattr(args, "endpoint_url", None) or None,
        region=getattr(args, "region", None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION"),
    )


def setting(args: Any, attribute: str, variable: str, environ: Mapping[str, str]) -> str | None:
    value = getattr(args, attribute, None) or environ.get(variable)
    return value.strip() if value and value.strip() else None


def required(value: str | None, flag: str, variable: str) -> str:
    if not value:
        raise OperatorError(
            f"no {flag}: pass {flag} or export {variable} (`meterbridge local` prints the"
            " export line; for a deployed stack use the stack's outputs)"
        )
    return value


def queue_arn(sqs: Any, queue_url: str) -> str:
    return str(queue_attributes(sqs, queue_url, ["QueueArn"])["QueueArn"])


def queue_attributes(sqs: Any, queue_url: str, names: list[str]) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise OperatorError(f"cannot read queue {queue_url}: {code or error}") from error
    except BotoCoreError as error:
        raise OperatorError(f"cannot reach SQS for {queue_url}: {error}") from error
    return dict(answer.get("Attributes", {}))


def dead_letter_queue_of(sqs: Any, queue_url: str) -> str:
    """The event queue's RedrivePolicy target, so QUEUE_URL alone is enough."""
    from botocore.exceptions import ClientError

    policy = queue_attributes(sqs, queue_url, ["RedrivePolicy"]).get("RedrivePolicy")
    if not policy:
        raise OperatorError(f"queue {queue_url} has no dead-letter queue (no RedrivePolicy)")
    target = str(json.loads(policy)["deadLetterTargetArn"])
    _, _, _, _, account, name = target.split(":", 5)
    try:
        return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
    except ClientError as error:
        raise OperatorError(f"dead-letter queue {target} not found: {error}") from error
