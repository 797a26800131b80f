"""Every outbound call ends by its deadline, whatever the server does (issue 13, item 4).

Real urllib3 and the stripe SDK against loopback servers that never answer or trickle a
byte at a time (tests/support/misbehaving_servers.py). A complete trickled answer would
take minutes; pytest-timeout ends a test that hangs instead of asserting on wall-clock
durations.
"""

import time

import pytest

from meterbridge.adapters.outbound_http import outbound_deadline
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.errors import TransientError
from tests.support.misbehaving_servers import MisbehavingServer, silent, trickling_headers

BYTE_EVERY = 0.05  # a byte every 50 ms: each read well inside any per-read timeout

pytestmark = pytest.mark.timeout(30)


# --- Stripe: a total deadline per request, capped by the caller's ------------------------


def test_stripe_trickling_an_answer_ends_at_the_requests_total_deadline() -> None:
    with MisbehavingServer(trickling_headers(BYTE_EVERY)) as server:
        gateway = StripeGateway(
            "sk_test_deadline", api_base=server.url, timeout_seconds=0.5, max_network_retries=0
        )
        with pytest.raises(TransientError, match="DeadlineExceeded"):
            gateway.customer("cus_any")


def test_the_callers_deadline_caps_stripe_and_stops_the_sdks_retries() -> None:
    with MisbehavingServer(silent) as server:
        gateway = StripeGateway(
            "sk_test_deadline", api_base=server.url, timeout_seconds=30, max_network_retries=2
        )
        with (
            outbound_deadline(time.monotonic() + 0.3),
            pytest.raises(TransientError, match="caller's deadline"),
        ):
            gateway.customer("cus_any")
        assert server.connections == 1  # not retried: every retry would be past it too

        with (
            outbound_deadline(time.monotonic() - 1),
            pytest.raises(TransientError, match="before the request was sent"),
        ):
            gateway.customer("cus_any")
        assert server.connections == 1
