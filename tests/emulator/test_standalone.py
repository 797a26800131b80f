"""The emulator as its own process: the real SDK reaches it, and it stops when asked."""

import subprocess
import sys

import pytest
import requests
import stripe

from tests.support.stripe_contract import TRIMMED_SPEC


def test_standalone_emulator_serves_the_sdk_and_stops_on_stdin_eof():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterbridge_local.stripe_emulator",
            "--until-stdin-closes",
            "--grace-period-seconds",
            "600",
            "--contract-spec",
            str(TRIMMED_SPEC),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": url})
        customer = client.v1.customers.create({"metadata": {"tenant": "acme"}})
        fetched = client.v1.customers.retrieve(customer.id)
        assert fetched.metadata is not None
        assert fetched.metadata["tenant"] == "acme"
        # Another process drives its faults and reads its contract findings over HTTP.
        rule = {"path": "/v1/customers", "count": 1, "status": 503}
        requests.post(f"{url}/_emulator/faults/fail_next", json=rule, timeout=5)
        with pytest.raises(stripe.APIError):
            client.v1.customers.list()
        contract = requests.get(f"{url}/_emulator/contract", timeout=5).json()
        assert contract["enabled"] is True
        assert "GET /v1/customers/{customer}" in contract["operations"]
        assert contract["violations"] == []
    finally:
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=10) == 0
