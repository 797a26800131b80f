"""The worker's choices, built once from WorkerSettings by the composition root."""

from collections.abc import Collection
from dataclasses import dataclass

from meterbridge.domain.continuous import Cadence, sweeps, trues_up
from meterbridge.domain.guard import GuardMode


@dataclass(frozen=True)
class ReportingPolicy:
    """What to report and how long to remember."""

    billing_reasons: Collection[str] = frozenset()  # empty: eligibility's default
    meter_event_names: Collection[str] = frozenset()
    report_zero_usage: bool = True
    grace_period_seconds: int = 3600
    tenant_metadata_key: str | None = None
    lease_seconds: int = 120
    event_memory_seconds: int = 4 * 86_400


@dataclass(frozen=True)
class GuardPolicy:
    """The invoice guard (docs/guard.md): confirm, hold, or off."""

    mode: GuardMode = "confirm"
    hold_limit_seconds: int = 86_400
    confirmation_margin_seconds: int = 900
    confirm_delay_seconds: int = 60
    confirm_max_delay_seconds: int = 900
    confirm_max_checks: int = 200
    grace_period_seconds: int = 3600

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def holds(self) -> bool:
        return self.mode == "hold"


@dataclass(frozen=True)
class ContinuousPolicy:
    """Continuous reporting (docs/continuous.md): sweeps during the period, a true-up at
    renewal."""

    cadence: Cadence = "off"
    settle_seconds: int = 600
    grace_period_seconds: int = 3600
    pairs_per_message: int = 10  # (customer, meter) pairs one sweep work message carries
    meter_event_names: Collection[str] = frozenset()
    tenant_metadata_key: str | None = None
    event_memory_seconds: int = 4 * 86_400

    @property
    def sweeps(self) -> bool:
        return sweeps(self.cadence)

    @property
    def trues_up(self) -> bool:
        return trues_up(self.cadence)
