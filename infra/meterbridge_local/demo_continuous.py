"""`meterbridge demo --continuous`: the same two months with continuous reporting on
(docs/continuous.md). Sweeps run during each month, as the hourly schedule would; after each
one, Stripe's upcoming-invoice preview (`POST /v1/invoices/create_preview`) shows the usage
so far growing, and at renewal the worker sends only what the period still lacks (the
true-up). The scheduled sweeps list live subscriptions only (docs/stripe.md#S-LIST-3): the
demo's test clock is swept by a message naming it, as an operator would send one.
"""

import json
from collections.abc import Sequence
from decimal import Decimal

import boto3

from meterbridge_local.demo import DemoCustomer, MeterbridgeFlow

# When the sweeps run, as fractions of each service period (the usage source holds half of
# a month's usage at its start, 30 % at its middle and the rest in its last second).
SWEEP_POINTS = (0.25, 0.6, 0.95)


class ContinuousFlow(MeterbridgeFlow):
    title = "meterbridge, continuous reporting (hourly sweeps)"
    parameters = {"ContinuousReporting": "hourly", "SweepSettleMinutes": "0"}

    def during_period(self, index: int) -> None:
        run = self.run
        start, end = run.subscribers[0].period(index - 1)
        for point in SWEEP_POINTS:
            at = start + int((end - start) * point)
            at -= at % 3600  # the hourly schedule's moment
            with run.waiting(f"month {index}: day {(at - start) // 86_400 + 1}: a sweep"):
                run.driver.advance(run.clock_id, at)
                self.settle()  # what the clock's advance made Stripe send
                self._sweep()
                self.settle()
            previews = ", ".join(
                f"{s.name} {_text(self._preview(s.subscription_id))}" for s in run.subscribers
            )
            run.step(f"month {index}: Stripe's invoice preview bills so far: {previews}")

    def on_renewal(self, index: int, customers: Sequence[DemoCustomer]) -> None:
        super().on_renewal(index, customers)
        from meterbridge.adapters.ledger import DynamoDbLedger
        from meterbridge.domain.invoices import ServicePeriod
        from meterbridge.domain.reports import report_identifier

        run, catalog = self.run, self.run.catalog
        assert catalog is not None
        client = boto3.client("dynamodb", endpoint_url=self.stack.aws_endpoint_url)
        ledger = DynamoDbLedger(self.stack.ledger_table_name, client)
        sent = []
        for subscriber in run.subscribers:
            start, end = subscriber.period(index - 1)
            period = ServicePeriod(start=start, end=end)
            identifier = report_identifier(subscriber.customer_id, catalog.meter_id, period)
            report = ledger.report(identifier)
            value = report.value if report is not None and report.value is not None else None
            sent.append(f"{subscriber.name} {'—' if value is None else _text(value)}")
        run.step(f"month {index}: the renewal sent only the rest (true-up): {', '.join(sent)}")

    def _sweep(self) -> None:
        body = json.dumps({"meterbridge_sweep": {"test_clock": self.run.clock_id}})
        sqs = boto3.client("sqs", endpoint_url=self.stack.aws_endpoint_url)
        sqs.send_message(QueueUrl=self.stack.event_queue_url, MessageBody=body)

    def _preview(self, subscription_id: str) -> Decimal:
        catalog = self.run.catalog
        assert catalog is not None
        preview = self.run.driver.client.v1.invoices.create_preview(
            {"subscription": subscription_id}
        )
        total = Decimal(0)
        for line in preview.lines.data:
            raw = line.to_dict()
            price = ((raw.get("pricing") or {}).get("price_details") or {}).get("price")
            if price == catalog.price_id:
                total += Decimal(str(raw.get("quantity_decimal") or raw.get("quantity") or 0))
        return total


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")
