"""Stripe events as Stripe sends them: JSON bytes plus a real Stripe-Signature header."""

import json
import time
import uuid
from typing import Any

import stripe

API_VERSION = "2026-10-28.endive"


def snapshot_event(event_type: str, obj: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    event.update(overrides)
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp))
