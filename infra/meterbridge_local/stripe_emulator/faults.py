"""Fault injection: latency, random 5xx/429, deterministic "fail the next N calls", rate limit."""

from __future__ import annotations

import collections
import threading
import time

from .config import EmulatorConfig, FailRule
from .errors import StripeApiError
from .store import Store

METER_EVENT_PATHS = ("/v1/billing/meter_events", "/v2/billing/meter_event_stream")


def rate_limited() -> StripeApiError:
    return StripeApiError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
    )


def injected(status: int) -> StripeApiError:
    """The error a failing call answers: Stripe's 429 body, or an api_error for the rest."""
    if status == 429:
        return rate_limited()
    if status >= 500:
        return StripeApiError(
            status,
            "An unknown error occurred (injected by the emulator).",
            type_="api_error",
            should_retry=True,
        )
    return StripeApiError(status, "Request failed (injected by the emulator).")


class Faults:
    """Reads the live config on every call so tests can flip faults on a running emulator."""

    def __init__(self, config: EmulatorConfig, store: Store) -> None:
        self._config = config
        self._store = store
        self._lock = threading.Lock()
        self._meter_calls: collections.deque[float] = collections.deque()

    def take(self, method: str, path: str) -> FailRule | None:
        """Consume one call of the first matching `fail_next` rule (exhausted rules go)."""
        with self._lock:
            rules = self._config.fail_next
            for rule in rules:
                if rule.matches(method, path):
                    rule.count -= 1
                    if rule.count <= 0:
                        rules.remove(rule)
                    return FailRule(path, 1, rule.status, rule.method, rule.stage)
        return None

    def before(self, method: str, path: str) -> None:
        """Sleep and maybe raise, before the request touches any state (so retries are safe)."""
        config = self._config
        if config.fault_paths and not path.startswith(config.fault_paths):
            return self._limit_meter_events(method, path)
        if config.latency_seconds > 0:
            time.sleep(config.latency_seconds)
        if config.error_rate_5xx > 0 and self._store.random() < config.error_rate_5xx:
            raise injected(500)
        if config.error_rate_429 > 0 and self._store.random() < config.error_rate_429:
            raise rate_limited()
        self._limit_meter_events(method, path)

    def _limit_meter_events(self, method: str, path: str) -> None:
        limit = self._config.meter_event_rate_limit
        if limit is not None and method == "POST" and path in METER_EVENT_PATHS:
            now = time.monotonic()
            with self._lock:
                while self._meter_calls and self._meter_calls[0] <= now - 1.0:
                    self._meter_calls.popleft()
                if len(self._meter_calls) >= limit:
                    raise rate_limited()
                self._meter_calls.append(now)
