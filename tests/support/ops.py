"""Operator CLI test helpers: run `meterbridge …` in-process, event queues with dead letters,
and a case of one customer whose invoices real worker runs wrote into the ledger."""

import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge_local.cli import main
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support import worker as support
from tests.support.guard import receive, run_records
from tests.support.worker import Billing

NO_GUARD = {"INVOICE_GUARD": "off"}  # delayed confirmations are the invoice guard's tests


@dataclass
class Case:
    emulator: StripeEmulator
    billing: Billing
    ledger: DynamoDbLedger
    table: str
    queue: str
    meter: dict[str, Any]
    price: dict[str, Any]
    customer: dict[str, Any]

    def invoice(self, **overrides: Any) -> dict[str, Any]:
        return self.billing.renewal(self.customer["id"], [self.price], **overrides)

    def run_worker(self, invoice: dict[str, Any], **env: str) -> set[str]:
        support.enqueue(self.queue, support.invoice_created(invoice))
        worker = support.make_worker(self.emulator, self.table, self.queue, env={**NO_GUARD, **env})
        return run_records(worker, self.queue, receive(self.queue))

    def events(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.billing.meter_events(customer=self.customer["id"])
            if e["status"] == "accepted"
        ]


def identifier(invoice: dict[str, Any], revision: int = 0) -> str:
    return support.report_id(invoice, revision=revision)


def counted_by_stripe(case: Case, invoice: dict[str, Any]) -> Decimal:
    """What Stripe's meter event summary shows for the invoice's first line's period."""
    period = invoice["lines"]["data"][0]["period"]
    summaries = case.billing.client.v1.billing.meters.event_summaries.list(
        case.meter["id"],
        {
            "customer": case.customer["id"],
            "start_time": period["start"] // 60 * 60,
            "end_time": -(-period["end"] // 60) * 60,
        },
    )
    return sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))


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


def wait_for_messages(queue_url: str, count: int, timeout: float) -> bool:
    """True once `queue_url` holds at least `count` messages (visible or not)."""
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if sum(int(value) for value in attributes.values()) >= count:
            return True
        time.sleep(0.05)
    return False
