"""The ledger's contract, checked on the DynamoDB ledger (real boto3 on moto) and on the unit
tests' FakeLedger alike, so the fake cannot drift from the real one. The real one is the
reference: where they disagree, the fake is fixed."""

import uuid
from decimal import Decimal

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger, ReportInFlight, iso
from meterbridge.domain.invoices import Meter, ServicePeriod
from meterbridge.domain.records import (
    Claim,
    ConfirmationStatus,
    FailureClass,
    HoldStatus,
    InvoiceChanges,
    InvoiceStatus,
    Reconciliation,
    ReconciliationStatus,
    ReleaseAction,
    ReportRecord,
    ReportStatus,
)
from meterbridge.domain.reports import PlannedReport, report_identifier
from meterbridge.worker.ports import Ledger
from tests.support.fakes import FakeLedger

NOW = 1_800_000_000
LEASE = 120
PERIOD = ServicePeriod(start=NOW - 30 * 86_400, end=NOW - 60)
METER = Meter(id="mtr_contract", event_name="api_calls")


@pytest.fixture(params=["dynamodb", "fake"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    if request.param == "fake":
        return FakeLedger()
    table: str = request.getfixturevalue("ledger_table")  # moto only where it is used
    return DynamoDbLedger(table, boto3.client("dynamodb"))


@pytest.fixture
def customer() -> str:
    """Unique per test: the DynamoDB table is shared by the module's tests."""
    return f"cus_{uuid.uuid4().hex[:12]}"


def planned(
    customer: str, invoice: str | None = None, *, meter: Meter = METER, revision: int = 0
) -> PlannedReport:
    return PlannedReport(
        identifier=report_identifier(customer, meter.id, PERIOD, revision),
        invoice_id=invoice or f"in_{customer}",
        customer_id=customer,
        meter=meter,
        period=PERIOD,
        finalizes_at=NOW + 3600,
        livemode=False,
        line_ids=("il_1", "il_2"),
        subscription_items=("si_1", "si_2"),
        revision=revision,
    )


def stored(ledger: Ledger, identifier: str) -> ReportRecord:
    record = ledger.report(identifier)
    assert record is not None
    return record


def claimed(ledger: Ledger, plan: PlannedReport, now: int = NOW) -> Claim:
    claim = ledger.claim(plan, now, LEASE)
    assert isinstance(claim, Claim)
    return claim


def sent(ledger: Ledger, plan: PlannedReport, now: int = NOW) -> Claim:
    claim = ledger.claim_new(plan, Decimal("12.5"), PERIOD.end - 1, now, LEASE)
    assert claim is not None
    ledger.mark_sent(claim, late=False, request_id="req_1", duplicate=False, now=now)
    return claim


# --- claims -------------------------------------------------------------------------------


def test_claim_new_claims_a_fresh_report_with_its_value(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    claim = ledger.claim_new(plan, Decimal("12.5"), PERIOD.end - 1, NOW, LEASE)

    assert claim == Claim(plan.identifier, 1, Decimal("12.5"), PERIOD.end - 1, NOW)
    assert stored(ledger, plan.identifier) == ReportRecord(
        identifier=plan.identifier,
        invoice_id=plan.invoice_id,
        customer_id=customer,
        meter_id=METER.id,
        period=PERIOD,
        status=ReportStatus.PENDING,
        subscription_items=("si_1", "si_2"),
        line_ids=("il_1", "il_2"),
        meter_event_name="api_calls",
        value=Decimal("12.5"),
        timestamp=PERIOD.end - 1,
        attempts=1,
        lease_expires_at=NOW + LEASE,
        finalizes_at=NOW + 3600,
        send_started_at=NOW,
        created_at=iso(NOW),
        updated_at=iso(NOW),
    )
    # Any existing record: None, and the general claim decides.
    assert ledger.claim_new(plan, Decimal(99), PERIOD.end - 1, NOW + 999, LEASE) is None
    assert stored(ledger, plan.identifier).value == Decimal("12.5")


def test_claim_of_a_fresh_report_has_no_value_to_reuse(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    assert ledger.claim(plan, NOW, LEASE) == Claim(plan.identifier, 1)
    record = stored(ledger, plan.identifier)
    assert (record.status, record.attempts, record.lease_expires_at, record.value) == (
        ReportStatus.PENDING,
        1,
        NOW + LEASE,
        None,
    )
    assert (record.line_ids, record.finalizes_at, record.created_at) == (
        ("il_1", "il_2"),
        NOW + 3600,
        iso(NOW),
    )


@pytest.mark.parametrize("after", [0, LEASE - 1, LEASE])
def test_a_live_lease_is_in_flight(ledger: Ledger, customer: str, after: int) -> None:
    plan = planned(customer)
    claimed(ledger, plan)
    with pytest.raises(ReportInFlight):
        ledger.claim(plan, NOW + after, LEASE)
    assert stored(ledger, plan.identifier).attempts == 1


def test_an_expired_lease_is_taken_over_with_the_recorded_value(
    ledger: Ledger, customer: str
) -> None:
    plan = planned(customer)
    ledger.claim_new(plan, Decimal("12.5"), PERIOD.end - 1, NOW, LEASE)

    claim = ledger.claim(plan, NOW + LEASE + 1, LEASE)

    assert claim == Claim(plan.identifier, 2, Decimal("12.5"), PERIOD.end - 1, NOW)
    record = stored(ledger, plan.identifier)
    assert (record.attempts, record.lease_expires_at, record.created_at, record.updated_at) == (
        2,
        NOW + 2 * LEASE + 1,
        iso(NOW),
        iso(NOW + LEASE + 1),
    )


@pytest.mark.parametrize("status", [ReportStatus.SENT, ReportStatus.LATE, ReportStatus.SKIPPED])
def test_a_done_report_is_returned_not_claimed(
    ledger: Ledger, customer: str, status: ReportStatus
) -> None:
    plan = planned(customer)
    claim = claimed(ledger, plan)
    if status is ReportStatus.SKIPPED:
        ledger.mark_skipped(claim, reason="zero usage", now=NOW)
    else:
        ledger.mark_sent(
            claim, late=status is ReportStatus.LATE, request_id="req_1", duplicate=False, now=NOW
        )

    answer = ledger.claim(plan, NOW + 10 * LEASE, LEASE)

    assert isinstance(answer, ReportRecord)
    assert (answer.status, answer.attempts) == (status, 1)
    assert stored(ledger, plan.identifier) == answer


@pytest.mark.parametrize("closed", [FailureClass.REJECTED, FailureClass.OUTCOME_UNKNOWN])
def test_a_closed_failure_is_returned_not_claimed(
    ledger: Ledger, customer: str, closed: FailureClass
) -> None:
    plan = planned(customer)
    if closed is FailureClass.REJECTED:
        sent(ledger, plan)
        assert ledger.mark_rejected(
            plan.identifier, code="customer_not_found", message="no", event_id="evt_1", now=NOW
        )
    else:
        ledger.mark_failed(claimed(ledger, plan), failure_class=closed, reason="?", now=NOW)

    answer = ledger.claim(plan, NOW + 1, LEASE)

    assert isinstance(answer, ReportRecord)
    assert (answer.status, answer.failure_class, answer.closed) == (
        ReportStatus.FAILED,
        closed,
        True,
    )


@pytest.mark.parametrize(
    ("failure", "reused"), [(FailureClass.TRANSIENT, True), (FailureClass.PERMANENT, False)]
)
def test_after_a_failure_the_value_is_reused_unless_the_failure_was_permanent(
    ledger: Ledger, customer: str, failure: FailureClass, reused: bool
) -> None:
    plan = planned(customer)
    first = ledger.claim_new(plan, Decimal("12.5"), PERIOD.end - 1, NOW, LEASE)
    assert first is not None
    ledger.mark_failed(first, failure_class=failure, reason="x" * 2000, now=NOW)
    failed = stored(ledger, plan.identifier)
    assert (failed.status, failed.failure_class, failed.lease_expires_at) == (
        ReportStatus.FAILED,
        failure,
        None,
    )
    assert failed.last_error == "x" * 1000
    assert failed.send_started_at == (NOW if reused else None)

    retry = ledger.claim(plan, NOW + 1, LEASE)  # no lease to wait for

    if reused:
        assert retry == Claim(plan.identifier, 2, Decimal("12.5"), PERIOD.end - 1, NOW)
    else:
        assert retry == Claim(plan.identifier, 2)
        ledger.record_value(retry, Decimal(7), PERIOD.end - 1, NOW + 1)
        assert stored(ledger, plan.identifier).send_started_at == NOW + 1  # a new send


# --- moves of a claimed report --------------------------------------------------------------


def test_only_the_claim_holder_moves_the_report(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    stale = claimed(ledger, plan)
    current = claimed(ledger, plan, NOW + LEASE + 1)  # the first attempt's lease expired

    moves = [
        lambda claim: ledger.record_value(claim, Decimal(1), PERIOD.end - 1, NOW),
        lambda claim: ledger.mark_sent(claim, late=False, request_id="r", duplicate=False, now=NOW),
        lambda claim: ledger.mark_failed(
            claim, failure_class=FailureClass.TRANSIENT, reason="r", now=NOW
        ),
        lambda claim: ledger.mark_skipped(claim, reason="r", now=NOW),
    ]
    for move in moves:
        with pytest.raises(ReportInFlight):
            move(stale)
    assert stored(ledger, plan.identifier).status is ReportStatus.PENDING

    ledger.mark_sent(current, late=False, request_id="req_2", duplicate=True, now=NOW + 200)
    for move in moves:  # no longer pending: nobody moves it
        with pytest.raises(ReportInFlight):
            move(current)
    record = stored(ledger, plan.identifier)
    assert (record.status, record.stripe_request_id, record.duplicate, record.sent_at) == (
        ReportStatus.SENT,
        "req_2",
        True,
        NOW + 200,
    )


def test_record_value_keeps_the_first_send_start(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    claim = claimed(ledger, plan)
    ledger.record_value(claim, Decimal("3.25"), PERIOD.end - 1, NOW + 5)
    ledger.mark_failed(claim, failure_class=FailureClass.TRANSIENT, reason="503", now=NOW + 6)
    retry = claimed(ledger, plan, NOW + 7)
    ledger.record_value(retry, Decimal("3.25"), PERIOD.end - 1, NOW + 8)

    record = stored(ledger, plan.identifier)
    assert (record.value, record.timestamp, record.send_started_at, record.updated_at) == (
        Decimal("3.25"),
        PERIOD.end - 1,
        NOW + 5,
        iso(NOW + 8),
    )


def test_mark_sent_clears_the_lease_and_an_earlier_failure(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    ledger.mark_failed(
        claimed(ledger, plan), failure_class=FailureClass.TRANSIENT, reason="503", now=NOW
    )
    retry = claimed(ledger, plan, NOW + 1)
    ledger.mark_sent(retry, late=True, request_id=None, duplicate=False, now=NOW + 2)

    record = stored(ledger, plan.identifier)
    assert (record.status, record.failure_class, record.last_error) == (
        ReportStatus.LATE,
        None,
        None,
    )
    assert (record.lease_expires_at, record.stripe_request_id, record.sent_at) == (
        None,
        "",
        NOW + 2,
    )


def test_mark_skipped_records_why(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    ledger.mark_skipped(claimed(ledger, plan), reason="zero usage", now=NOW + 3)
    record = stored(ledger, plan.identifier)
    assert (record.status, record.last_error, record.lease_expires_at, record.updated_at) == (
        ReportStatus.SKIPPED,
        "zero usage",
        None,
        iso(NOW + 3),
    )


# --- Stripe's verdicts ----------------------------------------------------------------------


def confirm(ledger: Ledger, identifier: str, status: ConfirmationStatus, now: int) -> object:
    return ledger.record_confirmation(
        identifier, status=status, observed=Decimal(5), expected=Decimal("12.5"), now=now
    )


def test_record_confirmation_answers_the_status_it_replaces(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    sent(ledger, plan)

    assert confirm(ledger, plan.identifier, ConfirmationStatus.PENDING, NOW + 60) is None
    assert confirm(ledger, plan.identifier, ConfirmationStatus.MISSING, NOW + 120) is (
        ConfirmationStatus.PENDING
    )
    assert confirm(ledger, plan.identifier, ConfirmationStatus.CONFIRMED, NOW + 180) is (
        ConfirmationStatus.MISSING
    )

    confirmation = stored(ledger, plan.identifier).confirmation
    assert confirmation is not None
    assert (confirmation.status, confirmation.observed, confirmation.expected) == (
        ConfirmationStatus.CONFIRMED,
        Decimal(5),
        Decimal("12.5"),
    )
    assert (confirmation.checks, confirmation.checked_at) == (3, NOW + 180)
    assert (confirmation.missing_at, confirmation.confirmed_at) == (NOW + 120, NOW + 180)
    assert confirm(ledger, "mb1-nobody", ConfirmationStatus.PENDING, NOW) is None
    assert ledger.report("mb1-nobody") is None


def test_a_repeated_status_is_answered_as_the_previous_one(ledger: Ledger, customer: str) -> None:
    """What keeps ConfirmationMissing to one alarm per report. The ledger reads the whole
    item as it was (ALL_OLD): moto's UPDATED_OLD leaves out attributes set to the value
    they had, and DynamoDB's documentation does not say either way."""
    plan = planned(customer)
    sent(ledger, plan)
    confirm(ledger, plan.identifier, ConfirmationStatus.MISSING, NOW + 60)

    again = confirm(ledger, plan.identifier, ConfirmationStatus.MISSING, NOW + 120)

    assert again is ConfirmationStatus.MISSING
    confirmation = stored(ledger, plan.identifier).confirmation
    assert confirmation is not None
    assert (confirmation.checks, confirmation.missing_at) == (2, NOW + 60)


def test_mark_rejected_fails_a_sent_report(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    sent(ledger, plan)
    assert ledger.mark_rejected(
        plan.identifier,
        code="timestamp_too_far_in_past",
        message="m" * 1500,
        event_id="evt_9",
        now=NOW + 5,
    )
    record = stored(ledger, plan.identifier)
    assert (record.status, record.failure_class, record.stripe_error_code) == (
        ReportStatus.FAILED,
        FailureClass.REJECTED,
        "timestamp_too_far_in_past",
    )
    assert (record.stripe_error_event_id, record.last_error, record.updated_at) == (
        "evt_9",
        "m" * 1000,
        iso(NOW + 5),
    )
    assert record.delivered is False
    assert not ledger.mark_rejected("mb1-nobody", code="c", message="m", event_id="e", now=NOW)
    assert ledger.report("mb1-nobody") is None


def test_mark_suspect_never_overwrites_confirmed(ledger: Ledger, customer: str) -> None:
    pending, confirmed = (
        planned(customer),
        planned(customer, meter=Meter(id="mtr_2", event_name="gb")),
    )
    for plan, status in (
        (pending, ConfirmationStatus.PENDING),
        (confirmed, ConfirmationStatus.CONFIRMED),
    ):
        sent(ledger, plan)
        ledger.record_confirmation(
            plan.identifier, status=status, observed=Decimal(1), expected=Decimal(2), now=NOW
        )

    def suspect(identifier: str) -> bool:
        return ledger.mark_suspect(
            identifier, code="invalid", message="stream", event_id="evt_s", now=NOW + 1
        )

    assert suspect(pending.identifier)
    assert not suspect(confirmed.identifier)
    assert not suspect("mb1-nobody")
    marked = stored(ledger, pending.identifier)
    assert marked.confirmation is not None
    # Only the status changes: the last check's numbers stay for the operator.
    assert (
        marked.confirmation.status,
        marked.confirmation.checks,
        marked.confirmation.observed,
    ) == (
        ConfirmationStatus.SUSPECT,
        1,
        Decimal(1),
    )
    assert (marked.status, marked.stripe_error_code, marked.stripe_error_event_id) == (
        ReportStatus.SENT,
        "invalid",
        "evt_s",
    )
    assert stored(ledger, confirmed.identifier).confirmation_status is ConfirmationStatus.CONFIRMED
    assert stored(ledger, confirmed.identifier).stripe_error_code is None


def test_record_reconciliation_replaces_the_verdict(ledger: Ledger, customer: str) -> None:
    plan = planned(customer)
    sent(ledger, plan)
    ledger.record_reconciliation(
        plan.identifier,
        Reconciliation(
            ReconciliationStatus.MISMATCH, Decimal(1), Decimal(2), Decimal(3), "usage_changed", NOW
        ),
    )
    later = Reconciliation(
        ReconciliationStatus.RECONCILED, Decimal(2), Decimal(2), None, None, NOW + 9
    )
    ledger.record_reconciliation(plan.identifier, later)
    assert stored(ledger, plan.identifier).reconciliation == later


# --- invoices -------------------------------------------------------------------------------


def test_update_invoice_creates_then_changes_only_what_it_names(
    ledger: Ledger, customer: str
) -> None:
    invoice = f"in_{customer}"
    assert ledger.invoice(invoice) is None
    ledger.update_invoice(
        invoice,
        customer,
        InvoiceChanges(
            status=InvoiceStatus.FAILED,
            reason="usage source down",
            report_count=2,
            confirmation_scheduled_at=NOW,
            guard_mode="confirm",
            findings=("line il_3: not metered",),
        ),
        NOW,
        created_event="evt_1",
    )
    ledger.update_invoice(
        invoice,
        customer,
        InvoiceChanges(status=InvoiceStatus.REPORTED, clear_reason=True),
        NOW + 5,
        created_event="evt_2",
    )

    record = ledger.invoice(invoice)
    assert record is not None
    assert (record.status, record.reason, record.report_count, record.guard_mode) == (
        InvoiceStatus.REPORTED,
        None,
        2,
        "confirm",
    )
    assert record.created_events == {"evt_1", "evt_2"}
    assert (record.findings, record.confirmation_scheduled_at) == (("line il_3: not metered",), NOW)
    assert (record.created_at, record.updated_at) == (iso(NOW), iso(NOW + 5))

    ledger.update_invoice(
        invoice, customer, InvoiceChanges(clear_confirmation_schedule=True), NOW + 6
    )
    after = ledger.invoice(invoice)
    assert after is not None
    assert after.confirmation_scheduled_at is None
    assert after.created_events == {"evt_1", "evt_2"}
    assert after.saw_created_event("evt_2")


def test_clear_reason_yields_to_a_new_reason(ledger: Ledger, customer: str) -> None:
    invoice = f"in_{customer}"
    ledger.update_invoice(invoice, customer, InvoiceChanges(reason="first"), NOW)
    ledger.update_invoice(
        invoice, customer, InvoiceChanges(reason="second", clear_reason=True), NOW
    )
    record = ledger.invoice(invoice)
    assert record is not None
    assert record.reason == "second"


def test_begin_hold_only_when_not_held_by_someone_else_or_released(
    ledger: Ledger, customer: str
) -> None:
    invoice = f"in_{customer}"

    def begin(deadline: int, scheduled: int | None, now: int) -> bool:
        return ledger.begin_hold(
            invoice, customer, hold_deadline=deadline, scheduled_finalization_at=scheduled, now=now
        )

    assert begin(NOW + 86_400, NOW + 3600, NOW)
    ledger.update_invoice(invoice, customer, InvoiceChanges(hold_status=HoldStatus.HELD), NOW)
    assert begin(NOW + 90_000, None, NOW + 5)  # already ours: a retry goes on
    record = ledger.invoice(invoice)
    assert record is not None
    assert (record.hold_status, record.held_at, record.hold_deadline) == (
        HoldStatus.HOLDING,
        NOW,
        NOW + 90_000,
    )
    assert (record.scheduled_finalization_at, record.customer_id) == (NOW + 3600, customer)

    ledger.update_invoice(
        invoice,
        customer,
        InvoiceChanges(
            hold_status=HoldStatus.RELEASED,
            released_at=NOW + 9,
            release_action=ReleaseAction.FINALIZE,
        ),
        NOW + 9,
    )
    assert not begin(NOW + 86_400, NOW + 3600, NOW + 10)
    released = ledger.invoice(invoice)
    assert released is not None
    assert (released.hold_status, released.release_action) == (
        HoldStatus.RELEASED,
        ReleaseAction.FINALIZE,
    )


def test_begin_hold_refuses_a_draft_not_held(ledger: Ledger, customer: str) -> None:
    invoice = f"in_{customer}"
    ledger.update_invoice(
        invoice,
        customer,
        InvoiceChanges(
            hold_status=HoldStatus.NOT_HELD, hold_reason="auto_advance was already false"
        ),
        NOW,
    )
    assert not ledger.begin_hold(
        invoice, customer, hold_deadline=NOW + 1, scheduled_finalization_at=None, now=NOW
    )
    record = ledger.invoice(invoice)
    assert record is not None
    assert (record.hold_status, record.held_at) == (HoldStatus.NOT_HELD, None)


def test_invoice_and_customer_reports(ledger: Ledger, customer: str) -> None:
    first = planned(customer, "in_a")
    second = planned(customer, "in_b", meter=Meter(id="mtr_2", event_name="gb"))
    later = planned(customer, "in_b", meter=Meter(id="mtr_3", event_name="seats"))
    claimed(ledger, later, NOW + 200)  # claimed first, at the latest time
    sent(ledger, second, NOW + 100)
    sent(ledger, first, NOW)
    sent(ledger, planned(f"{customer}_other", "in_b"), NOW)  # another customer
    ledger.update_invoice("in_b", customer, InvoiceChanges(report_count=2), NOW)  # not a report

    def ids(reports: list[ReportRecord]) -> set[str]:
        return {r.identifier for r in reports}

    assert ids(ledger.invoice_reports("in_a")) == {first.identifier}
    assert {r.invoice_id for r in ledger.invoice_reports("in_b")} == {"in_b"}
    assert len(ledger.invoice_reports("in_b")) == 3
    assert ledger.invoice_reports("in_nothing") == []
    # Oldest claim first.
    assert [r.identifier for r in ledger.customer_reports(customer, since=NOW)] == [
        first.identifier,
        second.identifier,
        later.identifier,
    ]
    # `since` is the claim time (created_at), not the meter event's timestamp.
    assert ids(ledger.customer_reports(customer, since=NOW + 100)) == {
        second.identifier,
        later.identifier,
    }
    assert ledger.customer_reports(customer, since=NOW + 201) == []
    [report] = ledger.customer_reports(customer, since=NOW + 200)
    assert report == stored(ledger, later.identifier)


# --- Stripe events and stream requests ------------------------------------------------------


def test_an_event_is_remembered_until_it_expires(ledger: Ledger, customer: str) -> None:
    event = f"evt_{customer}"
    assert not ledger.event_seen(event, NOW)
    ledger.remember_event(event, "invoice.finalized", NOW, 100)
    assert ledger.event_seen(event, NOW)
    assert ledger.event_seen(event, NOW + 99)
    assert not ledger.event_seen(event, NOW + 100)  # TTL deletion lags: expiry is read


def test_a_stream_request_remembers_its_reports(ledger: Ledger, customer: str) -> None:
    key = f"key_{customer}"
    assert ledger.stream_request(key) == []
    ledger.record_stream_request(key, ["mb1-a", "mb1-b"], NOW)
    assert ledger.stream_request(key) == ["mb1-a", "mb1-b"]
    ledger.record_stream_request(key, ["mb1-c"], NOW + 1)
    assert ledger.stream_request(key) == ["mb1-c"]


# --- the whole record ---------------------------------------------------------------------


def test_both_ledgers_keep_the_same_records(ledger_table: str, customer: str) -> None:
    """One life of a report and its invoice on both: every field, not only those asserted
    above, must come out the same."""
    real = DynamoDbLedger(ledger_table, boto3.client("dynamodb"))
    fake = FakeLedger()
    plan = planned(customer)
    invoice = plan.invoice_id
    for ledger in (real, fake):
        first = ledger.claim_new(plan, Decimal("12.5"), PERIOD.end - 1, NOW, LEASE)
        assert first is not None
        ledger.mark_failed(first, failure_class=FailureClass.TRANSIENT, reason="503", now=NOW + 1)
        retry = claimed(ledger, plan, NOW + 2)
        ledger.mark_sent(retry, late=False, request_id="req_1", duplicate=True, now=NOW + 3)
        ledger.record_confirmation(
            plan.identifier,
            status=ConfirmationStatus.PENDING,
            observed=Decimal(0),
            expected=Decimal("12.5"),
            now=NOW + 60,
        )
        ledger.mark_suspect(plan.identifier, code="c", message="m", event_id="evt_s", now=NOW + 61)
        ledger.record_reconciliation(
            plan.identifier,
            Reconciliation(ReconciliationStatus.RECONCILED, Decimal("12.5"), Decimal("12.5")),
        )
        ledger.begin_hold(
            invoice, customer, hold_deadline=NOW + 9, scheduled_finalization_at=NOW + 8, now=NOW
        )
        ledger.update_invoice(
            invoice,
            customer,
            InvoiceChanges(status=InvoiceStatus.REPORTED, report_count=1, findings=("f",)),
            NOW + 4,
            created_event="evt_1",
        )
    assert fake.report(plan.identifier) == real.report(plan.identifier)
    assert fake.invoice(invoice) == real.invoice(invoice)
    assert fake.invoice_reports(invoice) == real.invoice_reports(invoice)
