"""The queue message between the webhook and the worker function.

Body: the verified Stripe event exactly as Stripe sent it, or — when it is too large for
the queue — just its envelope, which the worker completes by fetching the event from
Stripe. Message attributes repeat the envelope's key facts so operators and filters can
read them without parsing bodies.

The worker also queues its own delayed "confirm" messages (body_kind `confirm`): a later
look at Stripe's aggregates for one invoice's reports, so that waiting for Stripe never
blocks a Lambda (SQS DelaySeconds, at most 15 minutes, is the timer).

Continuous reporting's sweeps (body_kind `sweep`, docs/continuous.md) come from the
EventBridge Scheduler schedule — which can set no message attributes, so a sweep body is
also recognised by its key — and from the worker itself as it fans a sweep out: one message
per page of subscriptions, and one per batch of (customer, meter) pairs to report.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

BodyKind = Literal["event", "envelope", "confirm", "sweep"]
CONFIRM = "confirm"
SWEEP = "sweep"
SWEEP_KEY = "meterbridge_sweep"
SWEEP_WORK_KEY = "meterbridge_sweep_work"

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


class SweepPage(BaseModel):
    """Sweep one page of subscriptions (the schedule's message starts at the first).

    `window_end` is decided once, by the first page, from `scheduled_at` (the schedule's
    nominal time, so a redelivered or replayed schedule message reports the same window) or
    from the test clock's time; every later message of the sweep carries it."""

    model_config = ConfigDict(frozen=True)

    window_end: int | None = None
    scheduled_at: str | None = None  # EventBridge Scheduler's <aws.scheduler.scheduled-time>
    test_clock: str | None = None  # sweep this test clock's subscriptions, on its time
    starting_after: str | None = None  # Stripe's cursor: the previous page's last id
    page: int = 1


class SweptPair(BaseModel):
    """One customer's meter to report, as the page listing found it."""

    model_config = ConfigDict(frozen=True)

    customer: str
    meter: str
    period_start: int
    period_end: int
    items: tuple[str, ...] = ()
    livemode: bool = False
    test_clock: str | None = None
    tenant: str | None = None  # with TENANT_METADATA_KEY: the customer's tenant


class SweepWork(BaseModel):
    """Report these pairs up to `window_end` (on their clock: `clock_offset` is that clock
    minus real time when the sweep began, 0 without a test clock)."""

    model_config = ConfigDict(frozen=True)

    window_end: int
    clock_offset: int = 0
    pairs: tuple[SweptPair, ...]


def is_sweep_body(body: str) -> bool:
    """A sweep message without attributes (the schedule's): recognised by its first key."""
    head = body.lstrip()[:40].replace(" ", "")
    return head.startswith(('{"' + SWEEP_KEY + '"', '{"' + SWEEP_WORK_KEY + '"'))


def sweep_body(request: SweepPage | SweepWork) -> str:
    key = SWEEP_WORK_KEY if isinstance(request, SweepWork) else SWEEP_KEY
    payload = request.model_dump(exclude_defaults=True)
    return json.dumps({key: payload}, separators=(",", ":"))


def sweep_attributes(request: SweepPage | SweepWork, livemode: bool = False) -> dict[str, str]:
    if isinstance(request, SweepWork):
        first = request.pairs[0] if request.pairs else None
        subject = f"work:{request.window_end}:{first.customer if first else ''}"
    else:
        subject = f"page:{request.window_end}:{request.starting_after or ''}"
    return {
        ATTR_EVENT_ID: f"sweep:{subject}",
        ATTR_EVENT_TYPE: "meterbridge.sweep",
        ATTR_LIVEMODE: "true" if livemode else "false",
        ATTR_BODY_KIND: SWEEP,
    }


def read_sweep(body: str) -> SweepPage | SweepWork:
    document = json.loads(body)
    if SWEEP_WORK_KEY in document:
        return SweepWork.model_validate(document[SWEEP_WORK_KEY])
    return SweepPage.model_validate(document[SWEEP_KEY] or {})
