"""Fuzzing the webhook handler: nothing unsigned is queued, no 5xx, no unhandled exception.

hypothesis draws API Gateway requests — Stripe-Signature headers (Stripe's own, mutated,
stale, another endpoint's, junk, non-ASCII), bodies (real events with hostile fields,
arbitrary JSON, nesting, binary, UTF-16 and Latin-1 text, sizes around MAX_BODY_BYTES),
raw or base64-encoded, v2 or REST v1 — and sends each through the real handler, the
stripe SDK's signature check and real boto3 against moto's SQS. Derandomized and without
an example database, so every run (and CI) tries the same examples.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterbridge.adapters.queue import EventQueue
from meterbridge.handlers import webhook
from meterbridge_local.aws import MotoServer
from tests.integration.test_webhook import call, queued
from tests.support.stripe_events import sign, snapshot_event

SECRET = "whsec_fuzz_current"
OTHER_SECRET = "whsec_fuzz_someone_else"
MAX_BODY_BYTES = 8192
ACCEPTED = ("invoice.created", "invoice.finalized")
EXAMPLES = 600


class RecordingQueue:
    """The real SqsQueue (moto), remembering what it was asked to send."""

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue
        self.sent: list[str] = []

    def send(self, body: str, attributes: dict[str, str]) -> str:
        message_id = self._queue.send(body, attributes)
        self.sent.append(body)
        return message_id


def carries_our_signature(body: bytes, header: str | None) -> bool:
    """The oracle, independent of the code under test: does the header hold the HMAC of this
    exact body under our secret, for a timestamp it names? Nobody without the secret can
    produce one, so a request without it is unsigned, whatever else the header says."""
    if not header:
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name != "t":
            continue
        try:
            timestamp = int(value)
        except ValueError:
            continue
        payload = f"{timestamp}.{text}".encode()
        if hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest() in header:
            return True
    return False


# --- bodies -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
hostile_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\ud800", "evt_\udfff", "é", "\x00", "\uffff", "a" * 300, ""]),
)


@st.composite
def stripe_events(draw: st.DrawFn) -> bytes:
    """A Stripe event, most of it well-formed, some fields replaced by hostile values."""
    event = snapshot_event(
        draw(st.sampled_from([*ACCEPTED, *ACCEPTED, "customer.updated"])),
        {"id": f"in_{uuid.uuid4().hex[:14]}", "object": "invoice", "status": "draft"},
    )
    if draw(st.integers(0, 2)) == 0:
        for key in draw(st.sets(st.sampled_from(["id", "type", "created", "livemode", "data"]))):
            event[key] = draw(st.one_of(hostile_text, json_values))
    if draw(st.integers(0, 3)) == 0:
        event["padding"] = "x" * draw(st.integers(0, MAX_BODY_BYTES + 512))
    text = json.dumps(event, ensure_ascii=draw(st.booleans()), allow_nan=True)
    # A lone surrogate (ensure_ascii=False) has no UTF-8 form: surrogatepass writes its
    # three bytes anyway, which is not UTF-8, as a hostile sender could.
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16"]))
    return text.encode(encoding, errors="surrogatepass")


def _nested(depth: int, opener: str, closer: str) -> bytes:
    return (opener * depth + closer * depth).encode()


other_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 30_000).map(lambda depth: _nested(depth, "[", "]")),
    st.integers(1, 3_000).map(lambda depth: _nested(depth, '{"a":', "}")[:-1] + b"1}"),
    st.binary(max_size=512),
    st.text(max_size=200).map(lambda text: text.encode("latin-1", errors="replace")),
    st.integers(MAX_BODY_BYTES - 2, MAX_BODY_BYTES + 2).map(lambda size: b"{" + b" " * size),
)
# Half of them Stripe events (st.one_of would flatten other_bodies into seven even branches).
bodies = st.booleans().flatmap(lambda event: stripe_events() if event else other_bodies)


# --- headers ----------------------------------------------------------------------------


@st.composite
def signature_headers(draw: st.DrawFn, body: bytes) -> str | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")  # signed as Latin-1 text: never our exact bytes
    now = int(time.time())
    ours = str(stripe_sign(text, SECRET, now))
    kind = draw(
        st.sampled_from(
            ["ours"] * 6 + ["none", "other", "stale", "mutated", "mutated", "junk", "t-and-v1"]
        )
    )
    if kind == "ours":
        return ours
    if kind == "none":
        return draw(st.sampled_from([None, ""]))
    if kind == "other":
        return str(stripe_sign(text, OTHER_SECRET, now))
    if kind == "stale":
        return str(stripe_sign(text, SECRET, now - draw(st.integers(301, 10**9))))
    if kind == "mutated":
        position = draw(st.integers(0, len(ours)))
        cut = draw(st.integers(0, 3))
        return ours[:position] + draw(st.text(max_size=3)) + ours[position + cut :]
    if kind == "junk":
        return draw(st.text(max_size=200))
    timestamp = draw(st.one_of(st.integers().map(str), st.text(max_size=12)))
    signatures = draw(st.lists(st.text(max_size=70), min_size=1, max_size=3))
    return ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])


def stripe_sign(text: str, secret: str, timestamp: int) -> str:
    return sign(text.encode(), secret, timestamp)


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, str | None]:
    body = draw(bodies)
    header = draw(signature_headers(body))
    headers = {"content-type": "application/json"}
    if header is not None:
        name = draw(st.sampled_from(["stripe-signature", "Stripe-Signature", "STRIPE-SIGNATURE"]))
        headers[name] = header
    encoding = draw(st.sampled_from(["base64", "base64", "text", "broken base64"]))
    if encoding == "base64":
        body_field = base64.b64encode(body).decode()
    elif encoding == "text":
        # Bytes that are not UTF-8 become lone surrogates, as a JSON event could carry them.
        body_field = body.decode("utf-8", errors="surrogateescape")
    else:
        body_field = draw(st.text(max_size=50))
    method = draw(st.sampled_from(["POST"] * 19 + ["GET"]))
    if draw(st.booleans()):
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "POST /stripe/webhook",
            "rawPath": "/stripe/webhook",
            "headers": headers,
            "requestContext": {"http": {"method": method, "path": "/stripe/webhook"}},
        }
    else:
        event = {"resource": "/stripe/webhook", "httpMethod": method, "headers": headers}
    event.update(body=body_field, isBase64Encoded=encoding != "text")
    return event, _delivered(body_field, encoding != "text"), header


def _delivered(body_field: str, is_base64: bool) -> bytes:
    """The bytes a handler can read from the body field (b"" if it cannot read any)."""
    try:
        if is_base64:
            return base64.b64decode(body_field, validate=True)
        return body_field.encode("utf-8")
    except ValueError:
        return b""


# --- the property -----------------------------------------------------------------------


@pytest.fixture
def queue_url(aws: MotoServer) -> str:
    sqs = boto3.client("sqs")
    return str(sqs.create_queue(QueueName=f"fuzz-{uuid.uuid4().hex[:12]}")["QueueUrl"])


def test_fuzzed_requests_never_queue_unsigned_never_5xx_never_raise(queue_url: str) -> None:
    intake = webhook.build_intake(
        {
            "QUEUE_URL": queue_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "ACCEPTED_EVENT_TYPES": ",".join(ACCEPTED),
            "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        }
    )
    recording = RecordingQueue(intake._queue)
    intake._queue = recording
    outcomes: Counter[str] = Counter()
    signed_bodies: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(requests())
    def one_request(request: tuple[dict[str, Any], bytes, str | None]) -> None:
        event, body, header = request
        before = len(recording.sent)

        response = call(intake, event)  # an exception here fails the test

        status = response["statusCode"]
        assert status in {200, 400, 405, 413}, response
        signed = carries_our_signature(body, header)
        if not signed:
            assert status != 200, "an unsigned request was accepted"
        if len(recording.sent) > before:
            assert signed, "an unsigned request reached the queue"
            signed_bodies.add(body.decode("utf-8"))
        if status == 200 and response["json"]["status"] == "queued":
            assert len(recording.sent) == before + 1
        if (
            not signed
            and status == 400
            and len(body) <= MAX_BODY_BYTES
            and not response["json"]["error"].startswith("body is not valid")
        ):
            assert response["json"]["error"].startswith("invalid signature"), response
        reply = response["json"] or {}
        outcomes[f"{status} {reply.get('status') or reply.get('error', '').split(':')[0]}"] += 1

    one_request()
    print(f"webhook fuzz: {sum(outcomes.values())} requests: {dict(outcomes)}")

    # Every message on the queue is one the handler sent, and each carried our signature.
    assert sorted(m["Body"] for m in queued(queue_url)) == sorted(recording.sent)
    assert set(recording.sent) <= signed_bodies
    # The fuzz reached every door: queued, refused as unsigned, refused as malformed, too big.
    assert outcomes["200 queued"] >= EXAMPLES // 20, outcomes
    assert outcomes["400 invalid signature"] >= EXAMPLES // 10, outcomes
    assert outcomes["400 body is not a Stripe event"] >= EXAMPLES // 40, outcomes
    assert outcomes["413 body larger than 8192 bytes"] >= 1, outcomes
