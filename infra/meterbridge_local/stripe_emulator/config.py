"""Emulator settings; read live by the running emulator, so tests can inject faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# When a failing call fails (docs/stripe.md#S-IDEM-1 for why it matters):
# - "before_execution": before the endpoint runs; nothing changes and nothing is saved under
#   the Idempotency-Key, so a retry with the same key runs the request afresh;
# - "after_execution": the endpoint ran (a meter event is counted), then the answer is the
#   error, and that error is saved under the key and replayed to every retry with it;
# - "during_execution": the endpoint began and failed (nothing counted); the error is saved
#   under the key all the same.
Stage = Literal["before_execution", "after_execution", "during_execution"]
STAGES: tuple[Stage, ...] = ("before_execution", "after_execution", "during_execution")


@dataclass
class FailRule:
    """Fail the next `count` calls whose path starts with `path` (and method, if given)."""

    path: str
    count: int = 1
    status: int = 500
    method: str | None = None
    stage: Stage = "before_execution"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {self.stage!r}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx, not {self.status}")

    def matches(self, method: str, path: str) -> bool:
        return (
            self.count > 0
            and path.startswith(self.path)
            and (self.method is None or self.method.upper() == method)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "count": self.count,
            "status": self.status,
            "method": self.method,
            "stage": self.stage,
        }


@dataclass
class EmulatorConfig:
    """Behaviour knobs for the Stripe billing emulator.

    Knobs named for a Stripe behaviour exist because Stripe does not document it (the [?] lines
    of docs/stripe.md): `timestamp_reference` and `timestamp_validation` (S-TS-2), the billing
    reasons and finalization of cancellation invoices (S-CANCEL-3, S-CANCEL-4).
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
    # Deterministic faults: each rule fails the next `count` calls on its path prefix, then
    # goes. Append to it on a running emulator (or `emu.fail_next(...)`, or POST
    # /_emulator/faults/fail_next); see faults.FailRule for the stages.
    fail_next: list[FailRule] = field(default_factory=list)
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
    seed: int = 0
    # Real Stripe sends thin events only to event destinations; meterbridge takes both kinds on
    # one route, so an endpoint subscribed to "*" receives them too unless this is turned off.
    thin_events_to_wildcard_endpoints: bool = True
    webhook_timeout_seconds: float = 10.0
    # v1 idempotent answers are kept "at least 24 hours" (docs/stripe.md#S-IDEM-1).
    idempotency_memory_seconds: float = 24 * 3600
    # The account's default API version (events are stored rendered in it, and requests
    # without a Stripe-Version header answered in it); None = the stripe SDK's pinned version.
    api_version: str | None = None
    # Render every answer and webhook as this API version whatever the request or endpoint
    # asks: a stand-in for an integration pinned to an older version (docs/stripe.md#S-VER-2).
    render_api_version: str | None = None
    # Subscriptions created without billing_mode[type]: flexible since 2025-09-30.clover
    # (docs/stripe.md#S-MODE-1).
    default_billing_mode: Literal["flexible", "classic"] = "flexible"
    # Undocumented (docs/stripe.md#S-CANCEL-3, S-CANCEL-4): the billing_reason of the final
    # invoice of `DELETE /v1/subscriptions/{id}` with invoice_now=true, whether that invoice is
    # finalized at once, and the billing_reason of the final invoice of a subscription that
    # cancels at period end.
    invoice_now_billing_reason: str = "subscription_update"
    invoice_now_finalizes: bool = True
    period_end_cancel_billing_reason: str = "subscription_cycle"
    # Undocumented (docs/stripe.md#S-CHANGE-3): the line of the invoice item Stripe creates
    # for a removed metered price names no subscription item ("invoice_item_details"), or
    # the removed item like a proration line ("subscription_item_details").
    removed_usage_line_parent: Literal["invoice_item_details", "subscription_item_details"] = (
        "invoice_item_details"
    )
    # Contract mode: check every request and answer against this OpenAPI document (normally
    # tests/fixtures/stripe_openapi_trimmed.json); see contract.py.
    contract_spec: str | None = None
