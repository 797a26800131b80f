"""MeterEventStream: Stripe's v2 meter event stream (METER_EVENT_API=v2).

Concurrent reports' events are gathered into requests of ≤ 100 on the meter_events host,
authenticated by a meter event session token (valid 15 minutes, reused until a minute
before it expires). Stripe validates stream events later and reports errors by the
request's idempotency key, so each request gets a key of its own, told to the ledger first.
"""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import stripe

from meterbridge.adapters.stripe_calls import StripeCalls
from meterbridge.errors import PermanentError

STREAM_KEY_PREFIX = "mbs-"

# Called with (idempotency key, identifiers) before each v2 stream request is sent: Stripe's
# asynchronous error reports name only that key, so the ledger must know what it carried.
StreamRequestHook = Callable[[str, list[str]], None]


@dataclass(eq=False)  # identity: two equal events are still two reports
class _Pending:
    event: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class MeterEventStream:
    """Gathers the meter events of concurrent threads into v2 stream requests of ≤ 100.

    Each report's thread hands its event in and waits: the request leaves when 100 events
    are waiting, or when the oldest has waited `linger_seconds` (so a lone report is not
    held back). Every event of a request shares its outcome — accepted, or the request's
    error — so each thread still moves its own ledger report to `sent` or `failed`.
    """

    def __init__(
        self,
        calls: StripeCalls,
        *,
        linger_seconds: float = 0.05,
        max_events: int = 100,
        on_request: StreamRequestHook | None = None,
    ):
        self._calls = calls
        self._linger = linger_seconds
        self._max = max_events
        self._on_request = on_request
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._session_lock = threading.Lock()
        self._session: tuple[str, float] | None = None  # (token, expires at, unix seconds)

    def send(self, event: dict[str, Any]) -> None:
        """Returns once the request carrying `event` was accepted; raises its error."""
        item = _Pending(event)
        with self._lock:
            self._pending.append(item)
            chunk = self._take() if len(self._pending) >= self._max else None
        if chunk is None and not item.done.wait(self._linger):
            with self._lock:
                chunk = self._take() if item in self._pending else None
        if chunk is not None:
            self._flush(chunk)
        item.done.wait()
        if item.error is not None:
            raise item.error

    def request(self, events: list[dict[str, Any]]) -> None:
        """One meter_event_stream request (≤ 100 events) under a key of its own (never one
        whose saved answer is a failure), told to `on_request` first."""
        key = f"{STREAM_KEY_PREFIX}{uuid.uuid4().hex}"
        if self._on_request is not None:
            self._on_request(key, [str(e["identifier"]) for e in events])
        params: Any = {"events": events}
        for renewed in (False, True):
            token = self._session_token(renew=renewed)
            try:
                self._calls.call(
                    lambda token=token: self._calls.client.v2.billing.meter_event_stream.create(  # type: ignore[misc]
                        params, {"api_key": token, "idempotency_key": key}
                    ),
                    limited=True,
                )
                return
            except PermanentError as error:
                # stripe-python raises TemporarySessionExpiredError for v2's
                # temporary_session_expired, AuthenticationError for a revoked token.
                expired = (stripe.AuthenticationError, stripe.TemporarySessionExpiredError)
                if renewed or not isinstance(error.__cause__, expired):
                    raise
                # The session expired early (or was revoked): one retry with a new token.

    def _session_token(self, *, renew: bool = False) -> str:
        """A meter event session token, valid 15 minutes: reused until a minute before."""
        with self._session_lock:
            now = time.time()
            if renew or self._session is None or self._session[1] - 60 <= now:
                session = self._calls.call(self._calls.client.v2.billing.meter_event_session.create)
                expires = datetime.fromisoformat(str(session.expires_at)).timestamp()
                self._session = (session.authentication_token, expires)
            return self._session[0]

    def _take(self) -> list[_Pending]:
        chunk, self._pending = self._pending[: self._max], self._pending[self._max :]
        return chunk

    def _flush(self, chunk: list[_Pending]) -> None:
        error: Exception | None = None
        try:
            self.request([item.event for item in chunk])
        except Exception as failure:  # every event of the request shares its fate
            error = failure
        for item in chunk:
            item.error = error
            item.done.set()
