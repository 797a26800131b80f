"""End to end over the whole local stack: Stripe emulator → webhook → SQS → worker → Stripe.

Each test drives its own customers through test-clock renewals with the real stripe SDK and
then reads what Stripe (the emulator) billed: every finalized renewal invoice must carry
exactly the usage the source holds for its service period, whatever went wrong on the way.
"""

import json
import time
import urllib.request

import pytest

from meterbridge_local.demo import InvoiceCheck, Subscriber
from meterbridge_local.stripe_emulator.webhooks import sign
from meterbridge_local.usage_server import Fault
from tests.e2e.conftest import E2E, last_month_start

pytestmark = pytest.mark.e2e


def _checks(e2e: E2E, subscribers: list[Subscriber], renewals: int) -> list[InvoiceCheck]:
    return [
        e2e.driver.check_renewal(subscriber, index, e2e.catalog)
        for subscriber in subscribers
        for index in range(1, renewals + 1)
    ]


def _assert_exact(checks: list[InvoiceCheck]) -> None:
    wrong = [
        (c.subscriber.name, c.period, str(c.expected), c.status, str(c.quantity), c.amount)
        for c in checks
        if not c.ok
    ]
    assert wrong == []


@pytest.fixture(scope="module")
def three_months(e2e: E2E) -> tuple[list[Subscriber], list[InvoiceCheck]]:
    """Three customers, three renewals each, different usage every month."""
    subscribers = e2e.subscribe(["umbrella", "hooli", "wonka"], frozen_time=last_month_start(2))
    for n, subscriber in enumerate(subscribers):
        for index in range(3):
            e2e.feed(subscriber, index, str(1000 * (n + 1) + 17 * index + n / 4))
    clock = subscribers[0].clock_id
    for index in range(1, 4):
        e2e.finalize(clock, e2e.renew(clock, index, subscribers[0]))
    return subscribers, _checks(e2e, subscribers, 3)


def test_several_customers_over_several_months_every_invoice_exact(
    e2e: E2E, three_months: tuple[list[Subscriber], list[InvoiceCheck]]
) -> None:
    subscribers, checks = three_months
    assert len(checks) == 9
    _assert_exact(checks)
    for subscriber in subscribers:
        events = e2e.accepted_events(subscriber)
        # One report per service period, under the deterministic identifier.
        assert len(events) == 3
        assert len({e["identifier"] for e in events}) == 3
        assert all(e["identifier"].startswith("mb2-") for e in events)


def test_reports_sent_while_the_drafts_were_open_are_recorded_sent(
    e2e: E2E, three_months: tuple[list[Subscriber], list[InvoiceCheck]]
) -> None:
    """Test-clock time, not wall time, decides lateness: these clocks lie in the past."""
    _, checks = three_months
    statuses = [
        report.status
        for check in checks
        for report in e2e.ledger.invoice_reports(check.invoice_id or "")
    ]
    assert statuses == ["sent"] * 9


def _post(url: str, payload: bytes, signature: str) -> int:
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_duplicate_webhook_deliveries_report_once(e2e: E2E) -> None:
    (subscriber,) = e2e.subscribe(["pied-piper"])
    e2e.feed(subscriber, 0, "321.5")
    boundary = e2e.renew(subscriber.clock_id, 1, subscriber)
    event = e2e.driver.renewal_event(subscriber, 1)
    signature = sign(event["payload"], e2e.secret, int(time.time()))
    # The same signed delivery, three more times, as Stripe's at-least-once delivery may.
    statuses = [_post(e2e.stack.webhook_url, event["payload"], signature) for _ in range(3)]
    assert statuses == [200, 200, 200]
    e2e.settle()
    e2e.finalize(subscriber.clock_id, boundary)
    sent = [e for e in e2e.emulator.meter_events() if e["customer"] == subscriber.customer_id]
    assert [e["status"] for e in sent] == ["accepted"]  # never even sent a second time
    _assert_exact(_checks(e2e, [subscriber], 1))


def test_worker_crash_after_sending_does_not_double_count(e2e: E2E) -> None:
    crashing, bystander = e2e.subscribe(["crashy", "steady"])
    e2e.feed(crashing, 0, "5000")
    e2e.feed(bystander, 0, "42")
    gateway = e2e.handlers.gateway
    assert gateway is not None
    crashes_before = gateway.crashes
    gateway.crash_after_send(crashing.customer_id)
    boundary = e2e.renew(crashing.clock_id, 1, crashing)
    assert gateway.crashes == crashes_before + 1
    # Stripe got the event, the ledger did not hear back; the redelivered batch must not
    # count it again.
    assert len(e2e.accepted_events(crashing)) == 1
    assert len(e2e.accepted_events(bystander)) == 1
    e2e.finalize(crashing.clock_id, boundary)
    checks = _checks(e2e, [crashing, bystander], 1)
    _assert_exact(checks)
    (report,) = e2e.ledger.invoice_reports(checks[0].invoice_id or "")
    assert report.status in {"sent", "late"}
    assert report.attempts >= 2


def test_stripe_5xx_burst_still_bills_exactly(e2e: E2E) -> None:
    subscribers = e2e.subscribe(["flaky-1", "flaky-2", "flaky-3"])
    for n, subscriber in enumerate(subscribers):
        e2e.feed(subscriber, 0, str(700 + n))
    # A deterministic burst (fail_next): the worker's next 3 customer reads and next 2 meter
    # events answer 500 before Stripe executes them; the test's own clock and event reads go
    # through. Each call meets fewer failures than the SDK's retries, whatever the order.
    customers = e2e.emulator.fail_next("/v1/customers/", count=3, status=500)
    meter_events = e2e.emulator.fail_next("/v1/billing/meter_events", count=2, status=500)
    try:
        boundary = e2e.renew(subscribers[0].clock_id, 1, subscribers[0])
    finally:
        e2e.emulator.config.fail_next.clear()
    assert (customers.count, meter_events.count) == (0, 0)  # every failure was served
    e2e.finalize(subscribers[0].clock_id, boundary)
    _assert_exact(_checks(e2e, subscribers, 1))
    for subscriber in subscribers:
        assert len(e2e.accepted_events(subscriber)) == 1


def test_poison_invoice_is_recorded_failed_and_lands_in_the_dlq(e2e: E2E) -> None:
    (subscriber,) = e2e.subscribe(["poison"])
    e2e.usage.script(subscriber.tenant, Fault(value="lots", times=None))
    try:
        boundary = subscriber.period(0)[1]
        e2e.driver.advance(subscriber.clock_id, boundary)
        event = e2e.driver.renewal_event(subscriber, 1)
        # Fails permanently once: the worker moves it to the dead-letter queue at once.
        e2e.wait_for_dead_letter(event["id"])
    finally:
        e2e.usage.clear_faults()
    invoice_id = json.loads(event["payload"])["data"]["object"]["id"]
    view = e2e.ledger.invoice_view(invoice_id)
    (report,) = view.reports
    assert report.status == "failed"
    assert report.failure_class == "permanent"
    assert "'lots' is not a decimal number" in str(report.last_error)
    assert report.attempts == 1  # moved to the dead-letter queue at once, not re-received
    assert view.record is not None
    assert view.record.status == "failed"
    assert "'lots' is not a decimal number" in str(view.record.reason)
    assert e2e.accepted_events(subscriber) == []
    # The invoice guard keeps checking the draft while it is open; finalizing ends that.
    e2e.finalize(subscriber.clock_id, boundary)
