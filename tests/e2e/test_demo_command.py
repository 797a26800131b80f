"""`meterbridge demo` and `meterbridge demo --naive`, each in its own process as a user runs
them (the demo's handlers cache their settings per process), and `demo --months 1` on a
real (pseudo-)terminal 80 columns wide, spinner and all. All three run at once."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
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


class Terminal:
    """`meterbridge demo` with stdout and stderr on a pty of `columns` columns."""

    def __init__(self, columns: int, *args: str):
        master, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STRIPE_", "AWS_"))
        }
        environment.update(COLUMNS=str(columns), TERM="xterm-256color")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meterbridge_local.cli", "demo", *args],
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=child,
            env=environment,
        )
        os.close(child)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self._chunks.append(data)

    def wait(self, timeout: float) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        os.close(self._master)
        return code, b"".join(self._chunks).decode("utf-8", errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Z0-9])")


def screen_lines(raw: str) -> list[str]:
    """What the terminal showed, line by line (spinner frames included), escapes removed."""
    return [line for line in re.split(r"\r\n|\r|\n", ESCAPES.sub("", raw)) if line.strip()]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, tuple[int, str]]]:
    processes = {
        "meterbridge": _start(),
        "naive": _start("--naive", "--months", "1"),
        "continuous": _start("--continuous", "--months", "1"),
    }
    terminal = Terminal(80, "--months", "1")
    try:
        results = {
            name: (process.wait(timeout=180), process.communicate()[0])
            for name, process in processes.items()
        }
        results["terminal"] = terminal.wait(timeout=180)
        yield results
    finally:
        terminal.kill()
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
    assert all(" sent " in row for row in rows), output
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


def test_continuous_demo_shows_the_preview_growing_and_the_renewal_sending_the_rest(
    runs: dict[str, tuple[int, str]],
) -> None:
    code, output = runs["continuous"]
    assert code == 0, output
    previews = re.findall(r"invoice preview bills so far: Acme Corp ([\d.]+)", output)
    assert [float(p) for p in previews] == [6000, 9600, 9600], output  # 50 %, 80 %, …
    # … and the last 20 % (timestamped in the period's last second) at renewal.
    assert "the renewal sent only the rest (true-up): Acme Corp 2400," in output, output
    rows = _rows(output)
    assert len(rows) == 3
    assert all(row.rstrip().endswith("OK") for row in rows), output


def test_demo_on_an_80_column_terminal_fits_and_prints_no_log_or_metric_lines(
    runs: dict[str, tuple[int, str]],
) -> None:
    code, raw = runs["terminal"]
    lines = screen_lines(raw)
    assert code == 0, "\n".join(lines)
    for line in lines:
        assert len(line) <= 80, line
    shown = "".join(lines)  # a JSON line printed through rich would be wrapped: join first
    for marker in ('"_aws"', '"CloudWatchMetrics"', '"level":', '"cold_start"'):
        assert marker not in shown, f"a log or metric line reached the terminal: {marker}"
    rows = [line for line in lines if PERIOD_SHORT.search(line) and line.rstrip().endswith("OK")]
    assert len(rows) == 3, "\n".join(lines)  # three customers, one renewal, each verdict
    assert "All 3 renewal invoices carry exactly the usage from the source" in " ".join(lines)
    assert any("logs (the handlers' JSON lines, metrics):" in line for line in lines)


PERIOD_SHORT = re.compile(r"\w{3} \d\d → \w{3} \d\d")
