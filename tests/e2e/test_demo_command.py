"""`meterbridge demo` and `meterbridge demo --naive`, each in its own process as a user runs
them (the demo's handlers cache their settings per process). Both run at once."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.e2e


def _start(*args: str) -> subprocess.Popen[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "AWS_"))
    }
    environment["COLUMNS"] = "200"
    return subprocess.Popen(
        [sys.executable, "-m", "meterbridge_local.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
        text=True,
    )


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, tuple[int, str]]]:
    processes = {"meterbridge": _start(), "naive": _start("--naive", "--months", "1")}
    try:
        yield {
            name: (process.wait(timeout=120), process.communicate()[0])
            for name, process in processes.items()
        }
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


PERIOD = re.compile(r"\w{3} \d\d → \w{3} \d\d \d{4}")


def _rows(output: str) -> list[str]:
    """Table rows: lines naming a service period."""
    return [line for line in output.splitlines() if PERIOD.search(line)]


def test_demo_bills_every_renewal_exactly_and_exits_0(runs: dict[str, tuple[int, str]]) -> None:
    code, output = runs["meterbridge"]
    assert code == 0, output
    assert "Renewal invoices — meterbridge" in output
    rows = _rows(output)
    assert len(rows) == 6  # three customers, two renewals
    assert all(row.rstrip().endswith("OK") for row in rows), output
    assert all(" mb2-cus_" in row and " sent " in row for row in rows), output
    assert "All 6 renewal invoices carry exactly the usage from the source" in output
    assert "Stripe delivered Globex's invoice.created a second time (webhook answered 200)" in (
        output
    )


def test_naive_demo_shows_wrong_invoices_and_exits_non_zero(
    runs: dict[str, tuple[int, str]],
) -> None:
    code, output = runs["naive"]
    assert code == 1, output
    assert "naive integration (the anti-pattern)" in output
    rows = _rows(output)
    assert len(rows) == 3
    assert any("WRONG" in row for row in rows), output
    assert "no ledger" in rows[0]
    assert "This is expected" in output
