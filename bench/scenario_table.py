"""`python -m bench scenarios`: every billing set-up of tests/support/scenarios.py in every
INVOICE_GUARD mode, end to end on the Stripe billing emulator, as docs/guard.md's table.

The emulator follows Stripe's documented rules (docs/stripe.md), not meterbridge's code; the
usage source is the judge of what each invoice should bill.
"""

import os
import uuid

import boto3

from bench.report import REPO_ROOT, machine_info, write_section
from meterbridge_local.aws import MotoServer
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support.scenarios import MODES, SET_UPS, Outcome, quiet
from tests.support.scenarios import run as run_scenario

GUARD_DOC = REPO_ROOT / "docs" / "guard.md"
HEADER = (
    "| set-up | `INVOICE_GUARD` | finalized invoice right? | alarmed before finalization"
    " | alarmed after | what the ledger says |"
)


def table(outcomes: list[Outcome]) -> str:
    lines = [HEADER, "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(outcome.row()) + " |" for outcome in outcomes]
    return "\n".join(lines)


def run_all() -> list[Outcome]:
    server = MotoServer().start()
    saved = dict(os.environ)
    os.environ.update(server.environment())
    outcomes: list[Outcome] = []
    try:
        table_name = f"scenarios-{uuid.uuid4().hex[:8]}"
        create_ledger_table(boto3.client("dynamodb"), table_name)
        with StripeEmulator(EmulatorConfig()).start() as emulator:
            for setup in SET_UPS:
                for mode in MODES:
                    with quiet():
                        outcome = run_scenario(setup, emulator, table_name, mode)
                    outcomes.append(outcome)
                    print(f"  {' | '.join(outcome.row())}", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    return outcomes


def run() -> None:
    outcomes = run_all()
    wrongly_reconciled = [o for o in outcomes if o.reconciled and not o.right]
    body = f"""Produced by `make bench` (`python -m bench scenarios`, bench/scenario_table.py) on
{machine_info("stripe", "moto")}. Each row is one customer's set-up run end to end: the real
worker against the Stripe billing emulator (test clock, grace period 1 h) and moto; "right"
means the finalized invoices bill exactly the usage source's value on the meter (and Stripe
will collect them). Alarms are the metrics a CloudWatch alarm watches ({len(outcomes)} runs;
wrong invoices recorded `reconciled`: {len(wrongly_reconciled)}).

{table(outcomes)}
"""
    write_section("scenarios", body, GUARD_DOC)
    print(f"  written to {GUARD_DOC.relative_to(REPO_ROOT)}")
