"""Judging a finalized invoice: do its metered lines bill what the usage source says?

The judge is the usage source, never the ledger: a line is right when it bills the source's
value for its customer, meter and period. The ledger only explains a wrong line: the usage
changed after it was reported, Stripe counts something else, the report was late, rejected,
never made — or the meter is priced on more than one line, which Stripe bills each in full.
"""

from dataclasses import dataclass
from decimal import Decimal

from meterbridge.domain.guard import billed_quantity, same_value
from meterbridge.domain.records import ReconciliationStatus


@dataclass(frozen=True)
class LineFacts:
    """The lines of one invoice that bill one meter for one period, and what is known."""

    invoiced: Decimal  # the lines' quantities together
    integer_quantity: bool  # a line shows only the integer `quantity`
    source: Decimal | None  # the usage source's value now; None: unreadable
    reported: Decimal | None  # what the ledger's delivered reports make Stripe count; None: none
    shared: bool = False  # the meter is billed on another line for an overlapping period
    rejected: bool = False  # Stripe rejected a report (not replaced by a revision)
    late: bool = False  # a report was sent after the invoice finalized
    refused: bool = False  # meterbridge cannot report this meter (domain.reports.refusal)


@dataclass(frozen=True)
class Verdict:
    status: ReconciliationStatus
    expected: Decimal | None  # what the lines should bill, from the source
    reason: str | None = None


MISMATCH_REASONS = (
    "refused_meter",  # a meter meterbridge cannot report (a count meter): nobody stands by it
    "shared_meter",  # several lines bill the meter: the usage is billed more than once
    "rejected",  # Stripe rejected the report asynchronously
    "not_reported",  # no report reached Stripe (UsageNotReported)
    "late",  # reported after the invoice finalized
    "usage_changed",  # Stripe bills what was reported; the source says otherwise now
    "stripe_differs",  # Stripe bills something other than what was reported
    "source_unreadable",  # the usage source could not be asked: nothing to judge by
)


def judge(facts: LineFacts) -> Verdict:
    if facts.refused:
        return Verdict(ReconciliationStatus.MISMATCH, None, "refused_meter")
    if facts.source is None:
        return Verdict(ReconciliationStatus.MISMATCH, None, "source_unreadable")
    expected = billed_quantity(facts.source, integer_quantity=facts.integer_quantity)
    right = same_value(facts.invoiced, expected)
    # A meter billed on two invoices' lines bills the usage twice even when each is right.
    if right and not (facts.shared and expected != 0):
        return Verdict(ReconciliationStatus.RECONCILED, expected)
    return Verdict(ReconciliationStatus.MISMATCH, expected, _cause(facts))


def _cause(facts: LineFacts) -> str:
    if facts.shared:
        return "shared_meter"
    if facts.rejected:
        return "rejected"
    if facts.reported is None:
        return "not_reported"
    if facts.late:
        return "late"
    reported = billed_quantity(facts.reported, integer_quantity=facts.integer_quantity)
    if same_value(facts.invoiced, reported):
        return "usage_changed"
    return "stripe_differs"
