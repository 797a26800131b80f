"""Fixtures of the integration suite: the Stripe emulator, a ledger table and a queue on moto."""

import uuid
from collections.abc import Iterator

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge_local.aws import MotoServer
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support.worker import Billing


@pytest.fixture(scope="module")
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(EmulatorConfig()).start() as emu:
        yield emu


@pytest.fixture
def fresh_emulator_faults(emulator: StripeEmulator) -> Iterator[StripeEmulator]:
    yield emulator
    emulator.set_faults(error_rate_5xx=0.0, error_rate_429=0.0, latency_seconds=0.0)


@pytest.fixture(scope="module")
def ledger_table(aws: MotoServer) -> str:
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    create_ledger_table(boto3.client("dynamodb"), name)
    return name


@pytest.fixture
def ledger(ledger_table: str) -> DynamoDbLedger:
    return DynamoDbLedger(ledger_table, boto3.client("dynamodb"))


@pytest.fixture
def queue_url(aws: MotoServer) -> str:
    sqs = boto3.client("sqs")
    return str(sqs.create_queue(QueueName=f"worker-{uuid.uuid4().hex[:12]}")["QueueUrl"])


@pytest.fixture
def billing(emulator: StripeEmulator) -> Billing:
    return Billing(emulator)
