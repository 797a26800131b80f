"""Operator CLI test helpers: run `meterbridge …` in-process, event queues with dead letters."""

import json
import uuid

import boto3
import pytest

from meterbridge_local.cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit status and everything printed (stdout and stderr) of one `meterbridge` command."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def queue_with_dead_letters(name: str, max_receive_count: int) -> tuple[str, str]:
    """(event queue URL, dead-letter queue URL), wired by a RedrivePolicy as in template.yaml."""
    sqs = boto3.client("sqs")
    suffix = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
    queue = sqs.create_queue(
        QueueName=f"{name}-{suffix}", Attributes={"RedrivePolicy": json.dumps(redrive)}
    )["QueueUrl"]
    return str(queue), str(dlq)
