"""Webhook intake: verify, then parse the envelope, then filter, then enqueue.

Order matters: nothing is parsed before the signature holds, and nothing reaches the
queue that is unsigned, stale, malformed or of a type nobody handles.
"""

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from meterbridge.adapters.queue import EventQueue, UnqueueableBody, message_size
from meterbridge.adapters.signature import InvalidSignature, SignatureVerifier
from meterbridge.errors import SettingsError, TransientError
from meterbridge.messages import EventEnvelope, envelope_body, message_attributes


class Outcome(StrEnum):
    """What happened to one delivery; the handler turns each into a metric of the same name."""

    QUEUED = "EventsQueued"
    QUEUED_AS_ENVELOPE = "EventsQueuedAsEnvelope"
    IGNORED = "EventsIgnored"
    BODY_TOO_LARGE = "BodiesTooLarge"
    SIGNATURE_INVALID = "SignatureFailures"
    MALFORMED = "MalformedEvents"
    QUEUE_UNAVAILABLE = "QueueFailures"
    SECRETS_UNAVAILABLE = "SecretsUnavailable"


@dataclass(frozen=True)
class Reply:
    status: int
    outcome: Outcome
    body: dict[str, Any]
    envelope: EventEnvelope | None = field(default=None)
    detail: str | None = None  # for the logs only, never the response: why it failed


class Intake:
    def __init__(
        self,
        verifier: SignatureVerifier,
        queue: EventQueue,
        accepted_event_types: frozenset[str],
        max_body_bytes: int,
        queue_max_message_bytes: int,
    ):
        self._verifier = verifier
        self._queue = queue
        self._accepted = accepted_event_types
        self._max_body_bytes = max_body_bytes
        self._queue_max_message_bytes = queue_max_message_bytes

    def receive(self, body: bytes, signature_header: str | None) -> Reply:
        if len(body) > self._max_body_bytes:
            return Reply(
                413,
                Outcome.BODY_TOO_LARGE,
                {"error": f"body larger than {self._max_body_bytes} bytes"},
            )
        try:
            self._verifier.verify(body, signature_header)
        except InvalidSignature as exc:
            return Reply(400, Outcome.SIGNATURE_INVALID, {"error": f"invalid signature: {exc}"})
        except (TransientError, SettingsError) as exc:
            # No secret to judge by (unreadable or missing): answer 5xx so Stripe retries.
            return Reply(
                503,
                Outcome.SECRETS_UNAVAILABLE,
                {"error": "secrets unavailable, retry"},
                detail=str(exc),
            )

        text = body.decode("utf-8")  # verification already proved it is UTF-8
        envelope = _parse_envelope(text)
        if envelope is None:
            return Reply(400, Outcome.MALFORMED, {"error": "body is not a Stripe event"})
        if envelope.type not in self._accepted:
            return Reply(
                200, Outcome.IGNORED, {"status": "ignored", "type": envelope.type}, envelope
            )

        attributes = message_attributes(envelope, "event")
        outcome = Outcome.QUEUED
        if message_size(text, attributes) > self._queue_max_message_bytes:
            # Too big for the queue: send what identifies it; the worker fetches the event.
            text = envelope_body(envelope)
            attributes = message_attributes(envelope, "envelope")
            outcome = Outcome.QUEUED_AS_ENVELOPE
        try:
            try:
                self._queue.send(text, attributes)
            except UnqueueableBody:
                # The envelope is plain ASCII ids; the worker fetches the event from Stripe.
                outcome = Outcome.QUEUED_AS_ENVELOPE
                self._queue.send(envelope_body(envelope), message_attributes(envelope, "envelope"))
        except (TransientError, UnqueueableBody) as exc:
            # 503 makes Stripe redeliver later, so the event is not lost.
            return Reply(
                503,
                Outcome.QUEUE_UNAVAILABLE,
                {"error": "queue unavailable, retry"},
                envelope,
                detail=str(exc),
            )
        return Reply(200, outcome, {"status": "queued", "id": envelope.id}, envelope)


# What Stripe puts in an event's id, type, object id and API version: printable ASCII, at
# most 255 characters. These travel as SQS message attributes, log keys and ledger keys;
# anything else (a lone surrogate, which cannot even be encoded to UTF-8, a 200 KB id
# that would push the envelope past the queue's size limit) is a body we cannot route.
_ROUTABLE_TEXT = re.compile(r"[\x21-\x7e]{1,255}")


def _parse_envelope(text: str) -> EventEnvelope | None:
    """The envelope of a verified body, or None when it is not a Stripe event we can route.

    Parsed from the decoded text, the exact text that is queued: json.loads on bytes would
    guess UTF-16/32 from NUL bytes and could read something else than what is sent on.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: a signed nesting bomb ([[[[…). ValueError also covers numbers
        # with more digits than int() converts.
        return None
    if not isinstance(document, dict):
        return None
    try:
        envelope = EventEnvelope.from_event(document)
    except ValidationError:
        return None
    return envelope if _routable(envelope) else None


def _routable(envelope: EventEnvelope) -> bool:
    created = envelope.created if isinstance(envelope.created, str) else None
    optional = (envelope.object_id, envelope.object_type, envelope.api_version, created)
    return all(_ROUTABLE_TEXT.fullmatch(value) for value in (envelope.id, envelope.type)) and all(
        value is None or _ROUTABLE_TEXT.fullmatch(value) for value in optional
    )
