"""Reporting one customer's meter window by window, under its watermark (docs/continuous.md).

watermark → a pending window? finish it first → the next window's value (domain/
continuous.py) → nothing new: move the watermark (one conditional write) → otherwise claim
the window on the watermark (a conditional write on the version read before the value) →
one report (worker/sending.py: ledger claim, meter event, record) → the watermark moves to
the window's end.

Why it never counts usage twice: a window is claimed on the watermark before anything is
sent, only if nobody moved the watermark since it was read, so two sweeps (a redelivery, a
replay, a sweep with another window end, a renewal's true-up) can never report overlapping
windows; whoever meets a claimed window reports it under its own identifier, which the
ledger claim makes happen once; and the watermark moves only after the report is recorded.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from meterbridge.adapters.ledger import iso
from meterbridge.domain.continuous import (
    SweepPair,
    measured_span,
    next_window,
    period_closed,
    period_total,
    total_after,
    window_begun,
    window_ended,
    window_identifier,
    window_timestamp,
)
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.records import Watermark
from meterbridge.domain.reports import PlannedReport
from meterbridge.errors import PermanentError, TransientError
from meterbridge.observability import count, logger
from meterbridge.worker.policy import ContinuousPolicy
from meterbridge.worker.ports import Pace, WindowLedger
from meterbridge.worker.sending import ReportSender, SendResult
from meterbridge.worker.usage import UsageReader

# Enough for: finish a window another sweep claimed, claim and report ours, see it done.
MAX_ROUNDS = 5


@dataclass
class WindowResult:
    """What advancing one pair did, for logs and tests."""

    reported: list[str] = field(default_factory=list)  # identifiers sent (or found sent)
    unchanged: int = 0  # windows with nothing new: watermark moved, nothing sent
    waiting: bool = False  # no timestamp Stripe would take yet: left to a later sweep
    failed: list[str] = field(default_factory=list)  # windows abandoned (permanent failures)


@dataclass(frozen=True)
class Context:
    """Who is reported, and on which clock."""

    pair: SweepPair
    meter: Meter
    tenant: str | None = None
    clock_offset: int = 0  # the customers' clock minus real time (test clocks)


class Windows:
    def __init__(
        self,
        ledger: WindowLedger,
        usage: UsageReader,
        sender: ReportSender,
        policy: ContinuousPolicy,
        *,
        clock: Callable[[], float] = time.time,
        pace: Pace | None = None,
    ):
        self._ledger = ledger
        self._usage = usage
        self._sender = sender
        self._policy = policy
        self._clock = clock
        # Sweeps never take more than their share of Stripe's meter-event limit, whatever
        # the adaptive limiter (shared with renewals) would allow: SWEEP_METER_EVENT_RATE.
        self._pace = pace

    def advance(self, context: Context, end: int) -> WindowResult:
        """Report the pair's usage up to `end` (its clock), never past its period's end."""
        result = WindowResult()
        pair, meter = context.pair, context.meter
        for _ in range(MAX_ROUNDS):
            now = int(self._clock())
            mark = self._ledger.watermark(pair.customer_id, meter.id)
            if mark is not None and mark.pending is not None:
                self._finish(mark, context, result, fresh=False)
                continue
            window = next_window(mark, pair.period, end)
            if window is None:
                return result
            if window_timestamp(meter, pair.period, window, now + context.clock_offset) is None:
                result.waiting = True
                return result
            # Read before claiming: a window with nothing new costs one write, not two. The
            # value stays the window's whoever claims it; usage that reaches the source for
            # it later is the true-up's.
            try:
                value = self._value(context, pair.period, window)
            except PermanentError as error:  # e.g. an implausible value: the renewal refuses it
                self._abandon(window_identifier(pair.customer_id, meter.id, window), error, result)
                return result
            if total_after(meter, period_total(mark, pair.period), value) == period_total(
                mark, pair.period
            ):
                moved = period_closed(mark, pair.customer_id, meter.id, window.end, iso(now))
                if self._ledger.save_watermark(moved, mark):
                    result.unchanged += 1
                    if window.end >= min(end, pair.period.end):
                        return result
                continue
            begun = window_begun(
                mark,
                customer_id=pair.customer_id,
                meter_id=meter.id,
                window=window,
                period=pair.period,
                now_text=iso(now),
            )
            if self._ledger.save_watermark(begun, mark):
                ended = self._finish(begun, context, result, fresh=True, value=value)
                if result.failed:  # refused: the next sweep tries again, not this one
                    return result
                if ended and window.end >= min(end, pair.period.end):
                    return result  # caught up: no need to read the watermark again
        raise TransientError(
            f"the watermark of meter {meter.id} of {pair.customer_id} kept changing; will retry"
        )

    def close(self, context: Context, period: ServicePeriod) -> Watermark:
        """No sweep reports into `period` any more (a renewal is about to true it up): a
        window claimed in it is finished first, then the watermark moves to its end."""
        pair, meter = context.pair, context.meter
        result = WindowResult()
        for _ in range(MAX_ROUNDS):
            mark = self._ledger.watermark(pair.customer_id, meter.id)
            if mark is not None and mark.pending is not None and mark.pending.start < period.end:
                self._finish(mark, context, result, fresh=False)
                continue
            if mark is not None and mark.position >= period.end:
                return mark
            closed = period_closed(
                mark, pair.customer_id, meter.id, period.end, iso(int(self._clock()))
            )
            if self._ledger.save_watermark(closed, mark):
                return closed
        raise TransientError(
            f"the watermark of meter {meter.id} of {pair.customer_id} kept changing; will retry"
        )

    def _finish(
        self,
        mark: Watermark,
        context: Context,
        result: WindowResult,
        *,
        fresh: bool,
        value: Decimal | None = None,
    ) -> bool:
        """Report the watermark's pending window and end it; True when this attempt moved the
        watermark to the window's end. `fresh`: this attempt has just claimed it (nobody can
        have reported it yet); otherwise another sweep claimed it and may have reported it
        already."""
        window, period = mark.pending, mark.pending_period
        assert window is not None
        assert period is not None
        pair, meter = context.pair, context.meter
        now = int(self._clock())
        identifier = window_identifier(pair.customer_id, meter.id, window)
        existing = None if fresh else self._ledger.report(identifier)
        advance, sent = True, None
        if existing is not None and (existing.status.done or existing.closed):
            sent = existing.value if existing.delivered else None
        else:
            timestamp = window_timestamp(meter, period, window, now + context.clock_offset)
            if timestamp is None:  # its anchor left Stripe's window: the true-up reports it
                advance = False
            else:
                retry = existing is not None  # an earlier attempt claimed it: its value wins
                advance, sent = self._report(
                    mark,
                    context,
                    identifier,
                    timestamp=timestamp,
                    result=result,
                    retry=retry,
                    value=value,
                )
        ended = window_ended(mark, advance=advance, sent=sent, meter=meter, now_text=iso(now))
        if self._ledger.save_watermark(ended, mark):
            return advance
        logger.info("sweep window ended by another worker", extra={"identifier": identifier})
        return False

    def _report(
        self,
        mark: Watermark,
        context: Context,
        identifier: str,
        *,
        timestamp: int,
        result: WindowResult,
        retry: bool,
        value: Decimal | None = None,
    ) -> tuple[bool, Decimal | None]:
        """Send the pending window's value: (move the watermark?, the value Stripe holds).
        `retry`: an earlier attempt claimed the report and may have sent it; whatever it
        recorded is sent again as it was, never skipped (worker/sending.py)."""
        window, period = mark.pending, mark.pending_period
        assert window is not None
        assert period is not None
        pair, meter = context.pair, context.meter
        if value is None:  # another sweep's window: read its value now
            try:
                value = self._value(context, period, window)
            except PermanentError as error:  # e.g. an implausible value, refused at renewal too
                return self._abandon(identifier, error, result)
        before = period_total(mark, period)
        if not retry and total_after(meter, before, value) == before:
            result.unchanged += 1
            return True, None
        plan = PlannedReport(
            identifier=identifier,
            invoice_id="",
            customer_id=pair.customer_id,
            meter=meter,
            period=window,
            finalizes_at=period.end + self._policy.grace_period_seconds,
            test_clock=pair.test_clock,
            livemode=pair.livemode,
            subscription_items=pair.subscription_items,
            sweep=True,
            timestamp=timestamp,
        )
        try:
            sent = self._sender.send(
                plan,
                context.tenant,
                int(self._clock()),
                clock_offset=context.clock_offset,
                careful=False,
                value=value,
                pace=self._pace,
            )
        except PermanentError as error:
            recorded = self._ledger.report(identifier)
            if recorded is not None and recorded.closed:
                # It may have reached Stripe (outcome unknown): never sent again; the
                # renewal's true-up and its alarms take over (docs/continuous.md).
                result.failed.append(f"{identifier}: {error}")
                return True, None
            return self._abandon(identifier, error, result)
        if sent in (SendResult.SENT, SendResult.LATE) and not retry:
            result.reported.append(identifier)
            count("SweepReportsSent")
            return True, value
        if sent is SendResult.SKIPPED:
            return True, None
        recorded = self._ledger.report(identifier)  # recorded by an earlier attempt
        result.reported.append(identifier)
        return True, recorded.value if recorded is not None and recorded.delivered else None

    def _value(self, context: Context, period: ServicePeriod, window: ServicePeriod) -> Decimal:
        span = measured_span(context.meter, period, window)
        return self._usage.span(
            context.pair.customer_id, context.tenant, context.meter.event_name, span
        )

    @staticmethod
    def _abandon(
        identifier: str, error: Exception, result: WindowResult
    ) -> tuple[bool, Decimal | None]:
        """A window refused for good: the watermark stays, a later sweep tries a new window,
        and the renewal's true-up reports the period whatever happens."""
        count("SweepWindowsAbandoned")
        logger.error(
            "sweep window refused; a later sweep tries again",
            extra={"identifier": identifier, "reason": str(error)},
        )
        result.failed.append(f"{identifier}: {error}")
        return False, None
