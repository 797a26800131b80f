"""What the operator commands print is for people: tables within the terminal's width, the
clocks named, and the worker's JSON log lines kept out of stdout."""

import json
import re

import pytest

from meterbridge_local.cli import main
from meterbridge_local.ops import render
from tests.support import worker as support
from tests.support.ops import NO_GUARD, Case, identifier

MARKUP = re.compile(r"\x1b\[[0-9;]*m")


def _json_lines(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        found.append(line)
    return found


def test_status_fits_80_columns_and_names_each_clock(
    case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = case.invoice()
    assert case.run_worker(invoice) == set()
    capsys.readouterr()  # the worker's own output

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["status", "invoice", invoice["id"]]) == 0
    output = capsys.readouterr().out

    lines = output.splitlines()
    # Every line fits, but the identifier's own (up to Stripe's 100 characters): operators
    # copy it, so it is never folded.
    assert identifier(invoice) in lines
    assert max(len(MARKUP.sub("", line)) for line in lines if line != identifier(invoice)) <= 80
    assert "status sent" in output
    assert f"{render.DEADLINE} " in output
    assert f"{render.SENT_AT} " in output
    assert "test clock" in output  # the note that says which clock each time is on

    monkeypatch.delenv("COLUMNS")
    assert main(["status", "invoice", invoice["id"]]) == 0
    wide = capsys.readouterr().out
    assert render.DEADLINE in wide
    assert render.SENT_AT in wide  # same labels as table headers


def test_report_keeps_the_workers_json_logs_out_of_stdout(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice = case.invoice()
    support.usage_source_down(True)
    try:
        assert case.run_worker(invoice, **NO_GUARD)  # failed: `report` has work to do
    finally:
        support.usage_source_down(False)
    capsys.readouterr()

    code = main(["report", "--invoice", invoice["id"]])

    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert f"reporting {invoice['id']}" in captured.out
    assert _json_lines(captured.out) == []
    assert _json_lines(captured.err), "the worker's logs should still be there, on stderr"
