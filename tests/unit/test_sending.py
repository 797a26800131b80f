"""Reporting and sending, on in-memory fakes: what reaches Stripe and what the ledger says."""

from decimal import Decimal

import pytest

from meterbridge.domain.records import FailureClass, InvoiceStatus, ReportStatus
from meterbridge.errors import PermanentError, TransientError
from tests.support.unit_world import DAY, NOW, PERIOD, UnitWorld


@pytest.fixture
def world() -> UnitWorld:
    world = UnitWorld(env={"INVOICE_GUARD": "off"})
    world.set_usage("1234.5")
    return world


def test_a_renewal_is_reported_once_at_the_last_second_of_its_period(world: UnitWorld) -> None:
    invoice = world.draft()
    assert world.created(invoice).result == "reported"

    [sent] = world.stripe.sent
    assert (sent.value, sent.timestamp, sent.customer) == (
        Decimal("1234.5"),
        PERIOD.end - 1,
        "cus_1",
    )
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert (report.status, report.value, report.attempts) == (ReportStatus.SENT, sent.value, 1)
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.status is InvoiceStatus.REPORTED
    assert record.created_events == {"evt_created"}


@pytest.mark.parametrize(
    ("second_event", "careful"),
    [("evt_created", "redelivery"), ("evt_twin", "second event for the same invoice")],
)
def test_redeliveries_and_twin_events_send_nothing_more(
    world: UnitWorld, second_event: str, careful: str
) -> None:
    invoice = world.draft()
    world.created(invoice)
    outcome = world.created(invoice, event_id=second_event)
    assert len(world.stripe.sent) == 1, careful
    assert outcome.result in {"duplicate_event", "reported"}


@pytest.mark.parametrize(
    ("env", "usage", "status"),
    [
        ({}, "0", ReportStatus.SENT),  # zero is reported, so the invoice shows it
        ({"REPORT_ZERO_USAGE": "false"}, "0", ReportStatus.SKIPPED),
        ({}, "7", ReportStatus.SENT),
    ],
)
def test_zero_usage_is_sent_unless_configured_off(
    env: dict[str, str], usage: str, status: ReportStatus
) -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "off", **env})
    world.set_usage(usage)
    world.created(world.draft())
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.status is status
    assert len(world.stripe.sent) == (status is ReportStatus.SENT)


def test_a_report_sent_after_finalization_time_is_late(world: UnitWorld) -> None:
    world.created(world.draft(finalizes_at=NOW - 5))
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.status is ReportStatus.LATE


def test_a_usage_source_outage_fails_transiently_and_the_retry_sends(world: UnitWorld) -> None:
    invoice = world.draft()
    world.usage.fail(TransientError("warehouse down"))
    with pytest.raises(TransientError):
        world.created(invoice)
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert (report.status, report.failure_class) == (ReportStatus.FAILED, FailureClass.TRANSIENT)
    assert world.stripe.sent == []

    world.created(invoice)
    assert len(world.stripe.sent) == 1
    assert world.ledger.report(world.identifier()).status is ReportStatus.SENT  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("usage", "reason"),
    [("12345678901234567", "17 significant digits"), ("lots", "not a decimal number")],
)
def test_values_stripe_cannot_take_are_permanent_failures(
    world: UnitWorld, usage: str, reason: str
) -> None:
    world.set_usage(usage)
    with pytest.raises(PermanentError, match=reason):
        world.created(world.draft())
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert (report.status, report.failure_class) == (ReportStatus.FAILED, FailureClass.PERMANENT)
    assert world.stripe.sent == []


def test_a_retry_after_a_crash_resends_the_recorded_value_not_a_new_one(world: UnitWorld) -> None:
    """Stripe may hold the first attempt's event: the retry sends the same value under the
    same identifier (Stripe drops it as a duplicate), never a recomputed one."""
    invoice = world.draft()
    world.stripe.fail("create_meter_event", TransientError("Stripe 500 after it began"))
    with pytest.raises(TransientError):
        world.created(invoice)
    world.set_usage("999")  # the source moved on
    world.clock.now += 200  # the failed attempt's lease is long over

    world.created(invoice)

    [sent] = world.stripe.sent
    assert sent.value == Decimal("1234.5")
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert (report.status, report.attempts) == (ReportStatus.SENT, 2)


def test_each_attempt_has_its_own_idempotency_key(world: UnitWorld) -> None:
    """Stripe replays a saved 5xx to the same key for ≥ 24 h: a retry must use a new one."""
    world.stripe.fail("create_meter_event", TransientError("500"))
    invoice = world.draft()
    with pytest.raises(TransientError):
        world.created(invoice)
    world.created(invoice)
    assert world.stripe.attempts == [1, 2]  # the retry is attempt 2: its own key


def test_an_outcome_unknown_after_stripes_memory_is_closed_not_resent(world: UnitWorld) -> None:
    invoice = world.draft()
    world.stripe.fail("create_meter_event", TransientError("timeout"))
    with pytest.raises(TransientError):
        world.created(invoice)
    world.clock.now += 2 * DAY  # Stripe may have forgotten the identifier

    with pytest.raises(PermanentError, match="outcome is unknown"):
        world.created(invoice)
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.failure_class is FailureClass.OUTCOME_UNKNOWN
    world.created(invoice, event_id="evt_replay")  # closed: a replay leaves it alone
    assert world.stripe.sent == []


def test_one_meter_on_two_lines_is_sent_once_and_flagged(world: UnitWorld) -> None:
    invoice = world.draft([world.price, world.price])
    world.created(invoice)
    assert len(world.stripe.sent) == 1
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert any("priced on 2 lines" in finding for finding in record.findings)


def test_two_subscriptions_on_one_meter_report_once_for_the_first_invoice(
    world: UnitWorld,
) -> None:
    first, second = world.draft(), world.draft()
    world.created(first, event_id="evt_1")
    outcome = world.created(second, event_id="evt_2")
    assert len(world.stripe.sent) == 1
    assert outcome.reports == {world.identifier(): "reported_elsewhere"}
    record = world.ledger.invoice(second["id"])
    assert record is not None
    assert any("shared meter" in finding for finding in record.findings)


def test_count_meters_are_refused_once_and_never_retried(world: UnitWorld) -> None:
    counting = world.stripe.add_meter("logins", formula="count")
    world.set_usage("12000", meter=counting)
    invoice = world.draft([world.stripe.add_price(counting)])
    outcome = world.created(invoice)  # no exception: nothing a retry could change
    assert outcome.result == "failed"
    assert world.stripe.sent == []
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.status is InvoiceStatus.FAILED
    assert "'count'" in str(record.reason)
    assert "logins" in str(record.reason)


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        ("-5", "is negative"),
        ("1e400", "above its ceiling"),
        ("1e20", "above its ceiling"),
        ("NaN", "not finite"),
    ],
)
def test_implausible_usage_never_reaches_stripe(world: UnitWorld, usage: str, reason: str) -> None:
    world.set_usage(usage)
    with pytest.raises(PermanentError, match=reason):
        world.created(world.draft())
    assert world.stripe.sent == []
    report = world.ledger.report(world.identifier())
    assert report is not None
    assert report.failure_class is FailureClass.PERMANENT
    assert reason in str(report.last_error)


def test_the_usage_ceiling_and_negative_usage_are_configurable() -> None:
    world = UnitWorld(
        env={
            "INVOICE_GUARD": "off",
            "USAGE_VALUE_CEILING": "api_calls=100,*=1e12",
            "ALLOW_NEGATIVE_USAGE": "true",
        }
    )
    world.set_usage("101")
    with pytest.raises(PermanentError, match="ceiling 100"):
        world.created(world.draft())
    other = UnitWorld(env={"INVOICE_GUARD": "off", "ALLOW_NEGATIVE_USAGE": "true"})
    other.set_usage("-5")  # a credit the product means
    other.created(other.draft())
    assert [sent.value for sent in other.stripe.sent] == [Decimal(-5)]


def test_a_bad_ceiling_setting_is_named() -> None:
    from meterbridge.errors import SettingsError

    with pytest.raises(SettingsError, match="USAGE_VALUE_CEILING"):
        UnitWorld(env={"USAGE_VALUE_CEILING": "api_calls=lots"}).pipeline  # noqa: B018
