"""The queue message between the webhook and the worker function.

Body: the verified Stripe event exactly as Stripe sent it, or — when it is too large for
the queue — just its envelope, which the worker completes by fetching the event from
Stripe. Message attributes repeat the envelope's key facts so operators and filters can
read them without parsing bodies.

The worker also queues its own delayed "confirm" messages (body_kind `confirm`): a later
look at Stripe's aggregates for one invoice's reports, so that waiting for Stripe never
blocks a Lambda (SQS DelaySeconds, at most 15 minutes, is the timer).
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

BodyKind = Literal["event", "envelope", "confirm"]
CONFIRM = "confirm"

ATTR_EVENT_ID = "stripe_event_id"
ATTR_EVENT_TYPE = "stripe_event_type"
ATTR_LIVEMODE = "livemode"
ATTR_BODY_KIND = "body_kind"


class EventEnvelope(BaseModel):
    """The few fields of a Stripe event (snapshot or thin) that routing needs."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    api_version: str | None = None
    livemode: bool
    created: int | str  # unix seconds for snapshot events, RFC 3339 text for thin (v2) events
    object_type: str | None = None
    object_id: str | None = None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> "EventEnvelope":
        """Read a snapshot event (`data.object`) or a thin event (`related_object`)."""
        related = event.get("related_object")
        data = event.get("data")
        subject = data.get("object") if isinstance(data, dict) else None
        if isinstance(related, dict):
            object_type, object_id = related.get("type"), related.get("id")
        elif isinstance(subject, dict):
            object_type, object_id = subject.get("object"), subject.get("id")
        else:
            object_type = object_id = None
        return cls.model_validate(
            {
                "id": event.get("id"),
                "type": event.get("type"),
                "api_version": event.get("api_version"),
                "livemode": event.get("livemode"),
                "created": event.get("created"),
                "object_type": object_type,
                "object_id": object_id,
            }
        )

    @property
    def is_thin(self) -> bool:
        return isinstance(self.created, str)


def message_attributes(envelope: EventEnvelope, body_kind: BodyKind) -> dict[str, str]:
    return {
        ATTR_EVENT_ID: envelope.id,
        ATTR_EVENT_TYPE: envelope.type,
        ATTR_LIVEMODE: "true" if envelope.livemode else "false",
        ATTR_BODY_KIND: body_kind,
    }


def envelope_body(envelope: EventEnvelope) -> str:
    return json.dumps({"meterbridge_envelope": envelope.model_dump()}, separators=(",", ":"))


def read_body(body: str, body_kind: str) -> tuple[EventEnvelope, dict[str, Any] | None]:
    """Decode a queue message: the envelope always, the full event when it travelled whole."""
    document = json.loads(body)
    if body_kind == "envelope" or "meterbridge_envelope" in document:
        return EventEnvelope.model_validate(document["meterbridge_envelope"]), None
    return EventEnvelope.from_event(document), document


class ConfirmRequest(BaseModel):
    """Look again whether Stripe counts an invoice's reports (and release a held draft)."""

    model_config = ConfigDict(frozen=True)

    invoice_id: str
    customer_id: str
    check: int = 1  # this check's number: the back-off grows with it
    livemode: bool = False


def confirm_body(request: ConfirmRequest) -> str:
    return json.dumps({"meterbridge_confirm": request.model_dump()}, separators=(",", ":"))


def confirm_attributes(request: ConfirmRequest) -> dict[str, str]:
    return {
        ATTR_EVENT_ID: f"confirm:{request.invoice_id}:{request.check}",
        ATTR_EVENT_TYPE: "meterbridge.confirm",
        ATTR_LIVEMODE: "true" if request.livemode else "false",
        ATTR_BODY_KIND: CONFIRM,
    }


def read_confirm(body: str) -> ConfirmRequest:
    return ConfirmRequest.model_validate(json.loads(body)["meterbridge_confirm"])
