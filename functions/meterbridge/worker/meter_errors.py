"""Stripe's asynchronous verdicts on meter events it accepted with a 200.

A thin `v1.billing.meter.error_report_triggered` (or `…no_meter_found`) event lists error
types with sample errors; each sample names the failing request's idempotency key, which
meterbridge sets to the report identifier, so those reports are marked `failed`
(`rejected`) with Stripe's code.
"""

from meterbridge.observability import count, logger
from meterbridge.worker.ports import RejectionLedger, Stripe


class MeterErrors:
    def __init__(self, stripe: Stripe, ledger: RejectionLedger):
        self._stripe = stripe
        self._ledger = ledger

    def record(self, event_id: str, notification: str | None, now: int) -> int:
        """Mark the sampled failing reports `failed` with Stripe's code; answers how many.

        Only samples are listed: when the count exceeds them, the rest are found by
        reconciliation, and the log says so.
        """
        event = self._stripe.thin_event(notification, event_id)
        reason = ((event.get("data") or {}).get("reason")) or {}
        matched = sampled = 0
        for error_type in reason.get("error_types") or []:
            code = str(error_type.get("code") or "unknown")
            for sample in error_type.get("sample_errors") or []:
                sampled += 1
                identifier = str((sample.get("request") or {}).get("identifier") or "")
                if identifier and self._ledger.mark_rejected(
                    identifier,
                    code=code,
                    message=str(sample.get("error_message") or code),
                    event_id=event_id,
                    now=now,
                ):
                    matched += 1
                    count("ReportsRejected")
                    logger.error(
                        "Stripe rejected a report",
                        extra={"identifier": identifier, "stripe_error_code": code},
                    )
        total = int(reason.get("error_count") or sampled)
        count("MeterErrorReports")
        count("MeterEventErrors", total)
        if matched < total:
            logger.warning(
                "meter errors that match no ledger report (not ours, or beyond Stripe's samples)",
                extra={"stripe_event_id": event_id, "errors": total, "matched": matched},
            )
        return matched
