"""The renewal as a true-up (CONTINUOUS_REPORTING not off; docs/continuous.md).

Sweeps reported part of the period already. On invoice.created each report of the draft
first closes its (customer, meter) watermark at the period's end — a window a sweep claimed
inside the period is finished first, and no sweep reports into the period afterwards — then
sends, under the period's own identifier, the value that makes Stripe bill the usage
source's value for the period (domain/continuous.true_up_value): for a `sum` meter
source(period) - every delivered report of the customer and meter timestamped inside the
period (the set confirmation and reconciliation count), late usage behind the watermark
included.
"""

from dataclasses import dataclass, replace
from decimal import Decimal

from meterbridge.domain.continuous import SweepPair, true_up_value
from meterbridge.domain.guard import sent_usage
from meterbridge.domain.invoices import Invoice
from meterbridge.domain.records import ReportRecord, Watermark
from meterbridge.domain.reports import PlannedReport, meter_event_timestamp
from meterbridge.errors import TransientError
from meterbridge.worker.ports import WindowLedger
from meterbridge.worker.usage import UsageReader
from meterbridge.worker.windows import Context, Windows


class LedgerIndexBehind(TransientError):
    """The ledger's customer index does not show every sweep report the watermark counts yet
    (DynamoDB's global secondary indexes are eventually consistent): truing up now could
    count the missing ones' usage twice."""


@dataclass(frozen=True)
class Remainders:
    """One invoice's reports, closed against the sweeps, with what they already reported."""

    marks: dict[str, Watermark]  # report identifier → its closed watermark
    reports: list[ReportRecord]  # the customer's reports in the ledger, after closing
    usage: UsageReader
    tenant: str | None
    now: int

    def of(self, report: PlannedReport) -> tuple[PlannedReport, Decimal]:
        """The report with its timestamp fixed, and the value to send."""
        period = report.period
        on_meter = [r for r in self.reports if r.meter_id == report.meter.id]
        mark = self.marks.get(report.identifier)
        if mark is not None and mark.period_start == period.start:
            visible = sum(
                1
                for r in on_meter
                if r.sweep
                and r.delivered
                and period.start <= r.period.start
                and r.period.end <= period.end
            )
            if visible < mark.period_reports:
                raise LedgerIndexBehind(
                    f"ledger index shows {visible} of {mark.period_reports} sweep reports of"
                    f" meter {report.meter.id}; will retry"
                )
        reported = [
            sent_usage(r)
            for r in on_meter
            if r.delivered
            and r.timestamp is not None
            and period.start <= r.timestamp < period.end
            # The period's own report (any revision) is what is being sent now.
            and (r.sweep or r.period != period)
        ]
        source = self.usage.read(report, self.tenant)
        timestamp = meter_event_timestamp(period, self.now, report.test_clock)
        value = true_up_value(report.meter, source, reported, timestamp)
        return replace(report, timestamp=timestamp), value


class TrueUp:
    def __init__(self, ledger: WindowLedger, windows: Windows, usage: UsageReader):
        self._ledger = ledger
        self._windows = windows
        self._usage = usage

    def begin(
        self,
        invoice: Invoice,
        reports: list[PlannedReport],
        tenant: str | None,
        now: int,
        clock_offset: int = 0,
    ) -> Remainders:
        """Close every report's period to the sweeps, then read what they reported (once:
        one query of the customer's reports)."""
        marks = {}
        for report in reports:
            pair = SweepPair(
                customer_id=invoice.customer_id,
                meter_id=report.meter.id,
                period=report.period,
                subscription_items=report.subscription_items,
                livemode=invoice.livemode,
                test_clock=invoice.test_clock,
            )
            context = Context(pair, report.meter, tenant, clock_offset)
            marks[report.identifier] = self._windows.close(context, report.period)
        since = min((r.period.start for r in reports), default=now)
        found = self._ledger.customer_reports(invoice.customer_id, since=since) if reports else []
        return Remainders(marks, found, self._usage, tenant, now)
