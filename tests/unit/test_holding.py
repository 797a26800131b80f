"""Holding and releasing a draft (INVOICE_GUARD=hold), on in-memory fakes: what Stripe is
asked, in which order, and what the invoice's ledger record says afterwards."""

import copy
from typing import Any

import pytest

from meterbridge.domain.records import HoldStatus, InvoiceRecord, ReleaseAction
from meterbridge.errors import PermanentError, TransientError
from meterbridge.messages import ConfirmRequest
from tests.support.unit_world import DAY, NOW, PERIOD, UnitWorld, counted_metrics

SCHEDULE = NOW + 3600  # the drafts' automatically_finalizes_at before the hold
MARGIN = 900  # CONFIRMATION_MARGIN_SECONDS' default: the time a resume must leave to spare
LIMIT = DAY  # HOLD_LIMIT_SECONDS' default, counted from the invoice's creation


@pytest.fixture
def world() -> UnitWorld:
    world = UnitWorld(env={"INVOICE_GUARD": "hold"})
    world.set_usage("1234.5")
    return world


def record_of(world: UnitWorld, invoice: dict[str, Any]) -> InvoiceRecord:
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    return record


# --- hold ---------------------------------------------------------------------------------


def test_the_draft_is_held_before_any_report_is_sent(world: UnitWorld) -> None:
    storage = world.stripe.add_meter("storage_gb")
    world.set_usage("7", meter=storage)
    invoice = world.draft([world.price, world.stripe.add_price(storage)])
    at_first_send: list[tuple[InvoiceRecord | None, bool]] = []
    world.stripe.watch(
        "create_meter_event",
        lambda: at_first_send.append(
            (
                world.ledger.invoice(invoice["id"]),
                world.stripe.invoices[invoice["id"]]["auto_advance"],
            )
        ),
    )

    assert world.created(invoice).result == "reported"

    calls = world.stripe.calls
    assert calls.index("hold_invoice") < calls.index("create_meter_event")
    held, auto_advance = at_first_send[0]
    assert auto_advance is False
    # Written with the hold: a check that runs before reporting ends waits for both reports.
    assert held is not None
    assert (held.hold_status, held.report_count, held.guard_mode) == (HoldStatus.HELD, 2, "hold")
    record = record_of(world, invoice)
    assert (record.held_at, record.hold_deadline, record.scheduled_finalization_at) == (
        NOW,
        invoice["created"] + LIMIT,
        SCHEDULE,
    )
    assert world.stripe.invoices[invoice["id"]]["automatically_finalizes_at"] is None
    assert world.queue.scheduled == [
        (ConfirmRequest(invoice_id=invoice["id"], customer_id="cus_1"), 60)
    ]


@pytest.mark.parametrize("stripe_counts", [True, False], ids=["confirmed", "unconfirmed"])
def test_a_draft_already_set_to_manual_is_not_ours_and_never_released(
    world: UnitWorld, stripe_counts: bool
) -> None:
    world.stripe.counting = stripe_counts
    invoice = world.draft(auto_advance=False)
    world.created(invoice)

    record = record_of(world, invoice)
    assert (record.hold_status, record.hold_reason) == (
        HoldStatus.NOT_HELD,
        "auto_advance was already false",
    )
    assert len(world.stripe.sent) == 1  # reported all the same
    world.clock.now = invoice["created"] + 2 * LIMIT  # long past any hold limit
    for number in (1, 2):
        assert world.check(invoice, number).released is None
    assert not {"hold_invoice", "resume_invoice", "finalize_invoice"} & set(world.stripe.calls)
    assert record_of(world, invoice).release_action is None
    assert world.stripe.invoices[invoice["id"]]["auto_advance"] is False


@pytest.mark.parametrize(
    ("invoice_age", "status"),
    [
        (LIMIT - 1, HoldStatus.HELD),
        (LIMIT, HoldStatus.NOT_HELD),
        (3 * DAY, HoldStatus.NOT_HELD),
    ],
)
@pytest.mark.parametrize("on_test_clock", [False, True])
def test_a_draft_is_held_only_before_its_hold_limit(
    world: UnitWorld, invoice_age: int, status: HoldStatus, on_test_clock: bool
) -> None:
    """The limit counts from the invoice's creation on the invoice's own clock."""
    created = PERIOD.end
    fields: dict[str, Any] = {"finalizes_at": created + invoice_age + 3600}
    if on_test_clock:
        fields["test_clock"] = world.test_clock(created + invoice_age)
    else:
        world.clock.now = created + invoice_age
    invoice = world.draft(**fields)

    world.created(invoice)

    record = record_of(world, invoice)
    assert record.hold_status is status
    assert ("hold_invoice" in world.stripe.calls) is (status is HoldStatus.HELD)
    if status is HoldStatus.NOT_HELD:
        assert record.hold_reason == "the hold limit had passed when the event arrived"
    assert len(world.stripe.sent) == 1


def test_stripe_refusing_the_hold_leaves_the_draft_unheld_and_reports_anyway(
    world: UnitWorld,
) -> None:
    invoice = world.draft()
    world.stripe.fail("hold_invoice", PermanentError("This invoice is no longer a draft"))

    with counted_metrics() as metrics:
        assert world.created(invoice).result == "reported"

    assert metrics["HoldFailed"] == 1
    assert len(world.stripe.sent) == 1
    record = record_of(world, invoice)
    assert record.hold_status is HoldStatus.NOT_HELD
    assert "no longer a draft" in str(record.hold_reason)
    world.created(invoice, event_id="evt_twin")  # a second event does not try again
    assert world.stripe.calls.count("hold_invoice") == 1
    assert world.check(invoice).released is None


def test_a_stripe_outage_while_holding_retries_the_hold_and_queues_one_check(
    world: UnitWorld,
) -> None:
    invoice = world.draft()
    world.stripe.fail("hold_invoice", TransientError("Stripe 503"))
    with pytest.raises(TransientError):
        world.created(invoice)
    assert world.stripe.sent == []
    assert len(world.queue.scheduled) == 1  # the release check is queued whatever happened

    world.created(invoice)

    assert record_of(world, invoice).hold_status is HoldStatus.HELD
    assert world.stripe.invoices[invoice["id"]]["auto_advance"] is False
    assert len(world.stripe.sent) == 1
    assert len(world.queue.scheduled) == 1


def test_a_check_before_the_retry_of_a_failed_hold_does_not_strand_the_draft(
    world: UnitWorld,
) -> None:
    """SQS retries the event after 30 s, 60 s, 120 s …; the first check comes after 60 s.
    Two failed attempts to hold, and the check runs first: it plans the invoice, sees its
    report not yet sent, and keeps checking (it once ended its chain here, and the draft
    the retry then held was never released)."""
    invoice = world.draft()
    world.stripe.fail("hold_invoice", TransientError("Stripe 503"), TransientError("Stripe 503"))
    for _ in range(2):
        with pytest.raises(TransientError):
            world.created(invoice)
    world.next_check()  # check 1, before the event's third attempt

    world.created(invoice)  # holds the draft and reports
    assert world.stripe.invoices[invoice["id"]]["auto_advance"] is False
    # Something must still be on its way to release the draft.
    assert world.queue.scheduled, "the held draft has no release check left"


def test_a_redelivered_event_after_release_changes_nothing(world: UnitWorld) -> None:
    invoice = world.draft()
    snapshot = copy.deepcopy(invoice)  # what Stripe's event carries, whenever delivered
    world.created(invoice)
    assert world.check(invoice).released is ReleaseAction.AUTO_ADVANCE

    for event_id in ("evt_created", "evt_twin"):
        world.created(snapshot, event_id=event_id)

    assert world.stripe.calls.count("hold_invoice") == 1
    assert world.stripe.invoices[invoice["id"]]["auto_advance"] is True
    record = record_of(world, invoice)
    assert (record.hold_status, record.release_action) == (
        HoldStatus.RELEASED,
        ReleaseAction.AUTO_ADVANCE,
    )
    assert len(world.stripe.sent) == 1


# --- release ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("released_at", "action"),
    [
        (NOW, ReleaseAction.AUTO_ADVANCE),
        (SCHEDULE - MARGIN - 1, ReleaseAction.AUTO_ADVANCE),  # the margin still to spare
        (SCHEDULE - MARGIN, ReleaseAction.FINALIZE),  # too close to resume
        (SCHEDULE, ReleaseAction.FINALIZE),
        (SCHEDULE + 3600, ReleaseAction.FINALIZE),  # past Stripe's own schedule
    ],
)
def test_a_confirmed_draft_is_resumed_with_time_to_spare_else_finalized(
    world: UnitWorld, released_at: int, action: ReleaseAction
) -> None:
    invoice = world.draft()
    world.created(invoice)
    world.clock.now = released_at

    outcome = world.check(invoice)

    assert outcome.released is action
    record = record_of(world, invoice)
    assert (record.hold_status, record.release_action, record.released_at) == (
        HoldStatus.RELEASED,
        action,
        released_at,
    )
    stripe_invoice = world.stripe.invoices[invoice["id"]]
    assert stripe_invoice["auto_advance"] is True  # also when finalized: Stripe collects it
    if action is ReleaseAction.AUTO_ADVANCE:
        assert stripe_invoice["status"] == "draft"
        assert stripe_invoice["automatically_finalizes_at"] == SCHEDULE
        assert "finalize_invoice" not in world.stripe.calls
    else:
        assert stripe_invoice["status"] == "open"
        assert "resume_invoice" not in world.stripe.calls
    assert world.queue.scheduled[1:] == []  # nothing after the first check


def test_a_resume_without_a_future_finalization_time_is_followed_by_finalize(
    world: UnitWorld,
) -> None:
    invoice = world.draft()
    world.created(invoice)
    invoice["_schedule"] = NOW - 1  # Stripe answers the resume with a time already past

    assert world.check(invoice).released is ReleaseAction.FINALIZE
    calls = world.stripe.calls
    assert calls.index("resume_invoice") < calls.index("finalize_invoice")
    assert world.stripe.invoices[invoice["id"]]["status"] == "open"


def test_finalize_refused_on_a_draft_hands_it_back_to_stripe(world: UnitWorld) -> None:
    invoice = world.draft()
    world.created(invoice)
    world.clock.now = SCHEDULE  # finalized by meterbridge, not resumed
    world.stripe.fail("finalize_invoice", PermanentError("Stripe Tax could not compute tax"))

    with counted_metrics() as metrics:
        outcome = world.check(invoice)

    assert outcome.released is ReleaseAction.AUTO_ADVANCE
    assert metrics["HoldReleaseFallback"] == 1
    assert world.stripe.calls[-2:] == ["invoice", "resume_invoice"]
    stripe_invoice = world.stripe.invoices[invoice["id"]]
    assert (stripe_invoice["status"], stripe_invoice["auto_advance"]) == ("draft", True)
    record = record_of(world, invoice)
    assert (record.hold_status, record.release_action) == (
        HoldStatus.RELEASED,
        ReleaseAction.AUTO_ADVANCE,
    )


@pytest.mark.parametrize(
    ("released_at", "refused"),
    [(NOW, "resume_invoice"), (SCHEDULE, "finalize_invoice")],
)
def test_a_draft_finalized_by_someone_else_meanwhile_is_released_with_no_action(
    world: UnitWorld, released_at: int, refused: str
) -> None:
    invoice = world.draft()
    world.created(invoice)
    world.clock.now = released_at
    # Finalized in the Dashboard between the check's read and meterbridge's call.
    world.stripe.watch(refused, lambda: world.stripe.invoices[invoice["id"]].update(status="open"))
    world.stripe.fail(refused, PermanentError("This invoice is already finalized"))

    with counted_metrics() as metrics:
        outcome = world.check(invoice)

    assert outcome.released is ReleaseAction.NONE
    assert metrics["HoldReleaseFallback"] == 0
    assert world.stripe.calls.count(refused) == 1
    assert {"resume_invoice", "finalize_invoice"} & set(world.stripe.calls) == {refused}
    record = record_of(world, invoice)
    assert (record.hold_status, record.release_action) == (
        HoldStatus.RELEASED,
        ReleaseAction.NONE,
    )
