"""Every outbound call ends by its deadline, whatever the server does (issue 13, item 4).

Real urllib3, stripe SDK and boto3 against loopback servers that never answer, trickle a
byte at a time or send 50 MB (tests/support/misbehaving_servers.py). A complete trickled
answer would take minutes; pytest-timeout ends a test that hangs instead of asserting on
wall-clock durations.
"""

import json
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError as BotocoreReadTimeout

from meterbridge.adapters.aws_clients import ledger_client_config, worst_case_call_seconds
from meterbridge.adapters.outbound_http import outbound_deadline
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import (
    DEFAULT_MAX_ANSWER_BYTES,
    HttpUsageSource,
    UsageQuery,
)
from meterbridge.errors import PermanentError, TransientError
from tests.support.misbehaving_servers import (
    MisbehavingServer,
    answers,
    huge_answer,
    silent,
    trickling_body,
    trickling_headers,
)

QUERY = UsageQuery(customer="cus_1", tenant="acme", meter="api_calls", start=1000, end=2000)
BYTE_EVERY = 0.05  # a byte every 50 ms: each read well inside any per-read timeout

pytestmark = pytest.mark.timeout(30)


def _source(server: MisbehavingServer, timeout: float = 0.5, **options: object) -> HttpUsageSource:
    return HttpUsageSource(f"{server.url}/usage", timeout_seconds=timeout, **options)  # type: ignore[arg-type]


# --- HTTP usage source: the configured timeout is a total deadline -----------------------


def test_usage_source_that_never_answers_times_out() -> None:
    with MisbehavingServer(silent) as server, pytest.raises(TransientError, match="timed out"):
        _source(server).usage(QUERY)


@pytest.mark.parametrize(
    "script",
    [
        trickling_headers(BYTE_EVERY),
        trickling_body(BYTE_EVERY),
        trickling_body(BYTE_EVERY, declare_length=False),
    ],
    ids=["headers", "body", "body-without-length"],
)
def test_usage_source_trickling_a_byte_at_a_time_times_out(script: object) -> None:
    """Every read gets a byte within 50 ms, so a per-read timeout (before: requests'
    timeout) never fires and the call would last minutes; the total deadline ends it."""
    with MisbehavingServer(script) as server:  # type: ignore[arg-type]
        with pytest.raises(TransientError, match="timed out"):
            _source(server).usage(QUERY)
        assert server.bytes_sent < 200  # it did not wait for the whole answer


def test_the_query_deadline_and_the_callers_deadline_shorten_the_timeout() -> None:
    with MisbehavingServer(trickling_headers(BYTE_EVERY)) as server:
        source = _source(server, timeout=60)
        soon = UsageQuery(**{**QUERY.__dict__, "deadline": time.monotonic() + 0.3})
        with pytest.raises(TransientError, match="timed out"):
            source.usage(soon)
        with outbound_deadline(time.monotonic() + 0.3), pytest.raises(TransientError):
            source.usage(QUERY)


def test_a_deadline_already_passed_asks_nothing() -> None:
    with MisbehavingServer(answers()) as server:
        late = UsageQuery(**{**QUERY.__dict__, "deadline": time.monotonic() - 1})
        with pytest.raises(TransientError, match="deadline has passed"):
            _source(server).usage(late)
        assert server.connections == 0


def test_after_a_timed_out_call_the_next_one_gets_a_fresh_connection() -> None:
    """The watchdog shut the first call's socket down: it must not go back to the pool for
    the next report to find dead (nor may a pooled socket be shut down under another call)."""
    slow_then_fine = MisbehavingServer(trickling_headers(BYTE_EVERY))
    with slow_then_fine as slow:
        source = _source(slow)
        with pytest.raises(TransientError):
            source.usage(QUERY)
    with MisbehavingServer(answers()) as fine:
        source = _source(fine)
        assert [source.usage(QUERY) for _ in range(3)] == ["7", "7", "7"]
        assert fine.connections == 1  # one kept-alive connection served all three


# --- HTTP usage source: size cap ---------------------------------------------------------


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "streamed"])
def test_an_answer_over_the_cap_is_refused_permanently_without_reading_it_all(
    declare_length: bool,
) -> None:
    with MisbehavingServer(huge_answer(50_000_000, declare_length=declare_length)) as server:
        with pytest.raises(PermanentError, match=f"larger than {DEFAULT_MAX_ANSWER_BYTES} bytes"):
            _source(server, timeout=10).usage(QUERY)
        time.sleep(0.2)  # let the server notice the hang-up
        assert server.bytes_sent < 25_000_000  # read up to the cap, then hung up


def test_the_cap_is_configurable() -> None:
    small = json.dumps({"value": "7", "note": "x" * 80}).encode()
    with MisbehavingServer(answers((200, small, {}), (200, small, {}))) as server:
        assert _source(server, max_answer_bytes=len(small)).usage(QUERY) == "7"
        with pytest.raises(PermanentError, match=f"larger than {len(small) - 1} bytes"):
            _source(server, max_answer_bytes=len(small) - 1).usage(QUERY)


# --- HTTP usage source: what comes back, and what goes out -------------------------------


def test_error_pages_are_cut_and_scrubbed_before_they_become_the_reason() -> None:
    page = (
        b"<html><body><h1>Unknown customer</h1><p>No account for jane.doe@example.com"
        b" (card 4242 4242 4242 4242, phone +1 555 0100 9999). Request sent with"
        b" Authorization: Bearer tok_live_abcdef123456 token=s3cr3t-value</p>"
        + b"<p>"
        + b"lorem ipsum " * 500
        + b"</p></body></html>"
    )
    with (
        MisbehavingServer(answers((404, page, {}))) as server,
        pytest.raises(PermanentError) as refused,
    ):
        _source(server).usage(QUERY)
    reason = str(refused.value)
    assert reason.startswith("usage source refused the query (404): <html><body>")
    for secret in ("jane.doe", "example.com", "4242", "555", "tok_live", "s3cr3t"):
        assert secret not in reason
    assert "[email]" in reason
    assert "\n" not in reason
    assert len(reason) <= 250


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"value": "7"}]', "a JSON array"),
        (b'["value"]', "a JSON array"),
        (b'"7"', "a JSON string"),
        (b"7", "a bare JSON number"),
        (b"null", "null"),
        (b"true", "a JSON boolean"),
        (b"[" * 30_000 + b"]" * 30_000, "not JSON"),  # RecursionError in json
        (b"\xff\xfe{garbage", "not JSON"),
        (b'{"total": 3}', 'no "value"'),
    ],
    ids=["array", "array-of-key", "string", "number", "null", "bool", "deep", "bytes", "no-key"],
)
def test_answers_that_are_not_a_json_object_with_a_value_fail_permanently(
    body: bytes, reason: str
) -> None:
    with (
        MisbehavingServer(answers((200, body, {}))) as server,
        pytest.raises(PermanentError, match=reason),
    ):
        _source(server).usage(QUERY)


def test_redirects_are_not_followed_so_the_token_goes_nowhere_else() -> None:
    with MisbehavingServer(answers()) as elsewhere:
        moved = (307, b"", {"Location": f"{elsewhere.url}/usage"})
        with MisbehavingServer(answers(moved)) as server:
            source = _source(server, token="s3cret")
            with pytest.raises(PermanentError, match="redirect"):
                source.usage(QUERY)
            [request] = server.requests
            assert b"authorization: bearer s3cret" in request.lower()
        assert elsewhere.connections == 0


def test_the_body_sent_is_the_query_without_its_deadline() -> None:
    with MisbehavingServer(answers()) as server:
        query = UsageQuery(**{**QUERY.__dict__, "deadline": time.monotonic() + 5})
        assert _source(server).usage(query) == "7"
        [request] = server.requests
    assert json.loads(request.partition(b"\r\n\r\n")[2]) == {
        "customer": "cus_1",
        "tenant": "acme",
        "meter": "api_calls",
        "start": 1000,
        "end": 2000,
    }
    assert query == QUERY  # the deadline is not part of the query's identity


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
        assert server.received(1) == 1

        with (
            outbound_deadline(time.monotonic() - 1),
            pytest.raises(TransientError, match="before the request was sent"),
        ):
            gateway.customer("cus_any")
        time.sleep(0.3)
        # The first not retried (every retry would be past the deadline too), the second
        # not sent at all.
        assert len(server.requests) == 1


# --- DynamoDB: the worker's client config bounds a call against a silent endpoint --------


def test_a_ledger_call_against_an_endpoint_that_never_answers_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    config = ledger_client_config(
        8, connect_timeout_seconds=0.3, read_timeout_seconds=0.3, max_attempts=2
    )
    with MisbehavingServer(silent) as server:
        client = boto3.client("dynamodb", endpoint_url=server.url, config=config)
        with pytest.raises(BotocoreReadTimeout):
            client.get_item(TableName="ledger", Key={"pk": {"S": f"invoice#{uuid.uuid4()}"}})
        assert server.received(2) == 2  # the configured attempts, each timed out
        time.sleep(0.2)
        assert len(server.requests) == 2  # and no more
    assert worst_case_call_seconds(config) == pytest.approx(2 * 0.6 + 1)


def test_the_worker_config_has_timeouts_standard_retries_and_the_pool_size() -> None:
    config = ledger_client_config(64)
    settings = ("connect_timeout", "read_timeout", "retries", "max_pool_connections")
    assert {name: getattr(config, name) for name in settings} == {
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "retries": {"mode": "standard", "total_max_attempts": 3},
        "max_pool_connections": 64,
    }
    assert worst_case_call_seconds(config) == pytest.approx(3 * 3 + 1 + 2)
