"""Confirmation checks on in-memory fakes: when a report counts as confirmed, when the next
check comes, when a held draft is released, and when checking stops. `FakeStripe.counting
= False` is Stripe that has not aggregated the meter events yet."""

from decimal import Decimal
from typing import Any

import pytest

from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.records import (
    Confirmation,
    ConfirmationStatus,
    HoldStatus,
    InvoiceRecord,
    ReleaseAction,
    ReportStatus,
)
from tests.support.unit_world import DAY, NOW, PERIOD, UnitWorld, counted_metrics

FINALIZES_AT = NOW + 3600  # the drafts' automatically_finalizes_at
MARGIN = 900  # CONFIRMATION_MARGIN_SECONDS' default
LIMIT = DAY  # HOLD_LIMIT_SECONDS' default


@pytest.fixture
def world() -> UnitWorld:
    world = UnitWorld(env={"INVOICE_GUARD": "confirm"})
    world.set_usage("1234.5")
    return world


@pytest.fixture
def held() -> UnitWorld:
    world = UnitWorld(env={"INVOICE_GUARD": "hold"})
    world.set_usage("1234.5")
    return world


def confirmation(world: UnitWorld, identifier: str | None = None) -> Confirmation:
    report = world.ledger.report(identifier or world.identifier())
    assert report is not None
    assert report.confirmation is not None
    return report.confirmation


def record_of(world: UnitWorld, invoice: dict[str, Any]) -> InvoiceRecord:
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    return record


def scheduled(world: UnitWorld) -> list[tuple[int, int]]:
    """(check number, delay) of each check the worker queued, in order."""
    return [(request.check, delay) for request, delay in world.queue.scheduled]


# --- what counts as confirmed -------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        # The period starts 17 s into a minute: the summary window is widened back to the
        # minute's start, where the previous period's report (at its end - 1) also lies.
        (17, Decimal(140)),
        (0, Decimal(40)),  # minute-aligned: the previous report is outside the window
    ],
)
def test_confirmed_when_stripe_counts_every_report_in_the_window(
    world: UnitWorld, offset: int, expected: Decimal
) -> None:
    start = PERIOD.start + offset
    previous = ServicePeriod(start=start - 30 * DAY, end=start)
    current = ServicePeriod(start=start, end=PERIOD.end)
    world.set_usage("100")
    world.created(world.draft(period=previous), event_id="evt_previous")
    world.set_usage("40")
    invoice = world.draft(period=current)
    world.created(invoice, event_id="evt_current")

    outcome = world.check(invoice)

    assert (outcome.confirmed, outcome.unconfirmed, outcome.next_check_in) == (1, 0, None)
    seen = confirmation(world, world.identifier(period=current))
    assert (seen.status, seen.observed, seen.expected) == (
        ConfirmationStatus.CONFIRMED,
        expected,
        expected,
    )
    assert (seen.checks, seen.confirmed_at) == (1, NOW)
    assert scheduled(world) == [(1, 60), (1, 60)]  # each invoice's first check, no other


def test_stripe_counting_more_than_was_sent_confirms_nothing(world: UnitWorld) -> None:
    invoice = world.draft()
    world.created(invoice)
    world.stripe.create_meter_event(  # another sender, in the same window
        event_name="api_calls",
        payload={"stripe_customer_id": "cus_1", "value": "1"},
        identifier="someone-else",
        timestamp=PERIOD.end - 5,
    )

    outcome = world.check(invoice)

    assert outcome.unconfirmed == 1
    seen = confirmation(world)
    assert (seen.status, seen.observed, seen.expected) == (
        ConfirmationStatus.PENDING,
        Decimal("1235.5"),
        Decimal("1234.5"),
    )


def test_a_confirmed_report_is_not_looked_up_again(world: UnitWorld) -> None:
    world.set_usage("5")
    invoice = world.draft()
    world.created(invoice)
    world.check(invoice)
    calls = len(world.stripe.calls)

    world.check(invoice, 2)

    assert "meter_usage" not in world.stripe.calls[calls:]
    assert confirmation(world).checks == 1


# --- looking again ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "now", "check", "delay"),
    [
        ({}, NOW, 1, 60),
        ({}, NOW, 2, 120),
        ({}, NOW, 4, 480),
        ({}, NOW, 5, 900),  # 960, capped by CONFIRM_MAX_DELAY_SECONDS (and SQS's 15 min)
        ({"CONFIRM_MAX_DELAY_SECONDS": "300"}, NOW, 4, 300),
        ({"CONFIRM_DELAY_SECONDS": "10"}, NOW, 3, 40),
        ({}, FINALIZES_AT - MARGIN - 100, 5, 100),  # never past the start of the margin
    ],
)
def test_a_pending_report_is_checked_again_with_a_growing_delay(
    env: dict[str, str], now: int, check: int, delay: int
) -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "confirm", **env})
    world.set_usage("1234.5")
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)
    world.queue.scheduled.clear()
    world.clock.now = now

    outcome = world.check(invoice, check)

    assert (outcome.confirmed, outcome.unconfirmed, outcome.next_check_in) == (0, 1, delay)
    assert scheduled(world) == [(check + 1, delay)]
    seen = confirmation(world)
    assert (seen.status, seen.observed, seen.expected) == (
        ConfirmationStatus.PENDING,
        Decimal(0),
        Decimal("1234.5"),
    )


def test_the_first_check_is_queued_once_per_invoice(world: UnitWorld) -> None:
    invoice = world.draft()
    world.created(invoice)
    world.created(invoice, event_id="evt_twin")
    assert scheduled(world) == [(1, 60)]
    assert record_of(world, invoice).confirmation_scheduled_at == NOW


def test_the_chain_of_checks_ends_once_stripe_has_aggregated(world: UnitWorld) -> None:
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)
    delays = [world.next_check().next_check_in for _ in range(3)]
    world.stripe.counting = True

    last = world.next_check()

    assert delays == [60, 120, 240]
    assert (last.confirmed, last.next_check_in) == (1, None)
    assert world.queue.scheduled == []
    seen = confirmation(world)
    assert (seen.status, seen.checks, seen.confirmed_at) == (ConfirmationStatus.CONFIRMED, 4, NOW)


# --- too close to finalization ------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "status", "alarms"),
    [
        (FINALIZES_AT - MARGIN - 11, ConfirmationStatus.PENDING, 0),  # both checks before it
        (FINALIZES_AT - MARGIN, ConfirmationStatus.MISSING, 1),
        (FINALIZES_AT - 60, ConfirmationStatus.MISSING, 1),
    ],
)
def test_unconfirmed_within_the_margin_is_missing_and_alarms_once(
    world: UnitWorld, now: int, status: ConfirmationStatus, alarms: int
) -> None:
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)
    world.clock.now = now

    with counted_metrics() as metrics:
        world.check(invoice, 1)
        world.clock.now += 10
        world.check(invoice, 2)

    assert metrics["ConfirmationMissing"] == alarms
    seen = confirmation(world)
    assert (seen.status, seen.checks) == (status, 2)
    assert seen.missing_at == (now if alarms else None)  # the first time, kept


def test_a_missing_report_stripe_counts_later_is_confirmed(world: UnitWorld) -> None:
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)
    world.clock.now = FINALIZES_AT - 300
    world.check(invoice)
    world.stripe.counting = True
    world.clock.now += 60

    world.check(invoice, 2)

    seen = confirmation(world)
    assert (seen.status, seen.missing_at, seen.confirmed_at) == (
        ConfirmationStatus.CONFIRMED,
        FINALIZES_AT - 300,
        FINALIZES_AT - 240,
    )


@pytest.mark.parametrize(("mode", "abandoned"), [("confirm", True), ("hold", False)])
def test_checks_end_after_confirm_max_checks_unless_the_draft_is_held(
    mode: str, abandoned: bool
) -> None:
    """A hold always ends at its limit, whatever the number of checks."""
    world = UnitWorld(env={"INVOICE_GUARD": mode, "CONFIRM_MAX_CHECKS": "3"})
    world.set_usage("1234.5")
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)

    with counted_metrics() as metrics:
        outcomes = [world.next_check() for _ in range(3)]

    assert [o.next_check_in is not None for o in outcomes] == [True, True, not abandoned]
    assert metrics["ConfirmationAbandoned"] == abandoned
    assert len(world.queue.scheduled) == (0 if abandoned else 1)
    assert confirmation(world).status is ConfirmationStatus.PENDING


# --- releasing a held draft ---------------------------------------------------------------


def test_a_held_draft_is_released_once_every_report_is_confirmed(held: UnitWorld) -> None:
    held.stripe.counting = False
    invoice = held.draft()
    held.created(invoice)
    first = held.next_check()
    held.stripe.counting = True

    second = held.next_check()

    assert (first.released, first.next_check_in) == (None, 60)
    assert (second.released, second.next_check_in) == (ReleaseAction.AUTO_ADVANCE, None)
    assert record_of(held, invoice).hold_status is HoldStatus.RELEASED
    assert held.queue.scheduled == []


def test_a_held_draft_whose_only_report_was_skipped_is_released() -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "hold", "REPORT_ZERO_USAGE": "false"})
    world.set_usage("0")
    invoice = world.draft()
    world.created(invoice)
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.status is ReportStatus.SKIPPED

    assert world.next_check().released is ReleaseAction.AUTO_ADVANCE


@pytest.mark.parametrize(
    ("since_created", "released", "next_check_in"),
    [
        (LIMIT - 30, None, 30),  # the next check comes at the limit, not after it
        (LIMIT, ReleaseAction.FINALIZE, None),
        (LIMIT + 600, ReleaseAction.FINALIZE, None),
    ],
)
def test_a_held_draft_is_released_at_its_hold_limit_with_usage_unconfirmed(
    held: UnitWorld, since_created: int, released: ReleaseAction | None, next_check_in: int | None
) -> None:
    held.stripe.counting = False
    invoice = held.draft()
    held.created(invoice)
    held.clock.now = invoice["created"] + since_created

    with counted_metrics() as metrics:
        outcome = held.check(invoice, 50)

    assert (outcome.released, outcome.next_check_in) == (released, next_check_in)
    assert metrics["HoldLimitReached"] == (released is not None)
    record = record_of(held, invoice)
    if released is None:
        assert record.hold_status is HoldStatus.HELD
    else:
        assert (record.hold_status, record.release_action) == (
            HoldStatus.RELEASED_AT_LIMIT,
            ReleaseAction.FINALIZE,
        )
        assert held.stripe.invoices[invoice["id"]]["status"] == "open"
    assert confirmation(held).status is ConfirmationStatus.PENDING  # never called missing


def test_the_hold_limit_is_read_on_the_invoices_test_clock(held: UnitWorld) -> None:
    clock = held.test_clock(PERIOD.end)
    held.stripe.counting = False
    invoice = held.draft(test_clock=clock, finalizes_at=PERIOD.end + 3600)
    held.created(invoice)
    held.clock.now = NOW + 2 * LIMIT  # real time is past the limit; the clock is not

    assert held.check(invoice).released is None
    held.stripe.clocks[clock] = PERIOD.end + LIMIT
    assert held.check(invoice, 2).released is ReleaseAction.FINALIZE


def test_a_report_the_index_does_not_show_yet_keeps_the_hold(held: UnitWorld) -> None:
    storage = held.stripe.add_meter("storage_gb")
    held.set_usage("7", meter=storage)
    invoice = held.draft([held.price, held.stripe.add_price(storage)])
    held.created(invoice)
    held.ledger.unindexed.add(held.identifier(meter=storage))

    first = held.next_check()

    assert (first.confirmed, first.unconfirmed, first.released) == (1, 1, None)
    assert first.next_check_in is not None
    assert held.stripe.invoices[invoice["id"]]["auto_advance"] is False
    held.ledger.unindexed.clear()
    assert held.next_check().released is ReleaseAction.AUTO_ADVANCE


@pytest.mark.parametrize("mode", ["confirm", "hold"])
def test_an_invoice_no_longer_a_draft_is_left_to_reconciliation(mode: str) -> None:
    world = UnitWorld(env={"INVOICE_GUARD": mode})
    world.set_usage("1234.5")
    world.stripe.counting = False
    invoice = world.draft()
    world.created(invoice)
    world.stripe.invoices[invoice["id"]]["status"] = "open"  # finalized in the Dashboard

    outcome = world.next_check()

    assert (outcome.released, outcome.next_check_in) == (None, None)
    assert world.queue.scheduled == []
    assert not {"resume_invoice", "finalize_invoice"} & set(world.stripe.calls)
    record = record_of(world, invoice)
    if mode == "hold":
        assert (record.hold_status, record.release_action) == (
            HoldStatus.RELEASED,
            ReleaseAction.NONE,
        )
    else:
        assert record.hold_status is None
