"""Run any test's Stripe billing emulator in contract mode: every request and answer checked
against the project's trimmed copy of Stripe's OpenAPI spec (scripts/trim_openapi.py).

    from tests.support.stripe_contract import contract_checked

    with contract_checked(emulator):      # fails the test on any violation at the end
        ...drive the code under test...

or, for a whole module's emulator, `recorder = enable(emulator)` and later
`assert_conforms(recorder)`. `EmulatorConfig(contract_spec=str(TRIMMED_SPEC))` turns it on
from the start. The emulator's own tests send bad requests on purpose: leave them out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meterbridge_local.stripe_emulator import StripeEmulator
from meterbridge_local.stripe_emulator.contract import Contract, ContractRecorder

TRIMMED_SPEC = Path(__file__).resolve().parent.parent / "fixtures" / "stripe_openapi_trimmed.json"


@functools.cache
def trimmed_contract() -> Contract:
    """Parsed once per test session: the copy is ~250 kB."""
    return Contract.load(TRIMMED_SPEC)


def enable(emulator: StripeEmulator) -> ContractRecorder:
    return emulator.enable_contract(trimmed_contract())


def assert_conforms(recorder: ContractRecorder) -> None:
    violations = recorder.violations()
    assert not violations, "Stripe contract violations:\n" + "\n".join(map(str, violations))


@contextmanager
def contract_checked(emulator: StripeEmulator) -> Iterator[ContractRecorder]:
    recorder = enable(emulator)
    yield recorder
    assert_conforms(recorder)
