"""The webhook handler with real boto3 against moto's SQS and real Stripe signatures."""

import base64
import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from meterbridge.adapters.queue import SqsQueue
from meterbridge.handlers import webhook
from meterbridge.intake import Intake
from meterbridge.messages import read_body
from meterbridge_local.aws import MotoServer
from tests.support.lambda_context import FakeLambdaContext
from tests.support.logs import capture_logs
from tests.support.stripe_events import encode, sign, snapshot_event

SECRET = "whsec_current_secret"
OLD_SECRET = "whsec_previous_secret"
INVOICE = {"id": "in_test_1", "object": "invoice", "status": "draft"}


@pytest.fixture
def queue_url(aws: MotoServer) -> str:
    sqs = boto3.client("sqs")
    return str(sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"])


@pytest.fixture
def make_intake(queue_url: str) -> Callable[..., Intake]:
    def make(**environ: str) -> Intake:
        return webhook.build_intake(
            {"QUEUE_URL": queue_url, "STRIPE_WEBHOOK_SECRET": SECRET, **environ}
        )

    return make


def queued(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages: list[Any] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def http_v2(body: bytes, signature: str | None, *, base64_body: bool = False) -> dict[str, Any]:
    headers = {"content-type": "application/json", "user-agent": "Stripe/1.0"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return {
        "version": "2.0",
        "routeKey": "POST /stripe/webhook",
        "rawPath": "/stripe/webhook",
        "headers": headers,
        "requestContext": {"http": {"method": "POST", "path": "/stripe/webhook"}},
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


def rest_v1(body: bytes, signature: str) -> dict[str, Any]:
    return {
        "resource": "/stripe/webhook",
        "path": "/stripe/webhook",
        "httpMethod": "POST",
        "headers": {"Stripe-Signature": signature, "Content-Type": "application/json"},
        "multiValueHeaders": {"Stripe-Signature": [signature]},
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def call(intake: Intake, event: dict[str, Any]) -> dict[str, Any]:
    response = webhook.handler(event, FakeLambdaContext(), intake=intake)
    response["json"] = json.loads(response["body"]) if response["body"] else None
    return response


def test_valid_event_is_queued_with_attributes(make_intake: Callable[..., Intake], queue_url: str):
    event = snapshot_event("invoice.created", INVOICE)
    body = encode(event)

    response = call(make_intake(), http_v2(body, sign(body, SECRET)))

    assert response["statusCode"] == 200
    assert response["json"] == {"status": "queued", "id": event["id"]}
    [message] = queued(queue_url)
    assert message["Body"] == body.decode(), "the exact verified body travels"
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "stripe_event_id": event["id"],
        "stripe_event_type": "invoice.created",
        "livemode": "false",
        "body_kind": "event",
    }


@pytest.mark.parametrize(
    ("case", "make_request"),
    [
        ("missing header", lambda body: http_v2(body, None)),
        (
            "tampered body",
            lambda body: http_v2(body.replace(b"draft", b"paid!"), sign(body, SECRET)),
        ),
        ("wrong secret", lambda body: http_v2(body, sign(body, "whsec_someone_else"))),
        ("stale timestamp", lambda body: http_v2(body, sign(body, SECRET, int(time.time()) - 301))),
        ("garbage header", lambda body: http_v2(body, "t=abc,v1=")),
        ("v0 only", lambda body: http_v2(body, sign(body, SECRET).replace("v1=", "v0="))),
    ],
)
def test_bad_signatures_are_refused_and_nothing_is_queued(
    make_intake: Callable[..., Intake],
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
    case: str,
    make_request: Callable[[bytes], dict[str, Any]],
):
    body = encode(snapshot_event("invoice.created", INVOICE))

    response = call(make_intake(), make_request(body))

    assert response["statusCode"] == 400, case
    assert response["json"]["error"].startswith("invalid signature")
    assert queued(queue_url) == []
    assert _metric_values(capsys.readouterr().out, "SignatureFailures") == [1.0]


def test_timestamp_inside_tolerance_is_accepted(make_intake: Callable[..., Intake]):
    body = encode(snapshot_event("invoice.created", INVOICE))
    response = call(make_intake(), http_v2(body, sign(body, SECRET, int(time.time()) - 290)))
    assert response["statusCode"] == 200


def test_either_secret_verifies_during_rotation(make_intake: Callable[..., Intake], queue_url: str):
    intake = make_intake(STRIPE_WEBHOOK_SECRET=f"{OLD_SECRET},{SECRET}")
    for secret in (OLD_SECRET, SECRET):
        body = encode(snapshot_event("invoice.created", INVOICE))
        assert call(intake, http_v2(body, sign(body, secret)))["statusCode"] == 200
    assert len(queued(queue_url)) == 2


def test_any_v1_signature_in_the_header_may_match(make_intake: Callable[..., Intake]):
    body = encode(snapshot_event("invoice.created", INVOICE))
    timestamp = int(time.time())
    ours = sign(body, SECRET, timestamp).split(",")[1]
    other = sign(body, "whsec_other", timestamp).split(",")[1]
    header = f"t={timestamp},{other},{ours},v0=deadbeef"

    assert call(make_intake(), http_v2(body, header))["statusCode"] == 200


def test_base64_body_is_verified_on_its_exact_bytes(
    make_intake: Callable[..., Intake], queue_url: str
):
    event = snapshot_event("invoice.created", {**INVOICE, "description": "Überweisung ✓"})
    body = json.dumps(event, ensure_ascii=False).encode()

    response = call(make_intake(), http_v2(body, sign(body, SECRET), base64_body=True))

    assert response["statusCode"] == 200
    [message] = queued(queue_url)
    assert message["Body"].encode() == body


def test_rest_v1_events_are_accepted(make_intake: Callable[..., Intake], queue_url: str):
    body = encode(snapshot_event("invoice.finalized", INVOICE))
    assert call(make_intake(), rest_v1(body, sign(body, SECRET)))["statusCode"] == 200
    assert len(queued(queue_url)) == 1


def test_oversize_body_is_refused_before_verification(
    make_intake: Callable[..., Intake], queue_url: str
):
    body = encode(snapshot_event("invoice.created", {**INVOICE, "padding": "x" * 5000}))

    response = call(make_intake(MAX_BODY_BYTES="4096"), http_v2(body, sign(body, SECRET)))

    assert response["statusCode"] == 413
    assert queued(queue_url) == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"id": "evt_1"}'])
def test_malformed_json_after_a_valid_signature_is_refused(
    make_intake: Callable[..., Intake], queue_url: str, body: bytes
):
    response = call(make_intake(), http_v2(body, sign(body, SECRET)))
    assert response["statusCode"] == 400
    assert response["json"] == {"error": "body is not a Stripe event"}
    assert queued(queue_url) == []


def test_invalid_base64_is_refused(make_intake: Callable[..., Intake]):
    request = http_v2(b"", sign(b"", SECRET))
    request.update(body="%%%not-base64%%%", isBase64Encoded=True)
    assert call(make_intake(), request)["statusCode"] == 400


def test_other_event_types_are_ignored_not_queued(
    make_intake: Callable[..., Intake], queue_url: str
):
    body = encode(snapshot_event("customer.updated", {"id": "cus_1", "object": "customer"}))

    response = call(make_intake(), http_v2(body, sign(body, SECRET)))

    assert response["statusCode"] == 200
    assert response["json"] == {"status": "ignored", "type": "customer.updated"}
    assert queued(queue_url) == []


def test_accepted_types_are_configurable(make_intake: Callable[..., Intake], queue_url: str):
    intake = make_intake(ACCEPTED_EVENT_TYPES="customer.updated")
    accepted = encode(snapshot_event("customer.updated", {"id": "cus_1", "object": "customer"}))
    refused = encode(snapshot_event("invoice.created", INVOICE))
    assert call(intake, http_v2(accepted, sign(accepted, SECRET)))["json"]["status"] == "queued"
    assert call(intake, http_v2(refused, sign(refused, SECRET)))["json"]["status"] == "ignored"
    assert len(queued(queue_url)) == 1


def test_thin_meter_error_event_is_queued(make_intake: Callable[..., Intake], queue_url: str):
    thin = {
        "id": "evt_test_65R9Ijk8d7qGvD4vAh",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2026-11-25T14:00:00.000Z",
        "livemode": False,
        "related_object": {
            "id": "mtr_test_1",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_1",
        },
        "context": None,
    }
    body = encode(thin)

    assert call(make_intake(), http_v2(body, sign(body, SECRET)))["statusCode"] == 200
    [message] = queued(queue_url)
    envelope, event = read_body(
        message["Body"], message["MessageAttributes"]["body_kind"]["StringValue"]
    )
    assert (envelope.object_type, envelope.object_id, envelope.is_thin) == (
        "billing.meter",
        "mtr_test_1",
        True,
    )
    assert event == thin


def test_event_too_large_for_the_queue_travels_as_its_envelope(
    make_intake: Callable[..., Intake], queue_url: str, capsys: pytest.CaptureFixture[str]
):
    lines = [{"id": f"il_{i}", "description": "x" * 400} for i in range(20)]
    event = snapshot_event("invoice.created", {**INVOICE, "lines": {"data": lines}})
    body = encode(event)

    response = call(make_intake(QUEUE_MAX_MESSAGE_BYTES="4096"), http_v2(body, sign(body, SECRET)))

    assert response["statusCode"] == 200
    [message] = queued(queue_url)
    assert message["MessageAttributes"]["body_kind"]["StringValue"] == "envelope"
    envelope, full_event = read_body(message["Body"], "envelope")
    assert full_event is None
    assert (envelope.id, envelope.type, envelope.object_id) == (
        event["id"],
        "invoice.created",
        "in_test_1",
    )
    assert _metric_values(capsys.readouterr().out, "EventsQueuedAsEnvelope") == [1.0]


def test_queue_down_answers_503_and_the_redelivery_is_queued_once(
    make_intake: Callable[..., Intake], queue_url: str
):
    dead_endpoint = f"http://127.0.0.1:{_closed_port()}"
    healthy = make_intake()
    broken = Intake(
        verifier=healthy._verifier,
        queue=SqsQueue(queue_url, client=boto3.client("sqs", endpoint_url=dead_endpoint)),
        accepted_event_types=healthy._accepted,
        max_body_bytes=healthy._max_body_bytes,
        queue_max_message_bytes=healthy._queue_max_message_bytes,
    )
    event = snapshot_event("invoice.created", INVOICE)
    body = encode(event)

    first = call(broken, http_v2(body, sign(body, SECRET)))
    assert first["statusCode"] == 503, "Stripe retries on 5xx, so the event is not lost"

    retry = call(healthy, http_v2(body, sign(body, SECRET)))
    assert retry["statusCode"] == 200
    assert [json.loads(m["Body"])["id"] for m in queued(queue_url)] == [event["id"]]


def test_non_post_is_refused(make_intake: Callable[..., Intake]):
    request = http_v2(b"", None)
    request["requestContext"]["http"]["method"] = "GET"
    assert call(make_intake(), request)["statusCode"] == 405


def test_logs_carry_no_secret_and_no_body(make_intake: Callable[..., Intake]):
    customer_email = "jenny.rosen@example.com"
    body = encode(snapshot_event("invoice.created", {**INVOICE, "customer_email": customer_email}))
    with capture_logs() as records:
        call(make_intake(), http_v2(body, sign(body, SECRET)))
        call(make_intake(), http_v2(body, sign(body, "whsec_wrong")))
    assert [(r["message"], r["status"]) for r in records] == [
        ("webhook answered", 200),
        ("webhook answered", 400),
    ]
    text = json.dumps(records)
    assert SECRET not in text
    assert customer_email not in text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric_values(stdout: str, name: str) -> list[float]:
    """Values of one metric across the EMF documents Powertools printed."""
    values: list[float] = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            if name in document:
                value = document[name]
                values.extend(value if isinstance(value, list) else [value])
    return values


def test_realistic_invoice_created_from_stripe_fixture(
    make_intake: Callable[..., Intake], queue_url: str
):
    """Stripe's own example invoice (tests/fixtures, from stripe/openapi) as a renewal draft."""
    fixtures = json.loads((Path(__file__).parents[1] / "fixtures/stripe_fixtures.json").read_text())
    invoice = {
        **fixtures["invoice"],
        "status": "draft",
        "billing_reason": "subscription_cycle",
        "customer_email": "jenny.rosen@example.com",
    }
    event = {**fixtures["event"], "id": "evt_fixture_1", "created": int(time.time())}
    event.update(type="invoice.created", data={"object": invoice})
    body = json.dumps(event, indent=2, ensure_ascii=False).encode()

    response = call(make_intake(), http_v2(body, sign(body, SECRET), base64_body=True))

    assert response["statusCode"] == 200
    [message] = queued(queue_url)
    envelope, full_event = read_body(message["Body"], "event")
    assert (envelope.object_type, envelope.object_id) == ("invoice", fixtures["invoice"]["id"])
    assert envelope.api_version == fixtures["event"]["api_version"]
    assert full_event == event


# --- Hostile input (issue 13, item 1): 4xx for anything unsigned or unmodellable -------------


@pytest.mark.parametrize(
    "header",
    [
        "t=1700000000,v1=\xe9",  # one non-ASCII character: the SDK's compare_digest TypeError
        "t=1700000000,v1=\ud800",  # a lone surrogate, as a JSON event can carry it
        "t=\u0661\u0662\u0663,v1=abc",  # Arabic-Indic digits, which int() accepts
        "t=1700000000,v1=" + "é" * 64,
    ],
)
def test_non_ascii_signature_headers_are_a_signature_failure_not_a_crash(
    make_intake: Callable[..., Intake],
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
    header: str,
):
    body = encode(snapshot_event("invoice.created", INVOICE))

    response = call(make_intake(), http_v2(body, header))

    assert response["statusCode"] == 400
    assert response["json"]["error"].startswith("invalid signature")
    assert queued(queue_url) == []
    assert _metric_values(capsys.readouterr().out, "SignatureFailures") == [1.0]


def _event_text(**overrides: Any) -> str:
    event = snapshot_event("invoice.created", INVOICE)
    event.update(overrides)
    return json.dumps(event)  # ensure_ascii: a lone surrogate is written as \ud800


SIGNED_BUT_UNMODELLABLE = {
    "nesting bomb": "[" * 50_000 + "]" * 50_000,
    "nesting bomb inside an event": (
        _event_text()[:-1] + ', "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
    ),
    "lone surrogate in the event id": _event_text(id="evt_\ud800"),
    "lone surrogate in the type": _event_text(type="invoice.created\udfff"),
    "non-ASCII event id": _event_text(id="evt_é"),
    "event id of 100 KB": _event_text(id="evt_" + "a" * 100_000),
    "lone surrogate in the object id": _event_text(data={"object": {"id": "in_\ud800"}}),
    "JSON array of events": "[" + _event_text() + "]",
    "created beyond a float": _event_text()[:-1] + ', "created": 1e400}',
    "created with 5000 digits": _event_text()[:-1] + ', "created": ' + "9" * 5000 + "}",
    "created NaN": _event_text()[:-1] + ', "created": NaN}',
    "byte-order mark": "\ufeff" + _event_text(),
    "empty body": "",
}


@pytest.mark.parametrize("case", sorted(SIGNED_BUT_UNMODELLABLE))
def test_validly_signed_bodies_it_cannot_model_are_400(
    make_intake: Callable[..., Intake],
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
    case: str,
):
    body = SIGNED_BUT_UNMODELLABLE[case].encode()

    response = call(
        make_intake(MAX_BODY_BYTES="262144"), http_v2(body, sign(body, SECRET), base64_body=True)
    )

    assert response["statusCode"] == 400, case
    assert response["json"] == {"error": "body is not a Stripe event"}
    assert queued(queue_url) == []
    assert _metric_values(capsys.readouterr().out, "MalformedEvents") == [1.0]


def test_body_text_without_utf8_form_is_refused(make_intake: Callable[..., Intake], queue_url: str):
    """A JSON event can carry a lone surrogate as the body itself (not base64)."""
    request = http_v2(b"", "t=1,v1=00")
    request["body"] = '{"id": "evt_\ud800"}'

    response = call(make_intake(), request)

    assert response["statusCode"] == 400
    assert queued(queue_url) == []
