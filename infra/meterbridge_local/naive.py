"""THE ANTI-PATTERN. Do not copy this code: it is here to lose and double-count usage.

This is the naive integration from the problem meterbridge solves (README; the Stripe rules
are docs/stripe.md#S-AGG-3 and #S-GRACE-1): a webhook receiver that, on `invoice.created`,
computes the period's usage and sends one meter event with a random identifier (uuid4) and
`timestamp = period_start`, inline, before answering; no ledger, no check. The person
testing it advances the test clock past the grace period as soon as the webhook answered.

`meterbridge demo --naive` runs it on the same emulator and the same script as the real
demo, and shows what happens:
- a redelivered webhook (Stripe delivers at least once; here the demo delivers Globex's
  event twice, and Initech's first delivery times out while its usage query is slow, so
  Stripe retries it) sends a second meter event with a new random identifier: counted twice;
- the clock advanced right after the webhook answered finalizes the draft before Stripe
  has aggregated the event (asynchronous aggregation): the usage is missing.
"""

import json
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
import stripe

from meterbridge_local.demo import (
    DEMO_API_KEY,
    DemoCustomer,
    DemoRun,
    Flow,
    InvoiceCheck,
    deliver_again,
)


class NaiveWebhookReceiver:
    """ANTI-PATTERN: slow work before the 2xx, random identifiers, nothing remembered."""

    def __init__(self, stripe_api_base: str, usage_source: str, meter_event_name: str):
        self.client = stripe.StripeClient(
            DEMO_API_KEY,
            base_addresses={"api": stripe_api_base, "meter_events": stripe_api_base},
        )
        self.usage_source = usage_source
        self.meter_event_name = meter_event_name
        self.secret = ""
        self.sent: list[str] = []  # identifiers, for the demo's table
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="naive-webhook",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/webhook"

    def start(self) -> "NaiveWebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def __enter__(self) -> "NaiveWebhookReceiver":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def on_event(self, payload: bytes, signature: str) -> None:
        event = stripe.Webhook.construct_event(payload, signature, self.secret)
        if event.type != "invoice.created":
            return
        invoice = event.data.object
        if invoice["billing_reason"] != "subscription_cycle":
            return
        customer = self.client.v1.customers.retrieve(invoice["customer"])
        answer = requests.post(
            self.usage_source,
            data=json.dumps(
                {
                    "customer": customer.id,
                    "tenant": customer.to_dict().get("metadata", {}).get("tenant"),
                    "meter": self.meter_event_name,
                    "start": invoice["period_start"],
                    "end": invoice["period_end"],
                }
            ),
            timeout=10,
        )
        identifier = str(uuid.uuid4())  # ANTI-PATTERN: a retry gets a new identifier
        self.client.v1.billing.meter_events.create(
            {
                "event_name": self.meter_event_name,
                "payload": {"stripe_customer_id": customer.id, "value": answer.json()["value"]},
                "identifier": identifier,
                "timestamp": invoice["period_start"],
            }
        )
        with self._lock:
            self.sent.append(identifier)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    receiver.on_event(payload, self.headers.get("Stripe-Signature", ""))
                    status = 200
                except Exception:
                    traceback.print_exc()  # into the demo's log file
                    status = 500
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # Stripe stopped waiting long ago: it will deliver the event again

        return Handler


class NaiveFlow(Flow):
    """Drives the naive receiver the way the problem statement's developer did."""

    title = "naive integration (the anti-pattern)"
    failure_note = (
        "[yellow]This is expected[/]: the naive integration sends a meter event with a "
        "random identifier on every webhook delivery and lets the invoice finalize "
        "without waiting, so a redelivered webhook counts twice and usage sent just "
        "before finalization is missed. Exit status 1 is the point of this run; "
        "`meterbridge demo` runs the same months with meterbridge."
    )

    def __init__(self, run: DemoRun, resources: ExitStack):
        self.run = run
        self.receiver = resources.enter_context(
            NaiveWebhookReceiver(run.emulator.url, run.usage.url, "api_requests").start()
        )
        endpoint = run.driver.client.v1.webhook_endpoints.create(
            {"url": self.receiver.url, "enabled_events": ["invoice.created"]}
        )
        self.receiver.secret = endpoint.secret or ""
        run.step(
            f"[yellow]naive[/] webhook receiver at {self.receiver.url} (registered with Stripe): "
            "on invoice.created it sends one meter event, identifier uuid4(), "
            "timestamp = period start; no queue, no ledger"
        )

    def after_setup(self) -> None:
        self.run.emulator.wait_idle(timeout=30)

    def on_renewal(self, index: int, customers: Sequence[DemoCustomer]) -> None:
        run = self.run
        events = {}
        for customer, subscriber in zip(customers, run.subscribers, strict=True):
            event = run.driver.renewal_event(subscriber, index)
            events[event["id"]] = subscriber
            if customer.twist == "duplicate":
                status = deliver_again(self.receiver.url, event, self.receiver.secret)
                run.step(
                    f"month {index}: Stripe delivered {subscriber.name}'s invoice.created "
                    f"a second time (webhook answered {status})"
                )
        with run.waiting(f"month {index}: waiting until every invoice.created got its 2xx"):
            self._wait_for_answers(set(events))
        run.step(
            f"month {index}: [yellow]naive[/]: webhooks answered, so advance the clock right away"
        )

    def _wait_for_answers(self, event_ids: set[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = {
                attempt["event_id"]
                for attempt in self.run.emulator.webhook_deliveries()
                if attempt["status_code"] is not None and 200 <= attempt["status_code"] < 300
            }
            if event_ids <= answered:
                return
            time.sleep(0.01)
        raise TimeoutError("the naive receiver never answered 2xx")

    def settle(self) -> None:
        self.run.emulator.wait_idle(timeout=30)

    def annotate(self, checks: list[InvoiceCheck]) -> list[InvoiceCheck]:
        sent = set(self.receiver.sent)
        events = [e for e in self.run.emulator.meter_events() if e["identifier"] in sent]
        annotated = []
        for check in checks:
            start, end = check.period
            mine = [
                e
                for e in events
                if e["customer"] == check.subscriber.customer_id and start <= e["timestamp"] < end
            ]
            annotated.append(
                replace(
                    check,
                    identifiers=tuple(e["identifier"] for e in mine),
                    ledger_status="no ledger",
                )
            )
        return annotated
