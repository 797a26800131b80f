"""Holding and releasing a draft (INVOICE_GUARD=hold).

On invoice.created the draft gets auto_advance=false before any report is sent, so Stripe
cannot finalize it before its usage is aggregated; the confirmation checks release it once
every report is confirmed — or at HOLD_LIMIT_SECONDS (< 72 h), never blocking billing for
good. docs/guard.md has the rules and what Stripe documents about them.
"""

from meterbridge.domain.invoices import Invoice
from meterbridge.domain.records import HoldStatus, InvoiceChanges, InvoiceRecord, ReleaseAction
from meterbridge.errors import PermanentError
from meterbridge.observability import count, logger
from meterbridge.worker.invoices import InvoiceReader
from meterbridge.worker.policy import GuardPolicy
from meterbridge.worker.ports import HoldLedger, Stripe


class DraftHold:
    def __init__(
        self, stripe: Stripe, ledger: HoldLedger, invoices: InvoiceReader, policy: GuardPolicy
    ):
        self._stripe = stripe
        self._ledger = ledger
        self._invoices = invoices
        self._policy = policy

    def hold(
        self,
        invoice: Invoice,
        now: int,
        report_count: int | None = None,
        *,
        record: InvoiceRecord | None = None,
    ) -> HoldStatus | None:
        """With INVOICE_GUARD=hold, stop Stripe from finalizing the draft before reporting.

        `record`: the invoice's ledger record as the caller just read it (None: none yet).
        """
        if not self._policy.holds:
            return None
        context = {"invoice_id": invoice.id, "customer_id": invoice.customer_id}
        recorded = record.hold_status if record is not None else None
        if recorded is not None and not recorded.held:
            return recorded  # released (or never ours) before: a redelivery changes nothing
        if recorded is None and invoice.auto_advance is False:
            # Someone else finalizes this draft by hand; it is not ours to release.
            return self._not_held(invoice, "auto_advance was already false", now)
        invoice_now = self._invoices.now(invoice, now)
        deadline = invoice.created + self._policy.hold_limit_seconds
        if invoice_now >= deadline:
            return self._not_held(invoice, "the hold limit had passed when the event arrived", now)
        if not self._ledger.begin_hold(
            invoice.id,
            invoice.customer_id,
            hold_deadline=deadline,
            scheduled_finalization_at=invoice.automatically_finalizes_at,
            now=now,
        ):
            return HoldStatus.NOT_HELD
        try:
            held = self._stripe.hold_invoice(invoice.id)
            if held.get("status", "draft") != "draft":
                # Finalized before the hold (a cancellation's final invoice finalizes at once,
                # docs/stripe.md#S-CANCEL-3): auto_advance on an open invoice is its automatic
                # collection (#S-FIN-1), which must stay on.
                self._stripe.resume_invoice(invoice.id)
                raise PermanentError(f"invoice already {held.get('status')!r}: not held")
        except PermanentError as error:  # e.g. finalized meanwhile: report anyway
            count("HoldFailed")
            logger.warning("could not hold the draft", extra={**context, "reason": str(error)})
            self._ledger.update_invoice(
                invoice.id,
                invoice.customer_id,
                InvoiceChanges(hold_status=HoldStatus.NOT_HELD, hold_reason=str(error)[:500]),
                now,
            )
            return HoldStatus.NOT_HELD
        # The number of reports to expect, written with the hold: a check that runs before
        # reporting finished must not release the draft on the reports it can already see.
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            InvoiceChanges(
                hold_status=HoldStatus.HELD, guard_mode="hold", report_count=report_count
            ),
            now,
        )
        count("InvoicesHeld")
        logger.info("draft held until its usage is confirmed", extra=context)
        return HoldStatus.HELD

    def _not_held(self, invoice: Invoice, reason: str, now: int) -> HoldStatus:
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            InvoiceChanges(hold_status=HoldStatus.NOT_HELD, hold_reason=reason),
            now,
        )
        logger.info("draft not held", extra={"invoice_id": invoice.id, "reason": reason})
        return HoldStatus.NOT_HELD

    def release(
        self,
        invoice: Invoice,
        record: InvoiceRecord,
        invoice_now: int,
        now: int,
        status: HoldStatus,
    ) -> ReleaseAction:
        """Hand the draft back to Stripe.

        Before its original schedule (`scheduled_finalization_at`), auto_advance=true
        restores exactly what Stripe would have done: finalization inside the grace period,
        where late usage is documented to count, and the rest of the grace period left to
        anything else that adds to the invoice. After it, waiting longer only delays
        billing, so the draft is finalized now (POST /v1/invoices/{id}/finalize, which
        "updates the invoice to reflect the latest quantity"; that this also holds past the
        grace period is not documented by Stripe — see docs/guard.md).
        """
        scheduled = record.scheduled_finalization_at
        # Resume only with time to spare: re-enabling auto_advance after the schedule has
        # passed leaves the finalization time to Stripe (undocumented), so near or past it
        # the draft is finalized explicitly.
        spare = self._policy.confirmation_margin_seconds
        try:
            action = ReleaseAction.FINALIZE
            if scheduled is not None and invoice_now + spare < scheduled:
                resumed = self._stripe.resume_invoice(invoice.id)
                action = ReleaseAction.AUTO_ADVANCE
                due = resumed.get("automatically_finalizes_at")
                if due is None or int(due) <= self._invoices.now(invoice, invoice_now):
                    action = ReleaseAction.FINALIZE
            if action is ReleaseAction.FINALIZE:
                self._stripe.finalize_invoice(invoice.id)
        except PermanentError as error:
            current = self._stripe.invoice(invoice.id)
            if current.get("status") != "draft":
                action = ReleaseAction.NONE  # finalized by someone else meanwhile
            else:
                # Stripe refused to finalize (e.g. a tax or payment setting): never leave the
                # draft held on our account. auto_advance=true hands it back to Stripe's own
                # flow, which reports its finalization error to the account as usual.
                count("HoldReleaseFallback")
                logger.error(
                    "finalize refused: handing the held draft back to Stripe (auto_advance)",
                    extra={"invoice_id": invoice.id, "reason": str(error)[:500]},
                )
                self._stripe.resume_invoice(invoice.id)
                action = ReleaseAction.AUTO_ADVANCE
        self.mark_released(invoice, status, action, now)
        count("InvoicesReleased")
        logger.info(
            "held draft released",
            extra={"invoice_id": invoice.id, "release_action": action, "hold_status": status},
        )
        return action

    def mark_released(
        self, invoice: Invoice, status: HoldStatus, action: ReleaseAction, now: int
    ) -> None:
        self._ledger.update_invoice(
            invoice.id,
            invoice.customer_id,
            InvoiceChanges(hold_status=status, released_at=now, release_action=action),
            now,
        )
