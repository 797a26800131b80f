"""INVOICE_GUARD=hold holds drafts only: auto_advance=false on an invoice Stripe has already
finalized would switch off its collection (docs/stripe.md#S-FIN-4)."""

from typing import Any

from meterbridge.domain.records import HoldStatus
from tests.support.fakes import FakeStripe
from tests.support.unit_world import UnitWorld


def test_an_invoice_finalized_before_its_created_event_is_reported_but_not_held() -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "hold"})
    world.set_usage("40")
    invoice = world.draft()
    payload = dict(invoice)  # the event's copy: still a draft
    invoice.update(status="open", automatically_finalizes_at=None)  # Stripe's, now

    world.created(payload)

    assert invoice["auto_advance"] is True  # still collected
    assert "hold_invoice" not in world.stripe.calls
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.hold_status is HoldStatus.NOT_HELD
    assert "already open" in (record.hold_reason or "")
    assert [event.value for event in world.stripe.sent] == [40]


class FinalizedWhileHolding(FakeStripe):
    """Stripe finalizes the draft between meterbridge's read and its update."""

    def hold_invoice(self, invoice_id: str) -> dict[str, Any]:
        self.invoices[invoice_id]["status"] = "open"
        return super().hold_invoice(invoice_id)


def test_a_draft_finalized_while_being_held_gets_its_collection_back() -> None:
    world = UnitWorld(env={"INVOICE_GUARD": "hold"}, stripe=FinalizedWhileHolding())
    world.set_usage("40")
    invoice = world.draft()

    world.created(dict(invoice))

    assert world.stripe.calls.count("resume_invoice") == 1
    assert invoice["auto_advance"] is True
    record = world.ledger.invoice(invoice["id"])
    assert record is not None
    assert record.hold_status is HoldStatus.NOT_HELD
    assert [event.value for event in world.stripe.sent] == [40]
