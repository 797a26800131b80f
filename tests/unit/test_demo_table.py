"""`make demo`'s result table fits the terminal it is printed on and always keeps the
verdict, the usage and the invoiced quantity."""

import io
from decimal import Decimal

import pytest
from rich.console import Console

from meterbridge_local.demo import InvoiceCheck, Subscriber, render

ANCHOR = 1_792_858_909
RENEWAL = 1_795_537_309


def _checks() -> list[InvoiceCheck]:
    acme = Subscriber("Acme Corp", "acme", "cus_1", "sub_1", "clock_1", ANCHOR)
    globex = Subscriber("Globex", "globex", "cus_2", "sub_2", "clock_1", ANCHOR)
    identifier = f"mb1-si_ERA5K3G6tPwy1Q-{ANCHOR}-{RENEWAL}-r0"
    return [
        InvoiceCheck(acme, (ANCHOR, RENEWAL), Decimal("12000"), "in_1", "open",
                     Decimal("12000"), 6000, 6000, (identifier,),
                     "sent · confirmed · reconciled"),
        InvoiceCheck(globex, (ANCHOR, RENEWAL), Decimal("4310.5"), "in_2", "open",
                     Decimal("8621"), 4311, 2155, (identifier, identifier), "no ledger"),
    ]  # fmt: skip


def _printed(width: int) -> str:
    out = io.StringIO()
    render(Console(file=out, width=width, highlight=False), _checks(), "Renewal invoices")
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120, 180, 200])
def test_the_table_fits_and_keeps_customer_usage_quantity_and_verdict(width: int):
    printed = _printed(width)
    assert max(len(line) for line in printed.splitlines()) <= width, printed
    rows = [line for line in printed.splitlines() if "→" in line]
    assert len(rows) == 2, printed
    assert "Acme Corp" in rows[0]
    assert "12000" in rows[0]
    assert rows[0].rstrip().endswith("OK")
    assert "Globex" in rows[1]
    assert "4310.5" in rows[1]
    assert "8621" in rows[1]
    assert rows[1].rstrip().endswith("WRONG: counted twice")


def test_a_wide_terminal_shows_the_identifiers_and_the_ledger():
    printed = _printed(200)
    assert "mb1-si_ERA5K3G6tPwy1Q" in printed
    assert "sent · confirmed · reconciled" in printed
    assert "left out" not in printed
    assert "identifier reported, ledger, invoice, amount: left out to fit 80 columns" in (
        _printed(80)
    )
