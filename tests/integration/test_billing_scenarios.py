"""Issue 7's set-ups, each end to end through the real stripe SDK against the emulator: the
finalized invoice bills exactly the usage source's value, or an alarm names it — before it
finalizes wherever Stripe leaves time — and a wrong invoice is never recorded reconciled."""

import pytest

from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.scenarios import SET_UPS, SetUp, quiet, run

# The mode each set-up is tested in here (bench/scenario_table.py runs every mode).
MODES = {"hold_released_late": "hold"}


@pytest.mark.parametrize("setup", SET_UPS, ids=[s.name for s in SET_UPS])
def test_every_invoice_is_right_or_alarmed_and_never_wrongly_reconciled(
    setup: SetUp, emulator: StripeEmulator, ledger_table: str
) -> None:
    with quiet():
        outcome = run(setup, emulator, ledger_table, MODES.get(setup.name, "confirm"))
    row = " | ".join(outcome.row())
    assert outcome.right or outcome.alarmed, row
    assert not (outcome.reconciled and not outcome.right), row
    if not outcome.right and not outcome.finalized_at_change:
        assert outcome.alarms_before, f"not alarmed before finalization: {row}"
    if outcome.right:
        assert not outcome.alarmed, f"a right invoice raised alarms: {row}"
    if setup.name.startswith("continuous"):
        # Sweeps put the usage in Stripe before the change or renewal (docs/continuous.md).
        assert outcome.right, row
