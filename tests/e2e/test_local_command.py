"""`meterbridge local` as a user runs it: no flags, then usage fed over HTTP and a renewal;
`--seed` and its printed steps; a restart from a shell that sourced the export line; and a
clear one-line refusal of every bad input before anything starts."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

import pytest
import stripe

from tests.support.stripe_objects import new_meter, new_metered_price

pytestmark = pytest.mark.e2e

DAY = 86_400


def _environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "AWS_"))
    }
    return {**environment, **extra}


# Each process's stderr, in a file (a pipe nobody reads would fill up and block it): read
# only when a stop times out, with the threads' tracebacks faulthandler writes there.
_STDERR: dict[int, IO[str]] = {}


def _local(*args: str, environment: dict[str, str] | None = None) -> subprocess.Popen[str]:
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by _stop)
    process = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "meterbridge_local.cli",
            "local",
            "--port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=environment or _environment(),
        text=True,
    )
    _STDERR[process.pid] = stderr
    return process


def _read_until(process: subprocess.Popen[str], last: str) -> list[str]:
    """Lines printed up to the one containing `last` (the process keeps running). What it
    prints later (its handlers' logs) is read and dropped: a full pipe would block them."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if last in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return lines
    raise AssertionError(f"exited before printing {last!r}: {lines}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    stderr = _STDERR.pop(process.pid)
    try:
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired as late:
            process.send_signal(signal.SIGABRT)  # faulthandler: every thread's traceback
            process.wait(timeout=10)
            stderr.seek(0)
            raise AssertionError(
                f"no exit 30 s after Ctrl-C; its threads:\n{stderr.read()[-6000:]}"
            ) from late
        assert code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()


def _labelled(lines: list[str]) -> dict[str, str]:
    printed: dict[str, str] = {}
    for line in lines:
        if "webhook URL" in line:
            printed["webhook"] = line.split()[-1]
        elif line.strip().startswith("Stripe") and " at " in line:
            printed["stripe"] = line.split()[-1]
        elif "usage source" in line:
            printed["usage_source"] = line.split()[2]
        elif line.strip().startswith("export "):
            printed["export"] = line.strip()
        elif line.strip().startswith("curl -X POST"):
            printed["records"] = line.split()[3]
            printed["records_example"] = line
    return printed


def _exported(export_line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in export_line.split()[1:])


@pytest.fixture(scope="module")
def local_process() -> Iterator[dict[str, str]]:
    """`meterbridge local --port 0` in its own process, shared by the module's tests (each
    uses its own Stripe objects); yields what it printed, by label."""
    process = _local()
    try:
        printed = _labelled(_read_until(process, "curl -X POST"))
        assert {"webhook", "stripe", "usage_source", "records", "export"} <= set(printed)
        yield printed
    finally:
        _stop(process)


def _post_json(url: str, document: dict[str, Any]) -> int:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _client(stripe_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_local", base_addresses={"api": stripe_url, "meter_events": stripe_url}
    )


def _aggregated(client: stripe.StripeClient, meter_id: str, customer: str, period: Any) -> float:
    start, end = period
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": customer,
            "start_time": start - start % 60,
            "end_time": end + 60 - end % 60,
        },
    ).data
    return sum(summary.aggregated_value for summary in summaries)


def test_default_local_stack_reports_usage_fed_over_http(local_process: dict[str, str]):
    client = _client(local_process["stripe"])
    meter = new_meter(client, event_name="api_requests")  # the name the usage is fed under
    price = new_metered_price(client, meter.id)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(time.time()) - 32 * DAY})
    customer = client.v1.customers.create({"test_clock": clock.id})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    period_start = subscription.billing_cycle_anchor
    # The printed example's `at` lies inside this period (the README's used not to).
    example = json.loads(local_process["records_example"].split("-d ", 1)[1].strip("'"))
    assert period_start <= example["at"] < period_start + 28 * DAY
    for at, value in ((example["at"], "40"), (period_start + 5 * DAY, "2.5")):
        record = {"account": customer.id, "meter": "api_requests", "at": at, "value": value}
        assert _post_json(local_process["records"], record) == 201

    renewal = client.v1.invoices.list({"customer": customer.id}).data
    assert [invoice.billing_reason for invoice in renewal] == ["subscription_create"]
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": period_start + 31 * DAY})

    # The renewal's invoice.created travels webhook → SQS → worker → meter event.
    deadline = time.monotonic() + 60
    aggregated = None
    period_end = None
    while time.monotonic() < deadline:
        drafts = [
            invoice
            for invoice in client.v1.invoices.list({"customer": customer.id}).data
            if invoice.billing_reason == "subscription_cycle"
        ]
        if drafts:
            period_end = drafts[0].period_end
            aggregated = _aggregated(client, meter.id, customer.id, (period_start, period_end))
            if aggregated:
                break
        time.sleep(0.2)
    assert period_end is not None, "no renewal draft was created"
    assert aggregated == 42.5


def test_a_shell_that_sourced_the_export_line_starts_local_again(
    local_process: dict[str, str],
):
    """The export line carries the emulator's key and URLs of a stack that may be gone:
    a second start from that shell must start its own emulator, not ask for a secret."""
    environment = _environment(**_exported(local_process["export"]))
    assert environment["STRIPE_API_KEY"].startswith("sk_test_")
    process = _local(environment=environment)
    try:
        printed = _labelled(_read_until(process, "curl -X POST"))
        assert printed["stripe"] != local_process["stripe"]  # a fresh emulator
        assert printed["webhook"] != local_process["webhook"]
    finally:
        _stop(process)


def test_seed_bills_the_first_customer_exactly_as_its_printed_steps_say():
    process = _local("--seed")
    try:
        lines = _read_until(process, "invoice.finalized follows")
        printed = _labelled(lines)
        text = "\n".join(lines)
        clock = re.search(r"test clock  (clock_\w+)", text)
        customer = re.search(r"customer    (cus_\w+)", text)
        meter = re.search(r"meter       (mtr_\w+)", text)
        assert clock, text
        assert customer, text
        assert meter, text
        renew_at, finalize_at = (int(n) for n in re.findall(r"frozen_time=(\d+)", text))
        assert "Two monthly renewals of this clock fit Stripe's 35-day meter event window" in text
        assert "CONFIRM_DELAY_SECONDS" in text
        client = _client(printed["stripe"])
        [subscription] = client.v1.subscriptions.list({"customer": customer[1]}).data
        period = (subscription.billing_cycle_anchor, renew_at - 60)

        # Step 1, as printed: renew; the worker reports the 1200 fed into period 1.
        client.v1.test_helpers.test_clocks.advance(clock[1], {"frozen_time": renew_at})
        deadline = time.monotonic() + 60
        while _aggregated(client, meter[1], customer[1], period) != 1200:
            assert time.monotonic() < deadline, "the seeded usage was never reported"
            time.sleep(0.2)

        # Step 3: past the grace period the invoice finalizes with the usage on its line.
        client.v1.test_helpers.test_clocks.advance(clock[1], {"frozen_time": finalize_at})
        deadline = time.monotonic() + 60
        while True:
            [renewal] = [
                invoice
                for invoice in client.v1.invoices.list({"customer": customer[1]}).data
                if invoice.billing_reason == "subscription_cycle"
            ]
            if renewal.status == "open":
                break
            assert time.monotonic() < deadline, f"renewal still {renewal.status}"
            time.sleep(0.2)
        [line] = client.v1.invoices.line_items.list(renewal.id).data
        assert Decimal(str(line.quantity_decimal or line.quantity)) == 1200

        # What the printed `status` command shows, from a shell with the export line.
        environment = _environment(**_exported(printed["export"]), COLUMNS="80")
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run(
                [sys.executable, "-m", "meterbridge_local.cli", "status", "customer",
                 customer[1]],
                capture_output=True, text=True, env=environment, timeout=60, check=False,
            )  # fmt: skip
            if "reconciled" in status.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "status sent · value 1200" in status.stdout, status.stdout + status.stderr
        assert "reconciliation reconciled" in status.stdout
        # Every line fits, but the report identifier's own (never folded: operators copy it).
        lines = [line for line in status.stdout.splitlines() if not line.startswith("mb2-")]
        assert max(len(line) for line in lines) <= 80
    finally:
        _stop(process)


@pytest.mark.parametrize(
    ("arguments", "variables", "expected"),
    [
        (["--usage-source", "notaurl"], {}, "'notaurl' is not a usage source: give an http(s)://"),
        (["--port", "99999"], {}, "99999 is not a port number: use 1-65535, or 0"),
        ([], {"STRIPE_API_KEY": "pk_test_x"}, "is a publishable key"),
        ([], {"STRIPE_API_KEY": "garbage"}, "is not a Stripe test-mode secret key"),
        ([], {"STRIPE_API_KEY": "sk_live_abc"}, "is a live key"),
        (["--param", "NoEquals"], {}, "--param wants NAME=VALUE"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_anything_starts(
    arguments: list[str], variables: dict[str, str], expected: str
):
    result = subprocess.run(
        [sys.executable, "-m", "meterbridge_local.cli", "local", *arguments],
        capture_output=True,
        text=True,
        env=_environment(**variables),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # nothing started, nothing printed as running
    [line] = result.stderr.splitlines()
    assert line.startswith("meterbridge local")
    assert expected in line
    if "KEY" in str(variables):
        assert "sk_test_" in line  # what a valid key looks like
        assert "rk_test_" in line


def test_a_busy_port_is_one_line_and_says_what_to_do(local_process: dict[str, str]):
    port = local_process["webhook"].split(":")[2].split("/")[0]
    result = subprocess.run(
        [sys.executable, "-m", "meterbridge_local.cli", "local", "--port", port],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"cannot listen on port {port}" in line
    assert "--port" in line
