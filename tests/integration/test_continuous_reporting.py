"""Continuous reporting end to end (docs/continuous.md): the real worker handler, real SQS and
DynamoDB (moto), the real stripe SDK against the Stripe billing emulator's test clocks.
Mid-period changes and late usage are the continuous rows of tests/support/scenarios.py's
SET_UPS (tests/integration/test_billing_scenarios.py)."""

import collections
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from meterbridge.handlers import worker as worker_module
from meterbridge_local.lambda_runtime import sqs_record
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.lambda_context import FakeLambdaContext
from tests.support.scenarios import CONTINUOUS, DAY, HOUR, Scenario, quiet
from tests.support.worker import WORKER_QUEUE_ARN


@pytest.fixture
def scenario(emulator: StripeEmulator, ledger_table: str) -> Iterator[Scenario]:
    sqs = boto3.client("sqs")
    queue_url = str(sqs.create_queue(QueueName=f"continuous-{uuid.uuid4().hex[:12]}")["QueueUrl"])
    try:
        with quiet():
            yield Scenario(emulator, ledger_table, queue_url, "confirm", env=CONTINUOUS)
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


def accepted(s: Scenario) -> collections.Counter[str]:
    """Meter events the emulator accepted for the customer, per identifier."""
    return collections.Counter(
        event["identifier"]
        for event in s.emulator.meter_events()
        if event["status"] == "accepted" and s.customer in event["payload"].values()
    )


def test_a_month_of_hourly_sweeps_shows_the_usage_so_far_in_stripes_preview(
    scenario: Scenario,
) -> None:
    """Hourly windows for the first hours, then the clock steps four days at a time (the
    hourly sweeps in between would find nothing new: usage is recorded just before each
    step). After every sweep, Stripe's upcoming-invoice preview bills the usage so far;
    the renewal sends nothing more, and the invoice bills exactly the month's usage."""
    s = scenario
    with quiet():
        s.subscribe()
        used = Decimal(0)
        steps = [s.start + h * HOUR for h in (1, 2, 3)] + [
            s.start + d * DAY for d in range(4, 30, 4)
        ]
        for at in steps:
            s.use("25", at - 30 * 60)
            used += 25
            s.advance_to(at)
            s.sweep()
            assert s.preview() == used, f"preview at +{(at - s.start) // HOUR} h"
        s.renew()
        s.finalize()
        outcome = s.outcome("a month of hourly sweeps", str(used))
    assert outcome.right, outcome.row()
    assert not outcome.alarmed, outcome.row()
    # One event per sweep that found usage, and the renewal's true-up (0: nothing was left).
    counts = accepted(s)
    assert sum(counts.values()) == len(steps) + 1
    assert set(counts.values()) == {1}


def test_redelivered_and_replayed_sweeps_count_nothing_twice(scenario: Scenario) -> None:
    s = scenario
    sqs = boto3.client("sqs")
    with quiet():
        s.subscribe()
        s.use("40", s.start + HOUR)
        s.advance_to(s.start + 2 * DAY)
        # The schedule's message, each message it fans out run twice (an SQS redelivery after
        # a lost delete), then the first message replayed from the dead-letter queue later.
        page = json.dumps({"meterbridge_sweep": {"test_clock": s.clock.id}})
        sqs.send_message(QueueUrl=s.queue_url, MessageBody=page)
        seen = 0
        while True:
            messages = sqs.receive_message(
                QueueUrl=s.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                break
            records = [sqs_record(m, WORKER_QUEUE_ARN) for m in messages]
            _handle(s, records)
            _handle(s, records)
            for message in messages:
                sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=message["ReceiptHandle"])
            seen += len(messages)
        assert seen >= 2  # the page and its work
        first = dict(accepted(s))
        s.use("2", s.start + 3 * DAY)
        s.advance_to(s.start + 4 * DAY)
        sqs.send_message(QueueUrl=s.queue_url, MessageBody=page)  # replayed, clock moved on
        s.deliver()
        s.sweep()  # and a sweep at the same time again
        s.renew()
        s.finalize()
        outcome = s.outcome("sweeps redelivered and replayed", "42")
    assert list(first.values()) == [1]
    counts = accepted(s)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == 3  # two windows with usage, and the renewal's true-up
    assert outcome.right, outcome.row()


def _handle(s: Scenario, records: list[dict[str, Any]]) -> None:
    response = worker_module.handler({"Records": records}, FakeLambdaContext(), worker=s.worker)
    assert response["batchItemFailures"] == []


def test_a_correction_after_the_true_up_counts_the_sweeps(scenario: Scenario) -> None:
    """`meterbridge report --force` (the runbook's backfill) sends only what Stripe lacks,
    sweeps' windows included: never their usage a second time."""
    s = scenario
    with quiet():
        s.subscribe()
        s.use("700", s.start + DAY)
        s.advance_to(s.start + 2 * DAY)
        s.sweep()
        s.renew()
        s.use("100", s.start + 3 * DAY)  # reaches the source after the true-up
        s.report_force()
        s.finalize()
        outcome = s.outcome("correction after sweeps", "800")
    assert outcome.right, outcome.row()
