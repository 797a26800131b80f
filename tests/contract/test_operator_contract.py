"""The operator CLI's own Stripe calls (`meterbridge verify`: clocks, customers, meters, prices,
subscriptions, invoices, summaries, clean-up) fit Stripe's spec too."""

from __future__ import annotations

import pytest

from meterbridge_local.cli import main
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support.stripe_contract import contract_checked


def test_verify_makes_only_requests_stripe_defines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_verify_contract")
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    with StripeEmulator(EmulatorConfig()).start() as emu, contract_checked(emu) as recorder:
        code = main(["verify", "--stripe-api-base", emu.url, "--timeout", "20"])
        output = capsys.readouterr()
        assert code == 0, output.out + output.err
        assert "POST /v1/subscriptions" in recorder.operations()
