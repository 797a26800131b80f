"""Events (v1 snapshot and v2 thin) and their signed, retried delivery to webhook endpoints."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import objects, versions
from .config import EmulatorConfig
from .store import Obj, Store, public

THIN_EVENT = "v2.core.event"


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe-Signature header: hex HMAC-SHA256 of "{t}.{body}" keyed by the endpoint secret
    (docs/stripe.md#S-WH-1)."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def rfc3339(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass(order=True)
class _Attempt:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    url: str = field(compare=False)
    secret: str = field(compare=False)
    event_id: str = field(compare=False)
    event_type: str = field(compare=False)
    payload: bytes = field(compare=False)
    number: int = field(compare=False, default=1)


class Deliveries:
    """Background delivery: a scheduler thread hands due attempts to a small pool of senders."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._cond = threading.Condition()
        self._queue: list[_Attempt] = []
        self._seq = itertools.count()
        self._unsettled = 0
        self._stopped = False
        self.attempts: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stripe-emu-webhook")
        self._thread = threading.Thread(
            target=self._schedule, name="stripe-emu-webhooks", daemon=True
        )
        self._thread.start()

    def enqueue(self, endpoint: Obj, event_id: str, event_type: str, payload: bytes) -> None:
        with self._cond:
            self._unsettled += 1
            heapq.heappush(
                self._queue,
                _Attempt(
                    time.monotonic(),
                    next(self._seq),
                    endpoint["id"],
                    endpoint["url"],
                    endpoint["secret"],
                    event_id,
                    event_type,
                    payload,
                ),
            )
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return self._unsettled == 0

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _schedule(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                    not self._queue or self._queue[0].due > time.monotonic()
                ):
                    wait = self._queue[0].due - time.monotonic() if self._queue else None
                    self._cond.wait(timeout=wait)
                if self._stopped:
                    return
                attempt = heapq.heappop(self._queue)
            try:
                self._pool.submit(self._send, attempt)
            except RuntimeError:
                return

    def _send(self, attempt: _Attempt) -> None:
        header = sign(attempt.payload, attempt.secret, int(time.time()))
        request = urllib.request.Request(
            attempt.url,
            data=attempt.payload,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": header,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        status: int | None
        error: str | None = None
        try:
            with urllib.request.urlopen(
                request, timeout=self._config.webhook_timeout_seconds
            ) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            status, error = None, str(exc)
        ok = status is not None and 200 <= status < 300
        delays = self._config.webhook_retry_delays
        with self._cond:
            self.attempts.append(
                {
                    "endpoint": attempt.endpoint_id,
                    "url": attempt.url,
                    "event_id": attempt.event_id,
                    "type": attempt.event_type,
                    "attempt": attempt.number,
                    "status_code": status,
                    "error": error,
                    "at": time.time(),
                }
            )
            if not ok and attempt.number <= len(delays) and not self._stopped:
                attempt.due = time.monotonic() + delays[attempt.number - 1]
                attempt.seq = next(self._seq)
                attempt.number += 1
                heapq.heappush(self._queue, attempt)
                self._cond.notify_all()
            else:
                self._unsettled -= 1


class Events:
    """Creates v1 snapshot events and v2 thin events, stores them, and fans them out."""

    def __init__(
        self, store: Store, config: EmulatorConfig, deliveries: Deliveries, api_version: str
    ) -> None:
        self._store = store
        self._config = config
        self._deliveries = deliveries
        self.api_version = api_version
        # Contract mode's check of each delivered snapshot event (server.enable_contract).
        self.on_webhook: Callable[[Obj], None] | None = None

    def snapshot(
        self,
        type_: str,
        obj: Obj,
        created: int,
        *,
        previous_attributes: Obj | None = None,
        request: Obj | None = None,
    ) -> Obj:
        data: Obj = {"object": obj}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        with self._store.lock:
            event = objects.event(
                self._store.new_id("evt"),
                created,
                type_,
                data,
                self.api_version,
                request or {"id": None, "idempotency_key": None},
            )
            endpoints = self._endpoints_for(type_, thin=False)
            event["pending_webhooks"] = len(endpoints)
            self._store.put("event", event)
        stored = public(event)
        for endpoint in endpoints:
            # Each endpoint gets the event in its own API version (docs/stripe.md#S-VER-1).
            version = (
                self._config.render_api_version or endpoint.get("api_version") or self.api_version
            )
            body = versions.render({**stored, "api_version": version}, version)
            if self.on_webhook is not None:
                self.on_webhook(body)
            payload = json.dumps(body, indent=2).encode()
            self._deliveries.enqueue(endpoint, event["id"], type_, payload)
        return event

    def thin(self, type_: str, related_object: Obj | None, data: Obj) -> Obj:
        """A v2 event: the webhook carries only a pointer; `data` is served by /v2/core/events."""
        # No `context`, `reason` or `changes`: absent outside Connect, API-request causes and
        # update events (the spec allows no null for them).
        with self._store.lock:
            event: Obj = {
                "id": self._store.new_id("evt_test", 32),
                "object": THIN_EVENT,
                "type": type_,
                "created": rfc3339(time.time()),
                "livemode": False,
                "data": data,
            }
            if related_object is not None:
                event["related_object"] = related_object
            self._store.put(THIN_EVENT, event)
            endpoints = self._endpoints_for(type_, thin=True)
        notification = {key: value for key, value in event.items() if key != "data"}
        payload = json.dumps(notification, indent=2).encode()
        for endpoint in endpoints:
            self._deliveries.enqueue(endpoint, event["id"], type_, payload)
        return event

    def _endpoints_for(self, type_: str, *, thin: bool) -> list[Obj]:
        chosen = []
        for endpoint in self._store.all("webhook_endpoint"):
            if endpoint.get("status") != "enabled" or not endpoint.get("url"):
                continue
            enabled = endpoint.get("enabled_events") or []
            wildcard = "*" in enabled and (
                not thin or self._config.thin_events_to_wildcard_endpoints
            )
            if type_ in enabled or wildcard:
                chosen.append(endpoint)
        return chosen
