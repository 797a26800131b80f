"""Stripe's asynchronous verdicts on meter events it accepted with a 200.

A thin `v1.billing.meter.error_report_triggered` (or `…no_meter_found`) event lists error
types with sample errors; each sample names the failing request's idempotency key
(docs/stripe.md#S-ERR-1, #S-ERR-2):
- a v1 meter event's key is `<report identifier>:a<attempt>`: that report is `failed`
  (`rejected`) with Stripe's code;
- a v2 stream request's key names up to 100 events without saying which failed: each report
  it carried (the ledger recorded them) is `suspect` until a confirmation check proves it.
"""

from meterbridge.adapters.meter_event_stream import STREAM_KEY_PREFIX
from meterbridge.adapters.stripe_gateway import identifier_of_request_key
from meterbridge.observability import count, logger
from meterbridge.worker.ports import RejectionLedger, Stripe


class MeterErrors:
    def __init__(self, stripe: Stripe, ledger: RejectionLedger):
        self._stripe = stripe
        self._ledger = ledger

    def record(self, event_id: str, notification: str | None, now: int) -> int:
        """Mark the reports behind the sampled failing requests; answers how many.

        Only samples are listed: when the count exceeds them, the rest are found by
        confirmation and reconciliation, and the log says so.
        """
        event = self._stripe.thin_event(notification, event_id)
        reason = ((event.get("data") or {}).get("reason")) or {}
        matched = sampled = 0
        for error_type in reason.get("error_types") or []:
            code = str(error_type.get("code") or "unknown")
            for sample in error_type.get("sample_errors") or []:
                sampled += 1
                key = str((sample.get("request") or {}).get("identifier") or "")
                message = str(sample.get("error_message") or code)
                if key.startswith(STREAM_KEY_PREFIX):
                    matched += self._suspect(key, code, message, event_id, now)
                elif key and self._ledger.mark_rejected(
                    identifier_of_request_key(key),
                    code=code,
                    message=message,
                    event_id=event_id,
                    now=now,
                ):
                    matched += 1
                    count("ReportsRejected")
                    logger.error(
                        "Stripe rejected a report",
                        extra={
                            "identifier": identifier_of_request_key(key),
                            "stripe_error_code": code,
                        },
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

    def _reject(self, key: str, code: str, message: str, event_id: str, now: int) -> bool:
        identifier = identifier_of_request_key(key)
        if not self._ledger.mark_rejected(
            identifier, code=code, message=message, event_id=event_id, now=now
        ):
            return False
        count("ReportsRejected")
        logger.error(
            "Stripe rejected a report", extra={"identifier": identifier, "stripe_error_code": code}
        )
        return True

    def _suspect(self, key: str, code: str, message: str, event_id: str, now: int) -> int:
        identifiers = self._ledger.stream_request(key)
        marked = 0
        for identifier in identifiers:
            if self._ledger.mark_suspect(
                identifier, code=code, message=message, event_id=event_id, now=now
            ):
                marked += 1
        count("ReportsSuspect", marked)
        logger.error(
            "Stripe rejected events of a meter event stream request: its reports are suspect"
            " until confirmed",
            extra={"stream_request": key, "stripe_error_code": code, "reports": marked},
        )
        return marked
