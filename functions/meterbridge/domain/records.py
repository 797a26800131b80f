"""What the ledger remembers, as typed records: one report, one invoice, and their states.

The ledger adapter (adapters/ledger.py) is the only code that knows how these are stored;
everything else reads and writes these records. Each status set the code asks about
("delivered", "closed", "held") is a predicate here, spelled once.
"""

import re
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from enum import StrEnum

from meterbridge.domain.invoices import ServicePeriod


class ReportStatus(StrEnum):
    PENDING = "pending"  # claimed: an attempt holds the lease, or one died holding it
    SENT = "sent"
    LATE = "late"  # sent, but after the invoice's finalization time
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def delivered(self) -> bool:
        """Stripe holds the meter event (sent in time or late)."""
        return self in {ReportStatus.SENT, ReportStatus.LATE}

    @property
    def done(self) -> bool:
        """Nothing more to send: delivered, or skipped on purpose."""
        return self.delivered or self is ReportStatus.SKIPPED


class FailureClass(StrEnum):
    TRANSIENT = "transient"  # retried as it is
    PERMANENT = "permanent"  # refused before anything was counted: a retry starts afresh
    REJECTED = "rejected"  # Stripe refused it asynchronously (a meter error report)
    # It may have reached Stripe longer ago than Stripe remembers identifiers: neither
    # sending again nor giving up is safe without a person's check.
    OUTCOME_UNKNOWN = "outcome_unknown"

    @property
    def closed(self) -> bool:
        """Never sent again under this identifier: only a later revision can carry it."""
        return self in {FailureClass.REJECTED, FailureClass.OUTCOME_UNKNOWN}


class HoldStatus(StrEnum):
    HOLDING = "holding"  # recorded as ours, auto_advance=false being set
    HELD = "held"
    RELEASED = "released"
    RELEASED_AT_LIMIT = "released_at_limit"
    NOT_HELD = "not_held"

    @property
    def held(self) -> bool:
        return self in {HoldStatus.HOLDING, HoldStatus.HELD}


class ReleaseAction(StrEnum):
    AUTO_ADVANCE = "auto_advance"  # handed back: Stripe finalizes on its schedule
    FINALIZE = "finalize"  # finalized by meterbridge
    NONE = "none"  # no longer a draft when released


class ConfirmationStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    MISSING = "missing"  # unconfirmed within the margin before finalization
    # Stripe rejected some event of the v2 stream request that carried it (its error report
    # names only the request): unconfirmed until a check proves it counted.
    SUSPECT = "suspect"


class ReconciliationStatus(StrEnum):
    RECONCILED = "reconciled"
    MISMATCH = "mismatch"
    NOT_REPORTED = "not_reported"


class InvoiceStatus(StrEnum):
    REPORTED = "reported"
    SKIPPED = "skipped"
    FAILED = "failed"


_REVISION_SUFFIX = re.compile(r"-r(\d+)$")


@dataclass(frozen=True)
class Confirmation:
    """The invoice guard's last look at Stripe's aggregate for a report's window."""

    status: ConfirmationStatus
    observed: Decimal | None = None  # Stripe's summary
    expected: Decimal | None = None  # what the ledger says the window should hold
    checks: int = 0
    checked_at: int | None = None
    confirmed_at: int | None = None
    missing_at: int | None = None


@dataclass(frozen=True)
class Reconciliation:
    """A finalized line compared with what should have been billed."""

    status: ReconciliationStatus
    invoiced: Decimal | None = None
    expected: Decimal | None = None
    source: Decimal | None = None
    reason: str | None = None  # stripe_differs | usage_changed | no_value_recorded
    reconciled_at: int | None = None


@dataclass(frozen=True)
class ReportRecord:
    """One usage report (one meter event identifier) and everything that happened to it."""

    identifier: str
    invoice_id: str
    customer_id: str
    meter_id: str
    period: ServicePeriod
    status: ReportStatus
    subscription_items: tuple[str, ...] = ()
    line_ids: tuple[str, ...] = ()  # the lines of `invoice_id` it is billed on
    # Other invoices whose lines bill the same customer, meter and period (a shared meter:
    # two subscriptions on one meter); the report was sent once, for `invoice_id`.
    also_billed_on: frozenset[str] = frozenset()
    meter_event_name: str | None = None
    value: Decimal | None = None  # what was (or is about to be) sent
    timestamp: int | None = None  # the meter event's timestamp
    failure_class: FailureClass | None = None
    last_error: str | None = None
    attempts: int = 0
    lease_expires_at: int | None = None
    finalizes_at: int | None = None
    sent_at: int | None = None
    send_started_at: int | None = None
    stripe_request_id: str | None = None
    duplicate: bool = False
    livemode: bool = False
    created_at: str = ""
    updated_at: str = ""
    confirmation: Confirmation | None = None
    reconciliation: Reconciliation | None = None
    stripe_error_code: str | None = None
    stripe_error_event_id: str | None = None
    # A continuous-reporting sweep's report of one window (docs/continuous.md): no invoice,
    # `period` is the window.
    sweep: bool = False

    @property
    def delivered(self) -> bool:
        """Stripe holds it: sent or late, and not refused afterwards."""
        return self.status.delivered

    @property
    def closed(self) -> bool:
        return self.failure_class is not None and self.failure_class.closed

    @property
    def revision(self) -> int:
        """The revision from a readable identifier (`…-r2`); -1 for a hashed one."""
        match = _REVISION_SUFFIX.search(self.identifier)
        return int(match.group(1)) if match else -1

    @property
    def confirmation_status(self) -> ConfirmationStatus | None:
        return self.confirmation.status if self.confirmation is not None else None

    @property
    def reconciliation_status(self) -> ReconciliationStatus | None:
        return self.reconciliation.status if self.reconciliation is not None else None

    @property
    def confirmed(self) -> bool:
        return self.confirmation_status is ConfirmationStatus.CONFIRMED

    def report_key(self) -> tuple[str, str, int, int]:
        """Revisions of one report share this key: customer, meter and service period."""
        return (self.customer_id, self.meter_id, self.period.start, self.period.end)


@dataclass(frozen=True)
class InvoiceRecord:
    """One invoice's reporting outcome and what the invoice guard did to it."""

    invoice_id: str
    customer_id: str
    status: InvoiceStatus | None = None  # None: only the guard has written so far
    reason: str | None = None
    report_count: int = 0
    created_events: frozenset[str] = frozenset()  # invoice.created event ids processed
    guard_mode: str | None = None
    confirmation_scheduled_at: int | None = None
    hold_status: HoldStatus | None = None
    hold_reason: str | None = None
    held_at: int | None = None
    hold_deadline: int | None = None
    scheduled_finalization_at: int | None = None  # Stripe's schedule before the hold
    released_at: int | None = None
    release_action: ReleaseAction | None = None
    reconciliation_status: ReconciliationStatus | None = None
    reconciled_lines: int = 0
    mismatched_lines: int = 0
    reconciled_at: int | None = None
    # What the worker found on the invoice's lines beyond its own reports: shared meters,
    # lines no report can reach, lines billed without a report (one sentence each).
    findings: tuple[str, ...] = ()
    created_at: str = ""
    updated_at: str = ""

    @property
    def held(self) -> bool:
        return self.hold_status is not None and self.hold_status.held

    def saw_created_event(self, event_id: str) -> bool:
        return event_id in self.created_events


@dataclass(frozen=True)
class InvoiceChanges:
    """Attributes to set on an invoice's record; None leaves one as it is.

    `clear_reason` removes an earlier failure's reason; `clear_confirmation_schedule` lets
    a new chain of confirmation checks start (an operator's re-run).
    """

    status: InvoiceStatus | None = None
    reason: str | None = None
    report_count: int | None = None
    guard_mode: str | None = None
    confirmation_scheduled_at: int | None = None
    hold_status: HoldStatus | None = None
    hold_reason: str | None = None
    released_at: int | None = None
    release_action: ReleaseAction | None = None
    reconciliation_status: ReconciliationStatus | None = None
    reconciled_lines: int | None = None
    mismatched_lines: int | None = None
    reconciled_at: int | None = None
    findings: tuple[str, ...] | None = None
    clear_reason: bool = False
    clear_confirmation_schedule: bool = False

    def merged(self, later: "InvoiceChanges") -> "InvoiceChanges":
        """These changes, overridden by whatever `later` sets."""
        updates = {
            f.name: getattr(later, f.name)
            for f in fields(later)
            if getattr(later, f.name) is not None and getattr(later, f.name) is not False
        }
        return replace(self, **updates)

    def assigned(self) -> dict[str, object]:
        """The attributes to set, by field name (the adapter maps them to storage)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not f.name.startswith("clear_") and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class Claim:
    """The right to send one report. `value`/`timestamp` are reused from an earlier attempt
    that may already have reached Stripe, so the ledger always matches what Stripe holds."""

    identifier: str
    attempt: int
    value: Decimal | None = None
    timestamp: int | None = None
    send_started_at: int | None = None


@dataclass(frozen=True)
class Watermark:
    """How far continuous reporting has reported one customer's meter (docs/continuous.md).

    Everything before `position` is reported, or left to its period's renewal true-up. A
    `pending` window is one a sweep has claimed and not yet recorded: whoever meets it
    finishes it (under its own identifier) before reporting anything else, so two sweeps
    never report overlapping windows. `version` makes every change a conditional write.
    The period totals count the sweeps' delivered reports of one service period: the
    renewal checks that the ledger's customer index shows them all before it trues up."""

    customer_id: str
    meter_id: str
    position: int
    pending: ServicePeriod | None = None
    pending_period: ServicePeriod | None = None  # the service period the pending window is in
    period_start: int | None = None
    period_reports: int = 0
    period_total: Decimal = Decimal(0)  # what those reports make Stripe count
    version: int = 0
    updated_at: str = ""


@dataclass(frozen=True)
class InvoiceView:
    """An invoice's record and all its reports (every revision), for operators."""

    invoice_id: str
    record: InvoiceRecord | None
    reports: list[ReportRecord] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.record is not None or bool(self.reports)
