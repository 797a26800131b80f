"""`meterbridge verify` against the Stripe billing emulator, through the real stripe SDK."""

import json
from collections.abc import Iterator

import pytest
import stripe

from meterbridge.handlers import worker as worker_module
from meterbridge_local.cli import main
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support import worker as support
from tests.support.lambda_context import FakeLambdaContext


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(EmulatorConfig()).start() as emu:
        yield emu


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["verify", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(autouse=True)
def test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_verify")
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)


def test_verify_passes_every_step_when_usage_reaches_the_invoice(
    emulator: StripeEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = verify(capsys, "--stripe-api-base", emulator.url, "--timeout", "20")

    assert code == 0, output
    assert output.count("PASS ") == 11
    assert "FAIL" not in output
    assert "aggregated_value 42 while" in output
    assert "quantity 42" in output
    # The report went out as the worker sends it: deterministic identifier, in the period.
    [event] = [e for e in emulator.meter_events() if e["status"] == "accepted"]
    assert event["identifier"].startswith("mb2-")
    assert event["idempotency_key"] == f"{event['identifier']}:a1"
    assert event["payload"]["value"] == "42"


def test_verify_fails_clearly_when_stripe_has_not_counted_the_usage(
    emulator: StripeEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stripe's aggregation is asynchronous: usage that is not aggregated before the draft
    # finalizes is withheld from the invoice (the naive integration's failure).
    emulator.config.aggregation_lag_seconds = 3600

    code, output = verify(
        capsys, "--stripe-api-base", emulator.url, "--timeout", "1", "--usage", "7.5"
    )

    assert code == 1
    assert "FAIL meter event summary shows the usage before finalization" in output
    assert "shows 0, expected 7.5" in output
    assert "Stripe has not counted the usage" in output
    assert "FAIL finalized invoice bills the usage" in output
    assert "billing quantity 0, expected 7.5" in output
    assert "verify failed" in output


def test_verify_refuses_live_keys_and_bad_values(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_nope")
    code, output = verify(capsys)
    assert code == 2
    assert "must be a test-mode key" in output
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_ok")
    code, output = verify(capsys, "--usage", "lots")
    assert (code, "--usage 'lots' is not a number" in output) == (2, True)


def test_verify_leaves_nothing_behind_on_the_stack_it_checks(
    emulator: StripeEmulator, ledger_table: str, queue_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stack receives verify's events too (its webhook is registered with that Stripe):
    they must leave no report, no ledger record and no metric there."""
    code, output = verify(capsys, "--stripe-api-base", emulator.url, "--timeout", "20")
    assert code == 0, output
    client = stripe.StripeClient(
        "sk_test_verify", base_addresses={"api": emulator.url, "meter_events": emulator.url}
    )
    kinds = ("invoice.created", "invoice.finalized", "customer.subscription.updated")
    events = [e for e in client.v1.events.list({"limit": 100}).data if e.type in kinds]
    assert {e.type for e in events} >= {"invoice.created", "invoice.finalized"}
    for event in events:
        support.enqueue(queue_url, json.loads(json.dumps(event.to_dict(), default=str)))
    worker = support.make_worker(emulator, ledger_table, queue_url)

    response = worker_module.handler(
        support.receive_batch(queue_url, len(events)), FakeLambdaContext(), worker=worker
    )

    assert response["batchItemFailures"] == []
    assert "_aws" not in capsys.readouterr().out  # no metric emitted
    ledger = worker.pipeline.ledger
    for event in events:
        subject = event.data.object
        if subject.object == "invoice":
            assert ledger.invoice(subject.id) is None
    assert len([e for e in emulator.meter_events() if e["status"] == "accepted"]) == 1
