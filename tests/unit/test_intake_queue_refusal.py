"""Bodies SQS refuses (characters JSON allows, SQS does not) travel as envelopes."""

import json

import boto3
import pytest
from botocore.stub import Stubber

from meterbridge.adapters.queue import SqsQueue, UnqueueableBody
from meterbridge.intake import Intake, Outcome
from tests.support.stripe_events import snapshot_event


class RefusingQueue:
    """Our own EventQueue port (not an SDK stand-in): refuses bodies with U+FFFF like SQS."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    def send(self, body: str, attributes: dict[str, str]) -> str:
        if "\uffff" in body:
            raise UnqueueableBody("queue refused the body: InvalidMessageContents")
        self.sent.append((body, attributes))
        return "m-1"


class AcceptingVerifier:
    def verify(self, payload: bytes, header: str | None) -> None:
        return None


def test_body_the_queue_refuses_is_queued_as_its_envelope():
    event = snapshot_event("invoice.created", {"id": "in_1", "object": "invoice", "x": "\uffff"})
    queue = RefusingQueue()
    intake = Intake(AcceptingVerifier(), queue, frozenset({"invoice.created"}), 10**6, 262_144)

    reply = intake.receive(json.dumps(event, ensure_ascii=False).encode(), "t=1,v1=x")

    assert (reply.status, reply.outcome) == (200, Outcome.QUEUED_AS_ENVELOPE)
    [(body, attributes)] = queue.sent
    assert attributes["body_kind"] == "envelope"
    assert json.loads(body)["meterbridge_envelope"]["object_id"] == "in_1"


def test_sqs_invalid_message_contents_is_told_apart_from_an_outage():
    # moto does not validate message characters, so this one answer is stubbed.
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")  # fmt: skip
    with Stubber(client) as stub:
        stub.add_client_error("send_message", service_error_code="InvalidMessageContents")
        queue = SqsQueue("https://sqs.us-east-1.amazonaws.com/1/q", client=client)
        with pytest.raises(UnqueueableBody):
            queue.send("\uffff", {})
