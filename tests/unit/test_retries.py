"""What happens to a failed message (worker/retrying.py) and to an invoice too large for one
invocation, on in-memory fakes: the real handler's record path, a fake clock."""

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import ReportStatus
from meterbridge.domain.retries import MIN_RETRY_SECONDS, retry_until
from meterbridge.errors import PermanentError, TransientError
from meterbridge.worker.invoices import parse_invoice
from tests.support.fakes import FakeLedger
from tests.support.unit_world import NOW, PERIOD, UnitWorld


def record(event: dict[str, Any], *, attempt: int = 1, sent_at: float = NOW) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": f"m-{event['id']}-{attempt}",
            "receiptHandle": f"h-{event['id']}-{attempt}",
            "body": json.dumps(event),
            "attributes": {
                "ApproximateReceiveCount": str(attempt),
                "SentTimestamp": str(int(sent_at * 1000)),
            },
            "messageAttributes": {"body_kind": {"stringValue": "event", "dataType": "String"}},
        }
    )


def created(invoice: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": "invoice.created",
        "created": NOW,
        "livemode": False,
        "data": {"object": invoice},
    }


@pytest.fixture
def world() -> UnitWorld:
    world = UnitWorld(env={"INVOICE_GUARD": "off", "RETRY_BACKOFF_BASE_SECONDS": "30"})
    world.set_usage("5")
    return world


def test_a_permanent_failure_goes_to_the_dead_letter_queue_at_once(world: UnitWorld) -> None:
    world.set_usage("lots")
    result = world.worker.handle_record(record(created(world.draft())))
    assert result == "dead_lettered"  # not a batch item failure: off the queue now
    [(body, attributes, _delay)] = world.dead_letters.sent
    assert json.loads(body)["id"] == "evt_1"
    assert attributes["failure"] == "permanent"
    assert "not a decimal number" in attributes["failure_reason"]
    assert attributes["body_kind"] == "event"


def test_a_transient_failure_backs_off_until_shortly_before_finalization(world: UnitWorld) -> None:
    invoice = world.draft(finalizes_at=NOW + 3600)
    world.usage.fail(*[TransientError("warehouse down")] * 3)
    worker = world.worker
    with pytest.raises(TransientError):
        worker.handle_record(record(created(invoice), attempt=6))
    [(_handle, delay)] = world.queue.delays
    assert delay == 900  # the back-off's ceiling, well before the deadline

    world.clock.now = NOW + 3600 - 400  # 100 s before the last moment to retry
    with pytest.raises(TransientError):
        worker.handle_record(record(created(invoice), attempt=7))
    assert world.queue.delays[-1][1] == 100  # the last retry lands before the deadline
    assert world.dead_letters.sent == []

    world.clock.now = NOW + 3600 - 300  # RETRY_DEADLINE_MARGIN_SECONDS before finalization
    assert worker.handle_record(record(created(invoice), attempt=8)) == "dead_lettered"
    [(_body, attributes, _delay)] = world.dead_letters.sent
    assert attributes["failure"] == "retries_exhausted"


def test_without_a_finalization_time_retries_last_the_retry_window() -> None:
    assert retry_until(1_000, finalizes_at=None, margin_seconds=300, window_seconds=2700) == 3700
    # An event that arrives close to (or after) its deadline still gets a few tries.
    late = retry_until(1_000, finalizes_at=1_100, margin_seconds=300, window_seconds=2700)
    assert late == 1_000 + MIN_RETRY_SECONDS


def test_test_clock_invoices_retry_for_the_window(world: UnitWorld) -> None:
    """A test clock's finalization time is not real time: the window applies."""
    invoice = world.draft(finalizes_at=NOW + 60, test_clock="clock_1")
    world.stripe.clocks["clock_1"] = NOW
    world.usage.fail(TransientError("down"))
    with pytest.raises(TransientError):
        world.worker.handle_record(record(created(invoice), attempt=1))
    assert world.queue.delays == [("h-evt_1-1", 30)]


def test_without_a_dead_letter_queue_failures_wait_for_the_redrive() -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "off"})
    world.dead_letters = None  # type: ignore[assignment]
    world.set_usage("lots")
    with pytest.raises(PermanentError):
        world.worker.handle_record(record(created(world.draft())))


# --- large invoices -----------------------------------------------------------------------

LINES = 10_000


def large_invoice(world: UnitWorld, lines: int = LINES) -> dict[str, Any]:
    """Metered lines each of its own period (10,000: 10,000 reports)."""
    periods = [
        ServicePeriod(start=PERIOD.start + 60 * n, end=PERIOD.start + 60 * n + 30)
        for n in range(lines)
    ]
    invoice = world.draft([world.price] * lines)
    for line, period in zip(invoice["lines"]["data"], periods, strict=True):
        line["period"] = {"start": period.start, "end": period.end}
    return invoice


class CountingLedger(FakeLedger):
    """Counts the per-report reads and claims a retry makes."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.batch_reads: list[int] = []

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return super().claim(*args, **kwargs)

    def reports(self, identifiers: list[str]) -> Any:
        self.batch_reads.append(len(identifiers))
        return super().reports(identifiers)


def test_a_retry_of_a_large_invoice_reads_what_is_done_in_bulk_and_claims_only_the_rest() -> None:
    ledger = CountingLedger()
    world = UnitWorld(env={"INVOICE_GUARD": "off"}, ledger=ledger)
    world.set_usage("1")
    invoice = large_invoice(world)
    embedded = dict(invoice)
    embedded["lines"] = {
        **invoice["lines"],
        "data": invoice["lines"]["data"][:10],
        "has_more": True,
    }
    worker = world.worker
    # A first attempt that reported 6,000 of the 10,000 lines.
    plans = worker.pipeline.planner.plan(parse_invoice(embedded)).reports
    assert len(plans) == LINES
    for plan in plans[:6_000]:
        claim = ledger.claim_new(plan, Decimal(1), plan.period.end - 1, NOW, 60)
        assert claim is not None
        ledger.mark_sent(claim, late=False, request_id="req_1", duplicate=False, now=NOW)
    sent_before = len(world.stripe.sent)

    worker.handle_record(record(created(embedded), attempt=2))

    assert ledger.batch_reads == [LINES]  # what is done, for every report at once
    assert ledger.claims == 4_000  # only the reports not yet sent are claimed
    assert len(world.stripe.sent) - sent_before == 4_000
    assert all(r.status is ReportStatus.SENT for r in ledger.items.values())


def test_a_large_invoice_makes_progress_every_receive_and_continues_at_once() -> None:
    """Each invocation leaves time to spare before its timeout; an attempt that sent some of
    its reports continues in a new message (not a queue receive spent), until all are sent."""
    world = UnitWorld(env={"INVOICE_GUARD": "off"})
    world.set_usage("1")
    world.stripe.latency = 0.002  # 4 s of Stripe for the 2,000 reports
    invoice = large_invoice(world, 2_000)
    message = record(created(invoice))
    worker = world.worker
    started = time.monotonic()
    worker.pipeline.planner.plan(parse_invoice(invoice))
    budget = 3 * (time.monotonic() - started) + 1.0  # planning, then about a second to send
    sent_per_receive = []
    for _receive in range(50):
        before = len(world.stripe.sent)
        soon = time.monotonic() + budget  # this invocation's "no report starts after" moment
        result = worker.handle_record(message, soon)
        sent_per_receive.append(len(world.stripe.sent) - before)
        if result != "continued":
            break
        body, attributes, _ = world.queue.sent[-1]
        message = record(json.loads(body), attempt=1)
        assert attributes["body_kind"] == "event"
    assert result == "reported"
    assert len(world.stripe.sent) == 2_000
    assert len(sent_per_receive) > 1  # it did not all fit in one
    assert min(sent_per_receive) > 0  # and no receive was spent without progress
