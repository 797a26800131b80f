"""Emulator settings; read live by the running emulator, so tests can inject faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class EmulatorConfig:
    """Behaviour knobs for the Stripe billing emulator.

    `timestamp_reference` and `timestamp_validation` exist because Stripe does not document
    whether a test-clock customer's meter event timestamps are judged against real time or the
    clock's time, nor whether the window check is synchronous (see STRIPE.md).
    """

    grace_period_seconds: int = 3600
    aggregation_lag_seconds: float = 0.0
    timestamp_reference: Literal["clock", "wall"] = "clock"
    timestamp_validation: Literal["async", "sync"] = "async"
    latency_seconds: float = 0.0
    error_rate_5xx: float = 0.0
    error_rate_429: float = 0.0
    meter_event_rate_limit: float | None = None
    # Path prefixes latency, 5xx and 429 apply to (empty = every path), so a test can fail
    # the code under test's calls while its own setup and checks go through.
    fault_paths: tuple[str, ...] = ()
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
    seed: int = 0
    # Real Stripe sends thin events only to event destinations; meterbridge takes both kinds on
    # one route, so an endpoint subscribed to "*" receives them too unless this is turned off.
    thin_events_to_wildcard_endpoints: bool = True
    webhook_timeout_seconds: float = 10.0
