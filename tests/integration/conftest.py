"""Fixtures of the integration suite: the Stripe emulator, a ledger table and a queue on moto."""

import uuid
from collections.abc import Iterator

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge_local.aws import MotoServer
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support import worker as support
from tests.support.ops import Case
from tests.support.worker import USAGE, Billing


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


@pytest.fixture
def case(
    fresh_emulator_faults: StripeEmulator,
    ledger: DynamoDbLedger,
    ledger_table: str,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Case:
    """One customer on a metered price (usage 100), with `meterbridge report`'s environment:
    the worker's own settings, without QUEUE_URL (no invoice guard)."""
    billing = Billing(fresh_emulator_faults)
    meter = billing.meter()
    customer = billing.customer()
    USAGE[(customer["id"], meter["event_name"])] = "100"
    environment = support.worker_environment(fresh_emulator_faults, ledger_table, queue_url)
    for name, value in environment.items():
        if name != "QUEUE_URL":
            monkeypatch.setenv(name, value)
    return Case(
        fresh_emulator_faults,
        billing,
        ledger,
        ledger_table,
        queue_url,
        meter,
        billing.metered_price(meter),
        customer,
    )
