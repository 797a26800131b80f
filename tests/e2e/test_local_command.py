"""`meterbridge local` as a user runs it: no flags, then usage fed over HTTP and a renewal."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import stripe

pytestmark = pytest.mark.e2e

DAY = 86_400


@pytest.fixture
def local_process() -> Iterator[dict[str, str]]:
    """`meterbridge local --port 0` in its own process; yields what it printed, by label."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "AWS_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbridge_local.cli", "local", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        for line in process.stdout:
            if "webhook URL" in line:
                printed["webhook"] = line.split()[-1]
            elif line.strip().startswith("Stripe") and " at " in line:
                printed["stripe"] = line.split()[-1]
            elif "usage source" in line:
                printed["usage_source"] = line.split()[2]
            elif line.strip().startswith("curl -X POST"):
                printed["records"] = line.split()[3]
                break
        assert set(printed) == {"webhook", "stripe", "usage_source", "records"}, printed
        yield printed
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()


def _post_json(url: str, document: dict[str, Any]) -> int:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_default_local_stack_reports_usage_fed_over_http(local_process: dict[str, str]):
    stripe_url = local_process["stripe"]
    client = stripe.StripeClient(
        "sk_test_local", base_addresses={"api": stripe_url, "meter_events": stripe_url}
    )
    meter = client.v1.billing.meters.create(
        {
            "display_name": "API requests",
            "event_name": "api_requests",
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.5"),
            "product_data": {"name": "API"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(time.time()) - 32 * DAY})
    customer = client.v1.customers.create({"test_clock": clock.id})
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    period_start = subscription.billing_cycle_anchor
    for at, value in ((period_start + 60, "40"), (period_start + 5 * DAY, "2.5")):
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
            summaries = client.v1.billing.meters.event_summaries.list(
                meter.id,
                {
                    "customer": customer.id,
                    "start_time": period_start - period_start % 60,
                    "end_time": period_end + 60 - period_end % 60,
                },
            ).data
            aggregated = sum(summary.aggregated_value for summary in summaries)
            if aggregated:
                break
        time.sleep(0.2)
    assert period_end is not None, "no renewal draft was created"
    assert aggregated == 42.5
