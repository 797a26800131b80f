"""Continuous reporting on in-memory fakes (docs/continuous.md): sweeps report each window
once whatever is redelivered or replayed, the renewal sends only the remainder, mid-period
changes report at once and alarm what Stripe could not have counted."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from meterbridge.domain.continuous import window_identifier
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import ReportRecord, ReportStatus, Watermark
from meterbridge.domain.reports import report_identifier
from meterbridge.errors import PermanentError, TransientError
from meterbridge.messages import SweepPage, read_sweep, sweep_body
from tests.support.fakes import FakeLedger
from tests.support.unit_world import DAY, NOW, UnitWorld

HOUR = 3600
# The subscription's current period: started 10 days ago, renews in 20.
CURRENT = ServicePeriod(start=NOW - 10 * DAY, end=NOW + 20 * DAY)


def _at(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _record(body: str, attributes: dict[str, str] | None = None, receive: int = 1) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": f"m{abs(hash(body)) % 10**8}",
            "receiptHandle": "rh",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": str(receive),
                "SentTimestamp": str(NOW * 1000),
            },
            "messageAttributes": {
                name: {"stringValue": value, "dataType": "String"}
                for name, value in (attributes or {}).items()
            },
        }
    )


class Continuous(UnitWorld):
    def __init__(self, cadence: str = "hourly", **env: str) -> None:
        super().__init__(
            env={
                "INVOICE_GUARD": "off",
                "CONTINUOUS_REPORTING": cadence,
                "SWEEP_SETTLE_MINUTES": "0",
                **env,
            }
        )
        self.subscription = self.stripe.subscribe("cus_1", [self.price], period=CURRENT)

    def use(self, value: str, at: int, meter: Any = None) -> None:
        self.usage.record("cus_1", (meter or self.meter)["event_name"], at, value)

    def sweep(self, at: int) -> list[str]:
        """The schedule's message at `at` (no attributes, as EventBridge Scheduler sends it),
        then every message it fans out, through the worker's router. Answers the results."""
        self.clock.now = at
        start = len(self.queue.sent)
        scheduled = json.dumps({"meterbridge_sweep": {"scheduled_at": _at(at)}})
        results = [self.worker.handle_record(_record(scheduled))]
        while len(self.queue.sent) > start:
            body, attributes, _ = self.queue.sent[start]
            start += 1
            results.append(self.worker.handle_record(_record(body, attributes)))
        return results

    def total(self, period: ServicePeriod = CURRENT) -> Decimal:
        """What Stripe counts for the customer's meter over `period`."""
        return self.stripe.meter_usage(self.meter["id"], "cus_1", period.start, period.end)

    def mark(self) -> Watermark:
        found = self.ledger.watermark("cus_1", self.meter["id"])
        assert found is not None
        return found

    def renewal(self, **fields: Any) -> dict[str, Any]:
        self.clock.now = CURRENT.end + 60
        return self.stripe.draft(
            "cus_1",
            [self.price],
            period=CURRENT,
            created=CURRENT.end,
            finalizes_at=CURRENT.end + HOUR,
            **fields,
        )


@pytest.fixture
def world() -> Continuous:
    return Continuous()


def test_hourly_sweeps_report_each_windows_usage_inside_it(world: Continuous) -> None:
    world.use("40", NOW - 2 * DAY)
    world.use("2", NOW + 30 * 60)
    assert world.sweep(NOW)[-1] == "swept"
    assert world.sweep(NOW + HOUR)[-1] == "swept"

    first, second = world.stripe.sent
    assert (first.value, first.timestamp) == (Decimal(40), NOW - 1)
    assert first.identifier == window_identifier(
        "cus_1", world.meter["id"], ServicePeriod(start=CURRENT.start, end=NOW)
    )
    assert (second.value, second.timestamp) == (Decimal(2), NOW + HOUR - 1)
    mark = world.mark()
    assert (mark.position, mark.pending, mark.period_reports, mark.period_total) == (
        NOW + HOUR,
        None,
        2,
        Decimal(42),
    )
    report = world.ledger.report(second.identifier)
    assert report is not None
    assert (report.status, report.sweep, report.invoice_id) == (ReportStatus.SENT, True, "")


def test_quiet_windows_send_nothing_but_move_the_watermark(world: Continuous) -> None:
    world.sweep(NOW)
    world.sweep(NOW + HOUR)
    assert world.stripe.sent == []
    assert world.mark().position == NOW + HOUR
    assert world.ledger.items == {}


def test_a_sweep_never_reports_past_the_items_period(world: Continuous) -> None:
    world.use("5", CURRENT.end - 10)
    world.use("7", CURRENT.end + 10)  # the next period's usage
    world.sweep(CURRENT.end + 2 * HOUR)
    [sent] = world.stripe.sent
    assert (sent.value, sent.timestamp) == (Decimal(5), CURRENT.end - 1)
    assert world.mark().position == CURRENT.end


def test_redelivered_and_replayed_sweeps_count_nothing_twice(world: Continuous) -> None:
    world.use("40", NOW - DAY)
    world.sweep(NOW)
    # The same work messages again (SQS redelivery), and the schedule's message replayed from
    # the dead-letter queue days later: the same window end, nothing new.
    for body, attributes, _ in list(world.queue.sent):
        world.worker.handle_record(_record(body, attributes, receive=2))
    world.sweep(NOW)
    world.clock.now = NOW + 3 * DAY
    replay = json.dumps({"meterbridge_sweep": {"scheduled_at": _at(NOW)}})
    assert world.worker.handle_record(_record(replay)) == "duplicate"
    assert [e.value for e in world.stripe.sent] == [Decimal(40)]


def test_a_window_claimed_by_a_crashed_sweep_is_finished_under_its_own_identifier(
    world: Continuous,
) -> None:
    """A sweep claimed [start, NOW), sent it and died before moving the watermark. A later
    sweep with another window end finishes that window first (Stripe drops the repeat), then
    reports only what follows: no overlapping windows, nothing counted twice."""
    world.use("40", NOW - DAY)
    world.use("3", NOW + 10)
    window = ServicePeriod(start=CURRENT.start, end=NOW)
    world.ledger.save_watermark(
        Watermark("cus_1", world.meter["id"], CURRENT.start, window, CURRENT, version=1), None
    )
    crashed = world.stripe.create_meter_event(
        event_name="api_calls",
        payload={"stripe_customer_id": "cus_1", "value": "40"},
        identifier=window_identifier("cus_1", world.meter["id"], window),
        timestamp=NOW - 1,
    )
    assert not crashed.duplicate
    world.sweep(NOW + HOUR)
    assert [e.value for e in world.stripe.sent] == [Decimal(40), Decimal(3)]
    assert world.stripe.calls.count("create_meter_event") == 3  # the repeat was a duplicate
    assert world.total() == Decimal(43)
    assert world.mark().position == NOW + HOUR


def test_last_meters_get_the_period_to_date_value(world: Continuous) -> None:
    seats = world.stripe.add_meter("seats", formula="last")
    world.stripe.subscribe("cus_1", [world.stripe.add_price(seats)], period=CURRENT)
    world.use("3", NOW - DAY, seats)
    world.sweep(NOW)
    world.use("2", NOW + 60, seats)
    world.sweep(NOW + HOUR)
    assert [e.value for e in world.stripe.sent if e.event_name == "seats"] == [
        Decimal(3),
        Decimal(5),
    ]


def test_count_meters_are_not_swept(world: Continuous) -> None:
    counted = world.stripe.add_meter("logins", formula="count")
    world.stripe.subscribe("cus_1", [world.stripe.add_price(counted)], period=CURRENT)
    world.use("9", NOW - DAY, counted)
    world.sweep(NOW)
    assert [e.event_name for e in world.stripe.sent] == []


def test_a_refused_window_is_abandoned_and_tried_again_later(world: Continuous) -> None:
    world.use("40", NOW - DAY)
    world.stripe.fail("create_meter_event", PermanentError("Stripe 400: no such customer"))
    world.sweep(NOW)
    assert world.stripe.sent == []
    assert (world.mark().position, world.mark().pending) == (CURRENT.start, None)
    world.sweep(NOW + HOUR)
    assert [e.value for e in world.stripe.sent] == [Decimal(40)]


def test_a_transient_failure_keeps_the_window_for_the_retry(world: Continuous) -> None:
    world.use("40", NOW - DAY)
    world.stripe.fail("create_meter_event", TransientError("Stripe 503"))
    world.clock.now = NOW
    page = SweepPage(scheduled_at=_at(NOW))
    world.worker.handle_record(_record(sweep_body(page)))
    body, attributes, _ = world.queue.sent[-1]
    with pytest.raises(TransientError):  # the batch item fails, the message comes back
        world.worker.handle_record(_record(body, attributes))
    assert world.mark().pending is not None
    assert world.worker.handle_record(_record(body, attributes, receive=2)) == "swept"
    assert [e.value for e in world.stripe.sent] == [Decimal(40)]


def test_sweeps_fan_out_one_message_per_page_and_batch(world: Continuous) -> None:
    for n in range(2, 25):
        world.stripe.customers[f"cus_{n}"] = {"id": f"cus_{n}", "metadata": {}}
        world.stripe.subscribe(f"cus_{n}", [world.price], period=CURRENT)
    world.clock.now = NOW
    page = read_sweep(sweep_body(SweepPage(scheduled_at=_at(NOW))))
    outcome = world.worker.pipeline.sweeps.handle(page)
    assert (outcome.pairs, outcome.queued) == (24, 3)  # 10 + 10 + 4 pairs, one page
    works = [read_sweep(body) for body, _, _ in world.queue.sent]
    assert sum(len(getattr(w, "pairs", ())) for w in works) == 24


def test_with_continuous_reporting_off_a_sweep_is_refused() -> None:
    world = Continuous(cadence="off")
    world.use("40", NOW - DAY)
    assert world.sweep(NOW) == ["refused"]
    assert world.stripe.sent == []


# --- the renewal's true-up --------------------------------------------------------------


def test_the_renewal_sends_only_what_the_sweeps_did_not(world: Continuous) -> None:
    world.use("100", NOW - DAY)
    world.sweep(NOW)
    world.use("30", NOW - 2 * DAY)  # arrives late at the source, behind the watermark
    world.use("5", CURRENT.end - 60)  # after the last sweep
    invoice = world.renewal()
    assert world.created(invoice).result == "reported"

    *_, true_up = world.stripe.sent
    assert true_up.identifier == report_identifier("cus_1", world.meter["id"], CURRENT)
    assert (true_up.value, true_up.timestamp) == (Decimal(35), CURRENT.end - 1)
    assert world.total() == Decimal(135)
    assert world.mark().position == CURRENT.end

    world.bill(invoice, "135")
    assert world.finalized(invoice).result == "reconciled"
    verdict = world.ledger.report(true_up.identifier)
    assert verdict is not None
    assert verdict.reconciliation is not None
    assert verdict.reconciliation.reason is None


def test_a_sweep_after_the_renewal_reports_nothing_more_into_the_period(
    world: Continuous,
) -> None:
    """The sweep listed the subscription before it renewed; it arrives after the true-up."""
    world.use("100", NOW - DAY)
    world.created(world.renewal())
    world.sweep(CURRENT.end + HOUR)
    assert [e.value for e in world.stripe.sent] == [Decimal(100)]


def test_the_true_up_waits_while_a_sweep_holds_a_window_of_the_period(world: Continuous) -> None:
    world.use("100", NOW - DAY)
    window = ServicePeriod(start=CURRENT.start, end=NOW)
    world.ledger.save_watermark(
        Watermark("cus_1", world.meter["id"], CURRENT.start, window, CURRENT, version=1), None
    )
    identifier = window_identifier("cus_1", world.meter["id"], window)
    world.ledger.items[identifier] = ReportRecord(
        identifier=identifier,
        invoice_id="",
        customer_id="cus_1",
        meter_id=world.meter["id"],
        period=window,
        status=ReportStatus.PENDING,
        lease_expires_at=CURRENT.end + 10 * HOUR,  # a live lease: the sweep is sending it
        attempts=1,
        sweep=True,
    )
    with pytest.raises(TransientError):
        world.created(world.renewal())
    assert world.stripe.sent == []


def test_the_true_up_waits_for_the_ledger_index_to_show_every_sweep_report(
    world: Continuous,
) -> None:
    class LaggingIndex(FakeLedger):
        def customer_reports(self, customer_id: str, since: int) -> list[ReportRecord]:
            return [r for r in super().customer_reports(customer_id, since) if not r.sweep]

    world.ledger = LaggingIndex()
    world.use("100", NOW - DAY)
    world.sweep(NOW)
    with pytest.raises(TransientError, match="ledger index shows 0 of 1 sweep reports"):
        world.created(world.renewal())
    assert [e.value for e in world.stripe.sent] == [Decimal(100)]


def test_true_up_only_keeps_the_remainder_after_sweeps_are_switched_off() -> None:
    world = Continuous()
    world.use("100", NOW - DAY)
    world.sweep(NOW)
    world.env["CONTINUOUS_REPORTING"] = "true-up-only"
    world.use("1", NOW + DAY)
    assert world.sweep(NOW + DAY) == ["refused"]
    world.created(world.renewal())
    assert [e.value for e in world.stripe.sent] == [Decimal(100), Decimal(1)]


# --- mid-period changes -----------------------------------------------------------------


def _item_removed(world: Continuous, moment: int) -> dict[str, Any]:
    item = world.subscription["items"]["data"][0]
    return {
        "id": "evt_updated",
        "type": "customer.subscription.updated",
        "created": moment,
        "data": {
            "object": {**world.subscription, "items": {"data": []}},
            "previous_attributes": {"items": {"data": [item]}},
        },
    }


def test_a_removed_item_is_reported_up_to_the_change_and_the_gap_alarmed(
    world: Continuous,
) -> None:
    world.use("40", NOW - DAY)
    world.sweep(NOW)  # Stripe holds 40 when the item is removed
    world.use("6", NOW + 20 * 60)  # after the last sweep: Stripe's invoice item misses it
    moment = NOW + 30 * 60
    world.clock.now = moment
    cut = world.pipeline.subscription_changes.on_event(_item_removed(world, moment))

    [gap] = cut
    assert gap.usage == Decimal(6)  # the size of what Stripe could not have counted
    assert [(e.value, e.timestamp) for e in world.stripe.sent] == [
        (Decimal(40), NOW - 1),
        (Decimal(6), moment - 1),
    ]
    assert world.mark().position == moment


def test_a_change_right_after_a_sweep_misses_nothing(world: Continuous) -> None:
    world.use("40", NOW - DAY)
    world.sweep(NOW)
    world.clock.now = NOW + 60
    assert world.pipeline.subscription_changes.on_event(_item_removed(world, NOW + 60)) == []


def test_an_invoice_finalized_before_its_hold_keeps_its_automatic_collection() -> None:
    """A cancellation's final invoice finalizes at once; its invoice.created still says
    draft. Holding it would switch off its collection (auto_advance on an open invoice)."""
    world = Continuous(INVOICE_GUARD="hold")
    world.use("40", NOW - DAY)
    world.sweep(NOW)
    invoice = world.renewal()
    world.stripe.invoices[invoice["id"]] = {**invoice, "status": "open"}
    world.created(invoice)
    assert world.stripe.invoices[invoice["id"]]["auto_advance"] is True
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.hold_status is not None
    assert not record.hold_status.held


def test_a_usage_value_refused_for_good_leaves_no_window_claimed(world: Continuous) -> None:
    """Otherwise the window would stay pending and block every later sweep and the
    renewal's true-up."""
    world.use("40", NOW - DAY)
    world.usage.fail(PermanentError("usage value 'NaN' is not finite"))
    world.sweep(NOW)
    mark = world.ledger.watermark("cus_1", world.meter["id"])
    assert mark is None or (mark.position, mark.pending) == (CURRENT.start, None)
    world.created(world.renewal())
    assert [e.value for e in world.stripe.sent] == [Decimal(40)]
