"""The local Lambda runtime: API Gateway v2 events in front, SQS event source semantics behind.

Handlers here are small test callables; the runtime, moto and boto3 are the real ones.
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model, SqsModel

from meterbridge.adapters.queue import SqsQueue
from meterbridge_local.aws import MotoServer
from meterbridge_local.lambda_runtime import (
    FunctionConfig,
    HttpFront,
    SqsPoller,
    batch_item_failures,
)
from meterbridge_local.resources import FunctionDefinition, HttpRoute, create_resources
from meterbridge_local.stack import LocalStack

# ------------------------------------------------------------------ helpers


def _post(
    url: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class Recorder:
    """A handler that records each call and answers with `respond(event)`."""

    def __init__(self, respond: Callable[[dict[str, Any]], Any] = lambda event: None):
        self.respond = respond
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self.events.append(event)
            self.contexts.append(context)
        return self.respond(event)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for event in self.events for record in event["Records"]]

    def deliveries(self, body: str) -> int:
        return sum(1 for record in self.records if record["body"] == body)


# ------------------------------------------------------------------ HTTP front


@pytest.fixture
def front_handler() -> Iterator[tuple[HttpFront, Recorder]]:
    recorder = Recorder(
        lambda event: {
            "statusCode": 202,
            "headers": {"X-Seen": event["headers"].get("x-mixed-case", "")},
            "body": "accepted",
        }
    )
    front = HttpFront(
        recorder,
        [HttpRoute("POST", "/stripe/webhook")],
        function=FunctionConfig("front-test", timeout_seconds=10, memory_mb=256),
    ).start()
    try:
        yield front, recorder
    finally:
        front.stop()


def test_request_becomes_a_v2_event_with_exact_bytes(
    front_handler: tuple[HttpFront, Recorder],
) -> None:
    front, recorder = front_handler
    body = b'{"id":"evt_1"}\r\n\x00\xff\xfe not utf-8 \xe9'
    status, headers, payload = _post(
        front.route_url() + "?a=1&a=2&b=",
        body,
        {"X-Mixed-Case": "Value", "Stripe-Signature": "t=1,v1=abc", "Cookie": "c1=x; c2=y"},
    )
    assert (status, payload, headers["X-Seen"]) == (202, b"accepted", "Value")
    (event,) = recorder.events
    APIGatewayProxyEventV2Model.model_validate(event)  # the shape Powertools parses
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    assert event["rawPath"] == "/stripe/webhook"
    assert event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["routeKey"] == "POST /stripe/webhook"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["http"]["path"] == "/stripe/webhook"
    assert all(name == name.lower() for name in event["headers"])
    assert event["headers"]["stripe-signature"] == "t=1,v1=abc"
    assert event["headers"]["content-length"] == str(len(body))
    assert event["cookies"] == ["c1=x", "c2=y"]
    assert "cookie" not in event["headers"]
    context = recorder.contexts[0]
    assert context.function_name == "front-test"
    assert context.memory_limit_in_mb == 256
    assert 0 < context.get_remaining_time_in_millis() <= 10_000


def test_unknown_route_is_404_and_wrong_method_is_405(
    front_handler: tuple[HttpFront, Recorder],
) -> None:
    front, recorder = front_handler
    assert _post(front.url + "/elsewhere", b"{}")[0] == 404
    status, headers, _ = _post(front.route_url(), method="GET")
    assert (status, headers["Allow"]) == (405, "POST")
    assert recorder.events == []


def test_handler_error_is_500_and_non_response_result_is_json() -> None:
    def raising(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("boom")

    with HttpFront(raising) as front:
        status, _, payload = _post(front.route_url(), b"x")
        assert (status, json.loads(payload)) == (500, {"message": "Internal Server Error"})
    with HttpFront(lambda event, context: {"ok": True}) as front:
        status, headers, payload = _post(front.route_url(), b"x")
        assert (status, json.loads(payload)) == (200, {"ok": True})
        assert headers["Content-Type"] == "application/json"
    binary = {
        "statusCode": 200,
        "body": base64.b64encode(b"\x00\x01").decode(),
        "isBase64Encoded": True,
    }
    with HttpFront(lambda event, context: binary) as front:
        assert _post(front.route_url(), b"x")[2] == b"\x00\x01"


def test_empty_body_is_not_base64(front_handler: tuple[HttpFront, Recorder]) -> None:
    front, recorder = front_handler
    _post(front.route_url(), method="POST", headers={"Content-Length": "0"})
    (event,) = recorder.events
    assert event["isBase64Encoded"] is False
    assert "body" not in event


# ------------------------------------------------------------------ SQS poller


@dataclasses.dataclass
class Worker:
    definition: FunctionDefinition
    dlq_url: str
    sqs: Any

    def send(self, body: str, **attributes: str) -> None:
        SqsQueue(self.definition.sqs_event_sources[0].queue_url, self.sqs).send(body, attributes)

    def poller(
        self, handler: Recorder, visibility_timeout: int | None = None, **changes: Any
    ) -> SqsPoller:
        """`visibility_timeout=1` makes failed records reappear after 1 s, not 360 s."""
        source = dataclasses.replace(self.definition.sqs_event_sources[0], **changes)
        return SqsPoller(
            handler,
            source,
            function=FunctionConfig.of(self.definition),
            endpoint_url=self.sqs.meta.endpoint_url,
            visibility_timeout=visibility_timeout,
        )

    def dlq_bodies(self) -> list[str]:
        messages = self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        return [message["Body"] for message in messages]


@pytest.fixture
def worker(aws: MotoServer) -> Worker:
    """A fresh queue + DLQ from the template (MaxReceiveCount 2), worker definition."""
    resources = create_resources(
        aws.endpoint_url,
        parameter_overrides={"MaxReceiveCount": "2", "WorkerBatchingWindowSeconds": "0"},
        stack_name=f"rt-{uuid.uuid4().hex[:8]}",
    )
    return Worker(
        resources.functions["WorkerFunction"],
        resources.queues["DeadLetterQueue"].url,
        boto3.client("sqs", endpoint_url=aws.endpoint_url),
    )


def test_records_have_lambdas_shape_and_batch_size_is_honoured(worker: Worker) -> None:
    for n in range(7):
        worker.send(f"m{n}", stripe_event_id=f"evt_{n}")
    handler = Recorder()
    poller = worker.poller(handler, batch_size=3)
    assert poller.drain(timeout=30)
    assert sorted(len(event["Records"]) for event in handler.events) == [1, 3, 3]
    assert sorted(record["body"] for record in handler.records) == [f"m{n}" for n in range(7)]
    for event in handler.events:
        SqsModel.model_validate(event)  # the shape Powertools' BatchProcessor parses
    record = handler.records[0]
    source = worker.definition.sqs_event_sources[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == source.queue_arn
    assert record["awsRegion"] == "us-east-1"
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(
        record["attributes"]
    )
    number = record["body"][1:]
    assert record["messageAttributes"]["stripe_event_id"] == {
        "stringValue": f"evt_{number}",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    context = handler.contexts[0]
    assert context.function_name == worker.definition.name
    assert context.invoked_function_arn.endswith(f":function:{worker.definition.name}")
    assert 0 < context.get_remaining_time_in_millis() <= worker.definition.timeout_seconds * 1000
    assert poller.stats.invocations == 3


def test_batch_item_failures_reappear_and_successes_are_deleted(worker: Worker) -> None:
    def fail_first_delivery_of_flaky(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": record["messageId"]}
                for record in event["Records"]
                if record["body"].startswith("flaky")
                and record["attributes"]["ApproximateReceiveCount"] == "1"
            ]
        }

    for body in ("ok-1", "flaky-1", "ok-2", "flaky-2"):
        worker.send(body)
    handler = Recorder(fail_first_delivery_of_flaky)
    assert worker.poller(handler, visibility_timeout=1).drain(timeout=30)
    assert (handler.deliveries("ok-1"), handler.deliveries("ok-2")) == (1, 1)
    assert (handler.deliveries("flaky-1"), handler.deliveries("flaky-2")) == (2, 2)
    redelivered = [r for r in handler.records if r["body"].startswith("flaky")][-1]
    assert redelivered["attributes"]["ApproximateReceiveCount"] == "2"
    assert worker.dlq_bodies() == []


def test_a_raising_handler_gets_the_whole_batch_again(worker: Worker) -> None:
    calls: list[int] = []

    def raise_once(event: dict[str, Any]) -> None:
        calls.append(len(event["Records"]))
        if len(calls) == 1:
            raise RuntimeError("worker crashed mid-batch")

    for body in ("a", "b", "c"):
        worker.send(body)
    handler = Recorder(raise_once)
    poller = worker.poller(handler, visibility_timeout=1)
    assert poller.drain(timeout=30)
    assert calls[0] == 3
    assert all(handler.deliveries(body) == 2 for body in ("a", "b", "c"))
    assert poller.stats.handler_errors == 1


def test_a_record_failing_max_receive_count_times_lands_in_the_dlq(worker: Worker) -> None:
    def reject_poison(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if r["body"] == "poison"
            ]
        }

    worker.send("poison")
    worker.send("fine")
    handler = Recorder(reject_poison)
    assert worker.poller(handler, visibility_timeout=1).drain(timeout=30)
    # moto applies the queue's RedrivePolicy on receive, as SQS does: after 2 receives.
    assert handler.deliveries("poison") == 2
    assert handler.deliveries("fine") == 1
    assert worker.dlq_bodies() == ["poison"]


def test_without_report_batch_item_failures_the_response_is_ignored(worker: Worker) -> None:
    worker.send("only")
    handler = Recorder(
        lambda event: {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    )
    assert worker.poller(handler, function_response_types=()).drain(timeout=30)
    assert handler.deliveries("only") == 1


def test_batching_window_waits_for_more_records(worker: Worker) -> None:
    handler = Recorder()
    poller = worker.poller(handler, batch_size=2, maximum_batching_window_seconds=30)
    worker.send("first")
    with poller:
        deadline = time.monotonic() + 10
        while poller.queue_depth() and time.monotonic() < deadline:
            # wait until the poller holds "first" (in flight, not visible)
            attributes = worker.sqs.get_queue_attributes(
                QueueUrl=poller.source.queue_url,
                AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if attributes["ApproximateNumberOfMessagesNotVisible"] == "1":
                break
            time.sleep(0.02)
        worker.send("second")
        assert poller.drain(timeout=20)
    assert [len(event["Records"]) for event in handler.events] == [2]


def test_concurrency_is_bounded_and_stop_leaves_no_thread(worker: Worker) -> None:
    before = set(threading.enumerate())
    active = 0
    most_active = 0
    lock = threading.Lock()
    release = threading.Event()

    def hold_until_released(event: dict[str, Any]) -> None:
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
        release.wait(timeout=20)
        with lock:
            active -= 1

    for n in range(6):
        worker.send(f"m{n}")
    handler = Recorder(hold_until_released)
    poller = worker.poller(handler, batch_size=1, maximum_concurrency=2).start()
    try:
        deadline = time.monotonic() + 10
        while poller.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Both slots are taken; with a third slot the receiver would start another at once.
        time.sleep(0.3)
        assert (most_active, poller.in_flight) == (2, 2)
        release.set()
        assert poller.drain(timeout=30)
    finally:
        release.set()
        poller.stop()
    assert most_active == 2
    assert len(handler.records) == 6
    # moto's own request threads (keep-alive connections) may outlive a call; ours may not.
    left = [t.name for t in set(threading.enumerate()) - before]
    assert [name for name in left if name.startswith(("sqs-poller-", "invoke-"))] == []


def test_invalid_partial_batch_responses_fail_the_whole_batch() -> None:
    records = [{"messageId": "m1"}, {"messageId": "m2"}]
    assert batch_item_failures(None, records) == set()
    assert batch_item_failures({"batchItemFailures": []}, records) == set()
    assert batch_item_failures({"batchItemFailures": [{"itemIdentifier": "m2"}]}, records) == {"m2"}
    for broken in (
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]},
        {"batchItemFailures": [{"id": "m1"}]},
        "not an object",
    ):
        assert batch_item_failures(broken, records) == {"m1", "m2"}


# ------------------------------------------------------------------ LocalStack and the CLI


def test_local_stack_wires_front_queue_and_worker(aws: MotoServer) -> None:
    seen_environment: dict[str, str] = {}

    def webhook(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Handlers read settings from os.environ at invocation: the stack set them first.
        seen_environment.update(os.environ)
        boto3.client("sqs").send_message(
            QueueUrl=os.environ["QUEUE_URL"], MessageBody=base64.b64decode(event["body"]).decode()
        )
        return {"statusCode": 200, "body": ""}

    worker = Recorder()
    saved = dict(os.environ)
    threads_before = set(threading.enumerate())
    with LocalStack(
        aws=aws,
        stack_name=f"stack-{uuid.uuid4().hex[:8]}",
        handlers={"WebhookFunction": webhook, "WorkerFunction": worker},
        stripe_api_base="http://127.0.0.1:9",
        stripe_api_key="sk_test_x",
        webhook_secret="whsec_x",
        usage_source="http://127.0.0.1:9/usage",
        parameter_overrides={"WorkerBatchingWindowSeconds": "0"},
    ) as stack:
        assert _post(stack.webhook_url, b'{"id":"evt_42"}')[0] == 200
        assert stack.drain(timeout=30)
        urls = stack.urls()
    assert [record["body"] for record in worker.records] == ['{"id":"evt_42"}']
    assert seen_environment["QUEUE_URL"] == urls["event_queue_url"]
    assert seen_environment["LEDGER_TABLE"] == urls["ledger_table"]
    assert seen_environment["AWS_ENDPOINT_URL"] == aws.endpoint_url
    assert seen_environment["STRIPE_API_BASE"] == "http://127.0.0.1:9"
    assert seen_environment["STRIPE_WEBHOOK_SECRET"] == "whsec_x"
    assert seen_environment["USAGE_SOURCE"] == "http://127.0.0.1:9/usage"
    assert "STRIPE_SECRET_ARN" not in seen_environment
    assert dict(os.environ) == saved  # restored on stop
    started = [t.name for t in set(threading.enumerate()) - threads_before]
    assert [n for n in started if n.startswith(("http-front-", "sqs-poller-", "invoke-"))] == []


def _sign(payload: bytes, secret: str) -> str:
    timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def test_meterbridge_local_serves_the_real_webhook_and_stops_on_ctrl_c() -> None:
    """`meterbridge local` in its own process (the real handlers cache their settings)."""
    secret = "whsec_cli_test"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "AWS_"))
    }
    environment["STRIPE_WEBHOOK_SECRET"] = secret
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbridge_local.cli", "local", "--port", "0",
         "--stripe-api-base", "http://127.0.0.1:9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        printed: list[str] = []
        webhook_url = aws_endpoint = ""
        for line in process.stdout:
            printed.append(line)
            if "webhook URL" in line:
                webhook_url = line.split()[-1]
            if "AWS endpoint" in line:
                aws_endpoint = line.split()[-1]
            if line.startswith("  export"):
                break
        # The handlers' logs that follow are read and dropped: a full pipe would block them.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        assert webhook_url.endswith("/stripe/webhook"), "".join(printed)
        assert f"AWS_ENDPOINT_URL={aws_endpoint}" in printed[-1]
        ignored = json.dumps(
            {"id": "evt_cli", "object": "event", "type": "customer.created", "livemode": False,
             "created": 1700000000, "api_version": "2025-01-01", "data": {"object": {}}}
        ).encode()  # fmt: skip
        assert _post(webhook_url, ignored, {"Stripe-Signature": _sign(ignored, secret)})[0] == 200
        assert (
            _post(webhook_url, ignored, {"Stripe-Signature": _sign(ignored, "whsec_wrong")})[0]
            == 400
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_endpoint_registered_with_the_emulator_signs_what_reaches_the_handler(
    aws: MotoServer,
) -> None:
    """`meterbridge local`'s default path: the emulator's endpoint secret, set after start."""
    import stripe

    from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator

    verified: list[str] = []

    def verifying_webhook(event: dict[str, Any], context: Any) -> dict[str, Any]:
        payload = base64.b64decode(event["body"])
        stripe_event = stripe.Webhook.construct_event(
            payload, event["headers"]["stripe-signature"], os.environ["STRIPE_WEBHOOK_SECRET"]
        )
        verified.append(stripe_event["type"])
        return {"statusCode": 200, "body": ""}

    emulator = StripeEmulator(EmulatorConfig()).start()
    try:
        with LocalStack(
            aws=aws,
            stack_name=f"emu-{uuid.uuid4().hex[:8]}",
            handlers={"WebhookFunction": verifying_webhook, "WorkerFunction": Recorder()},
            stripe_api_base=emulator.url,
            stripe_api_key="sk_test_emu",
        ) as stack:
            secret = stack.register_webhook_endpoint()
            client = stripe.StripeClient("sk_test_emu", base_addresses={"api": emulator.url})
            client.v1.customers.create({"name": "Acme"})
            deadline = time.monotonic() + 10
            while "customer.created" not in verified and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        emulator.stop()
    assert secret.startswith("whsec_")
    assert "customer.created" in verified
