"""Continuous reporting's sweeps (docs/continuous.md): the schedule's message fans out over
every active metered subscription item, and each (customer, meter) is reported up to the
sweep's window end (worker/windows.py).

schedule message → page 1: window end (scheduled time - settle delay), one page of
subscriptions from Stripe → queue page 2 (first, so the listing goes on in parallel) and
one work message per batch of pairs → … → each work message: every pair's windows.

Stripe is asked once per page of 100 subscriptions (the basic rate limit is 100 requests/s
live, docs/stripe.md#S-RATE-1); everything a pair needs travels in its work message. A
page's processing is remembered in the ledger's event memory, so a redelivered page does
not start a second chain of pages; its work messages may go out twice, which costs reads
only: the watermark and the report identifiers make each window count once. Meter events
go through the process-wide limiter (adapters/rate_limiter.py) like every other report.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from meterbridge.domain.continuous import SweepPair, pairs_of, window_end
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.reports import refusal
from meterbridge.errors import PermanentError, TransientError
from meterbridge.messages import SweepPage, SweepWork, SweptPair, sweep_attributes, sweep_body
from meterbridge.observability import count, logger
from meterbridge.worker.policy import ContinuousPolicy
from meterbridge.worker.ports import EventLedger, Stripe, SweepQueue
from meterbridge.worker.reporting import OutOfInvocationTime
from meterbridge.worker.windows import Context, Windows


@dataclass
class SweepOutcome:
    """What one sweep message did, for logs and tests."""

    result: str  # listed | swept | duplicate | refused
    pairs: int = 0
    reported: list[str] = field(default_factory=list)
    unchanged: int = 0
    waiting: int = 0
    failed: list[str] = field(default_factory=list)
    queued: int = 0  # messages this page queued (next page and work)


class Sweeps:
    def __init__(
        self,
        stripe: Stripe,
        ledger: EventLedger,
        queue: SweepQueue | None,
        windows: Windows,
        *,
        policy: ContinuousPolicy,
        clock: Callable[[], float] = time.time,
    ):
        self._stripe = stripe
        self._ledger = ledger
        self._queue = queue
        self._windows = windows
        self._policy = policy
        self._clock = clock

    def handle(self, request: SweepPage | SweepWork, deadline: float | None = None) -> SweepOutcome:
        if not self._policy.sweeps:
            # A schedule left behind, or a replay after sweeps were switched off.
            count("SweepsRefused")
            logger.warning(
                "sweep refused: CONTINUOUS_REPORTING is not hourly or daily",
                extra={"continuous_reporting": self._policy.cadence},
            )
            return SweepOutcome("refused")
        if isinstance(request, SweepWork):
            return self.work(request, deadline)
        return self.page(request, deadline)

    def page(self, request: SweepPage, deadline: float | None = None) -> SweepOutcome:
        """One page of subscriptions: queue the next page and the pairs' work."""
        now = int(self._clock())
        clock_now = self._stripe.test_clock_time(request.test_clock) if request.test_clock else now
        end = request.window_end
        if end is None:
            at = _scheduled(request.scheduled_at) or clock_now
            end = window_end(at, self._policy.settle_seconds)
        memory = f"sweep:{request.test_clock or ''}:{end}:{request.starting_after or ''}"
        if self._ledger.event_seen(memory, now):
            count("DuplicateEvents")
            return SweepOutcome("duplicate")
        listed = self._stripe.subscriptions(
            starting_after=request.starting_after,
            test_clock=request.test_clock,
            expand_customers=self._policy.tenant_metadata_key is not None,
        )
        messages: list[SweepPage | SweepWork] = []
        if listed.has_more and listed.data:
            messages.append(
                SweepPage(
                    window_end=end,
                    test_clock=request.test_clock,
                    starting_after=str(listed.data[-1]["id"]),
                    page=request.page + 1,
                )
            )
        pairs = self._pairs(listed.data)
        size = self._policy.pairs_per_message
        offset = clock_now - now
        works = [
            SweepWork(window_end=end, clock_offset=offset, pairs=tuple(pairs[i : i + size]))
            for i in range(0, len(pairs), size)
        ]
        outcome = SweepOutcome("listed", pairs=len(pairs))
        if self._queue is None:  # no queue to fan out on: this message does it all
            for work in works:
                self._merge(outcome, self.work(work, deadline))
            if messages:
                logger.warning("sweep without QUEUE_URL: only the first page was swept")
        else:
            self._queue.send_batch(
                [(sweep_body(m), sweep_attributes(m)) for m in [*messages, *works]]
            )
            outcome.queued = len(messages) + len(works)
        self._ledger.remember_event(
            memory, "meterbridge.sweep", now, self._policy.event_memory_seconds
        )
        logger.info(
            "sweep page listed",
            extra={"page": request.page, "window_end": end, "pairs": len(pairs)},
        )
        return outcome

    def work(self, request: SweepWork, deadline: float | None = None) -> SweepOutcome:
        """Report each pair up to the sweep's window end; raises when any should be retried."""
        outcome = SweepOutcome("swept", pairs=len(request.pairs))
        transient: list[str] = []
        left = 0
        for message_pair in request.pairs:
            if deadline is not None and time.monotonic() > deadline:
                left += 1
                continue
            pair = _pair(message_pair)
            if self._policy.tenant_metadata_key and not message_pair.tenant:
                # Reporting without the tenant would bill nothing: the renewal refuses it loudly.
                outcome.failed.append(f"{pair.customer_id}: no tenant (TENANT_METADATA_KEY)")
                continue
            try:
                meter = Meter.from_stripe(self._stripe.meter(pair.meter_id))
                if not self._reported(meter):
                    continue
                context = Context(pair, meter, message_pair.tenant, request.clock_offset)
                result = self._windows.advance(context, request.window_end)
            except TransientError as error:
                transient.append(f"{pair.customer_id} {pair.meter_id}: {error}")
                continue
            except PermanentError as error:
                outcome.failed.append(f"{pair.customer_id} {pair.meter_id}: {error}")
                continue
            outcome.reported += result.reported
            outcome.unchanged += result.unchanged
            outcome.waiting += int(result.waiting)
            outcome.failed += result.failed
        if transient:
            shown = "; ".join(transient[:5])
            raise TransientError(f"{len(transient)} pair(s) will retry: {shown}")
        if left:
            done = len(request.pairs) - left
            raise OutOfInvocationTime(f"{left} pair(s) not started", progressed=done > 0)
        return outcome

    def _reported(self, meter: Meter) -> bool:
        """Count meters are refused (at renewal, alarmed); METER_EVENT_NAMES limits the rest."""
        if refusal(meter) is not None:
            return False
        names = self._policy.meter_event_names
        return not names or meter.event_name in names

    def _pairs(self, subscriptions: list[dict[str, object]]) -> list[SweptPair]:
        return [
            SweptPair(
                customer=pair.customer_id,
                meter=pair.meter_id,
                period_start=pair.period.start,
                period_end=pair.period.end,
                items=pair.subscription_items,
                livemode=pair.livemode,
                test_clock=pair.test_clock,
                tenant=tenant,
            )
            for pair, tenant in pairs_of(subscriptions, self._policy.tenant_metadata_key)
        ]

    @staticmethod
    def _merge(outcome: SweepOutcome, part: SweepOutcome) -> None:
        outcome.reported += part.reported
        outcome.unchanged += part.unchanged
        outcome.waiting += part.waiting
        outcome.failed += part.failed


def _pair(message: SweptPair) -> SweepPair:
    return SweepPair(
        customer_id=message.customer,
        meter_id=message.meter,
        period=ServicePeriod(start=message.period_start, end=message.period_end),
        subscription_items=message.items,
        livemode=message.livemode,
        test_clock=message.test_clock,
    )


def _scheduled(text: str | None) -> int | None:
    """EventBridge Scheduler's <aws.scheduler.scheduled-time> (ISO 8601, UTC)."""
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise PermanentError(f"sweep scheduled_at {text!r} is not an ISO 8601 time") from None
