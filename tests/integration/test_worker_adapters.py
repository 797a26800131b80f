"""Worker adapters over real HTTP: usage sources, the Stripe gateway's error classes."""

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from meterbridge.adapters.stripe_calls import UnknownStripeObject
from meterbridge.adapters.stripe_gateway import StripeGateway
from meterbridge.adapters.usage_sources import (
    CallableUsageSource,
    DynamoDbUsageSource,
    HttpUsageSource,
    UsageQuery,
    usage_source_from,
)
from meterbridge.domain.retries import backoff_seconds
from meterbridge.errors import PermanentError, SettingsError, TransientError
from meterbridge.settings import WorkerSettings, load_settings
from meterbridge_local.aws import MotoServer
from meterbridge_local.stripe_emulator import StripeEmulator
from tests.support.worker import API_KEY, Billing


def _no_dynamodb() -> Any:
    raise AssertionError("this usage source needs no DynamoDB client")


QUERY = UsageQuery(customer="cus_1", tenant="acme", meter="api_calls", start=1000, end=2000)


class UsageEndpoint(BaseHTTPRequestHandler):
    answers: list[tuple[int, str]] = []
    seen: list[tuple[dict[str, Any], str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((json.loads(body), self.headers.get("Authorization")))
        status, text = type(self).answers.pop(0) if type(self).answers else (200, '{"value":"7"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def usage_endpoint() -> Iterator[str]:
    UsageEndpoint.answers, UsageEndpoint.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), UsageEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/usage"
    server.shutdown()
    server.server_close()


def test_http_source_posts_the_query_with_the_token(usage_endpoint: str) -> None:
    source = usage_source_from(
        usage_endpoint, timeout_seconds=2, token="s3cret", dynamodb=_no_dynamodb
    )
    assert isinstance(source, HttpUsageSource)
    assert source.usage(QUERY) == "7"
    [(body, auth)] = UsageEndpoint.seen
    assert body == {
        "customer": "cus_1",
        "tenant": "acme",
        "meter": "api_calls",
        "start": 1000,
        "end": 2000,
    }
    assert auth == "Bearer s3cret"


@pytest.mark.parametrize(
    ("status", "text", "error"),
    [
        (503, "down", TransientError),
        (429, "slow down", TransientError),
        (400, "unknown meter", PermanentError),
        (200, "not json", PermanentError),
        (200, '{"total": 3}', PermanentError),
    ],
)
def test_http_source_classifies_answers(
    usage_endpoint: str, status: int, text: str, error: type[Exception]
) -> None:
    UsageEndpoint.answers = [(status, text)]
    with pytest.raises(error):
        HttpUsageSource(usage_endpoint, timeout_seconds=2).usage(QUERY)


def test_http_source_unreachable_is_transient() -> None:
    with pytest.raises(TransientError, match="unreachable"):
        HttpUsageSource("http://127.0.0.1:9/usage", timeout_seconds=1).usage(QUERY)


def test_dynamodb_source_sums_the_customers_items_inside_the_period(aws: MotoServer) -> None:
    client = boto3.client("dynamodb")
    table = f"usage-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "customer", "AttributeType": "S"},
            {"AttributeName": "usage_key", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "customer", "KeyType": "HASH"},
            {"AttributeName": "usage_key", "KeyType": "RANGE"},
        ],
    )
    items = [
        ("cus_1", "api_calls#0000000999#a", "100"),  # before the period
        ("cus_1", "api_calls#0000001000#a", "1.5"),  # start: inclusive
        ("cus_1", "api_calls#0000001500#b", "2"),
        ("cus_1", "api_calls#0000001999#c", "3"),
        ("cus_1", "api_calls#0000002000#d", "100"),  # end: exclusive
        ("cus_1", "storage#0000001500#a", "100"),  # another meter
        ("cus_2", "api_calls#0000001500#a", "100"),  # another customer
    ]
    for customer, key, value in items:
        client.put_item(
            TableName=table,
            Item={"customer": {"S": customer}, "usage_key": {"S": key}, "value": {"N": value}},
        )
    source = usage_source_from(
        f"dynamodb://{table}", timeout_seconds=2, token=None, dynamodb=lambda: client
    )
    assert isinstance(source, DynamoDbUsageSource)
    assert source.usage(QUERY) == Decimal("6.5")
    with pytest.raises(PermanentError, match="does not exist"):
        DynamoDbUsageSource("no-such-table", client).usage(QUERY)


def test_dynamodb_source_validation_errors_are_permanent_throttling_transient(
    aws: MotoServer,
) -> None:
    """A usage table keyed differently from the documented schema answers every query with
    ValidationException: retrying cannot help (it was transient before)."""
    client = boto3.client("dynamodb")
    table = f"usage-wrong-keys-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    with pytest.raises(PermanentError, match="ValidationException"):
        DynamoDbUsageSource(table, client).usage(QUERY)


def test_dynamodb_source_gives_up_paging_once_the_deadline_passed(aws: MotoServer) -> None:
    client = boto3.client("dynamodb")
    late = UsageQuery(**{**QUERY.__dict__, "deadline": time.monotonic() - 1})
    with pytest.raises(TransientError, match="deadline passed"):
        DynamoDbUsageSource("any-table", client).usage(late)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/usage",
        "http://127.0.0.53/usage",
        "http://localhost/usage",
        "http://[::1]:9000/usage",
        "https://usage.example.com/usage",
    ],
)
def test_usage_source_urls_that_are_allowed(url: str) -> None:
    source = usage_source_from(url, timeout_seconds=1, token="t", dynamodb=_no_dynamodb)
    assert isinstance(source, HttpUsageSource)


@pytest.mark.parametrize(
    "url",
    [
        "http://usage.example.com/usage",
        "http://10.0.0.5/usage",
        "http://127.0.0.1.nip.io/usage",
        "http:///usage",
    ],
)
def test_plain_http_outside_loopback_is_a_settings_error_naming_usage_source(url: str) -> None:
    with pytest.raises(SettingsError, match="USAGE_SOURCE"):
        usage_source_from(url, timeout_seconds=1, token="t", dynamodb=_no_dynamodb)


def test_usage_function_errors_are_scrubbed() -> None:
    def leaky(query: UsageQuery) -> object:
        raise LookupError(f"no plan for owner jane@example.com, key sk_live_{'x' * 24}")

    with pytest.raises(TransientError) as failed:
        CallableUsageSource(leaky).usage(QUERY)
    assert (
        str(failed.value)
        == "usage function failed: LookupError: no plan for owner [email], key [token]"
    )


def test_python_source_and_bad_references() -> None:
    source = usage_source_from(
        "python://tests.support.worker:usage", timeout_seconds=1, token=None, dynamodb=_no_dynamodb
    )
    assert isinstance(source, CallableUsageSource)
    with pytest.raises(SettingsError):
        usage_source_from(
            "python://tests.support.worker", timeout_seconds=1, token=None, dynamodb=_no_dynamodb
        )
    with pytest.raises(SettingsError):
        usage_source_from("ftp://x", timeout_seconds=1, token=None, dynamodb=_no_dynamodb)

    def broken(query: UsageQuery) -> object:
        raise KeyError("warehouse schema changed")

    with pytest.raises(TransientError, match="KeyError"):
        CallableUsageSource(broken).usage(QUERY)


def test_gateway_duplicate_identifier_is_delivered_and_unknown_objects_permanent(
    emulator: StripeEmulator,
) -> None:
    billing = Billing(emulator)
    meter = billing.meter()
    customer = billing.customer()
    gateway = StripeGateway(API_KEY, api_base=emulator.url, max_network_retries=0)
    identifier = f"mb1-test-{uuid.uuid4().hex}"
    sent = dict(
        event_name=meter["event_name"],
        payload={"stripe_customer_id": customer["id"], "value": "5"},
        identifier=identifier,
        timestamp=int(time.time()) - 60,
    )
    first = gateway.create_meter_event(**sent)
    # Recomputed value, same identifier: the idempotency key no longer matches, so Stripe's
    # identifier check must answer — "already exists" means delivered.
    again = gateway.create_meter_event(
        **{**sent, "payload": {"stripe_customer_id": customer["id"], "value": "6"}}
    )
    assert not first.duplicate
    assert again.duplicate
    statuses = [e["status"] for e in emulator.meter_events() if e["identifier"] == identifier]
    assert statuses.count("accepted") == 1
    with pytest.raises(UnknownStripeObject):
        gateway.customer("cus_missing")


def test_gateway_backs_off_on_429_then_gives_up_as_transient(emulator: StripeEmulator) -> None:
    sleeps: list[float] = []
    gateway = StripeGateway(
        API_KEY,
        api_base=emulator.url,
        max_network_retries=0,
        rate_limit_retries=3,
        sleep=sleeps.append,
    )
    emulator.set_faults(error_rate_429=1.0)
    try:
        with pytest.raises(TransientError, match="429"):
            gateway.customer("cus_any")
    finally:
        emulator.set_faults(error_rate_429=0.0)
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.5 * 2**i for i, s in enumerate(sleeps))


def test_stripe_unreachable_is_transient() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    gateway = StripeGateway(API_KEY, api_base=closed, max_network_retries=0)
    with pytest.raises(TransientError, match="Could not reach Stripe"):
        gateway.customer("cus_any")


def test_stripe_goes_through_https_proxy_except_for_no_proxy_hosts(
    emulator: StripeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a proxy nobody runs: every proxied call fails
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{probe.getsockname()[1]}")
    customer = Billing(emulator).customer()
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = StripeGateway(API_KEY, api_base=emulator.url, max_network_retries=0)
    with pytest.raises(TransientError, match="Could not reach Stripe"):
        proxied.customer(customer["id"])

    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    direct = StripeGateway(API_KEY, api_base=emulator.url, max_network_retries=0)
    assert direct.customer(customer["id"])["id"] == customer["id"]


def test_a_timed_out_meter_event_is_retried_under_its_idempotency_key_and_counted_once(
    emulator: StripeEmulator,
) -> None:
    """Each attempt times out after Stripe has received it; the SDK's retries carry the same
    idempotency key, so Stripe answers them from the first attempt, never as a new event."""
    billing = Billing(emulator)
    meter = billing.meter()
    customer = billing.customer()
    gateway = StripeGateway(
        API_KEY, api_base=emulator.url, timeout_seconds=0.2, max_network_retries=2
    )
    identifier = f"mb1-timeout-{uuid.uuid4().hex}"
    emulator.set_faults(latency_seconds=0.4, fault_paths=("/v1/billing/meter_events",))
    try:
        # Whichever ends the attempt first: urllib3's read timeout or the total deadline.
        with pytest.raises(TransientError, match=r"ReadTimeoutError|DeadlineExceeded"):
            gateway.create_meter_event(
                event_name=meter["event_name"],
                payload={"stripe_customer_id": customer["id"], "value": "5"},
                identifier=identifier,
                timestamp=int(time.time()) - 60,
            )
        time.sleep(0.5)  # the last attempt is still asleep in the emulator
    finally:
        emulator.set_faults(latency_seconds=0.0, fault_paths=())
    recorded = [e for e in emulator.meter_events() if e["identifier"] == identifier]
    assert [e["status"] for e in recorded] == ["accepted"]


def test_visibility_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n, 30, 900) for n in range(1, 7)] == [30, 60, 120, 240, 480, 900]
    assert backoff_seconds(100, 30, 10**9) == 43_200  # SQS's maximum


def test_worker_settings_name_missing_variables_and_enforce_event_memory() -> None:
    with pytest.raises(SettingsError, match="LEDGER_TABLE"):
        load_settings(WorkerSettings, {"STRIPE_API_KEY": "sk_test", "USAGE_SOURCE": "python://m:f"})
    with pytest.raises(SettingsError, match="EVENT_MEMORY_SECONDS"):
        load_settings(
            WorkerSettings,
            {
                "STRIPE_API_KEY": "sk",
                "LEDGER_TABLE": "t",
                "USAGE_SOURCE": "x",
                "EVENT_MEMORY_SECONDS": "3600",
            },
        )
    settings = load_settings(
        WorkerSettings,
        {
            "STRIPE_API_KEY": "sk",
            "LEDGER_TABLE": "t",
            "USAGE_SOURCE": "x",
            "METER_EVENT_NAMES": "",
            "TENANT_METADATA_KEY": "",
            "BILLING_REASONS": "subscription_cycle, subscription_update",
        },
    )
    assert settings.meter_event_names == frozenset()
    assert settings.tenant_metadata_key is None
    assert settings.billing_reasons == {"subscription_cycle", "subscription_update"}
    assert settings.event_memory_seconds >= 3 * 86_400
