"""Emulator tests use the real stripe SDK; webhooks land on a loopback sink."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator
from tests.support.stripe_objects import new_meter, new_metered_price

DAY = 86400


@dataclass
class Received:
    body: bytes
    signature: str


@dataclass
class WebhookSink:
    """A loopback endpoint that records deliveries; `fail_first` answers 500 that many times."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_first: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.received]


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    state = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.received.append(Received(body, self.headers["Stripe-Signature"]))
                failing = state.fail_first > 0
                state.fail_first -= 1 if failing else 0
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
    yield state
    server.shutdown()
    server.server_close()


EmulatorFactory = Callable[..., StripeEmulator]


@pytest.fixture
def make_emulator() -> Iterator[EmulatorFactory]:
    started: list[StripeEmulator] = []

    def make(**config: Any) -> StripeEmulator:
        config.setdefault("webhook_retry_delays", (0.05, 0.05, 0.05))
        emulator = StripeEmulator(EmulatorConfig(**config)).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make_emulator: EmulatorFactory) -> StripeEmulator:
    return make_emulator()


def client_for(emulator: StripeEmulator, **options: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key="sk_test_emulator",
        base_addresses={"api": emulator.url, "meter_events": emulator.url},
        **options,
    )


@pytest.fixture
def client(emu: StripeEmulator) -> stripe.StripeClient:
    return client_for(emu)


def minute_floor(epoch: float) -> int:
    return int(epoch) - int(epoch) % 60


@dataclass
class MeteredPlan:
    """A metered monthly price on a meter, a test-clock customer and the clock's start."""

    meter: Any
    price: Any
    clock: Any
    customer: Any
    start: int


def metered_plan(
    client: stripe.StripeClient,
    *,
    formula: str = "sum",
    unit_amount: int = 5,
    days_ago: int = 32,
) -> MeteredPlan:
    """Clock starts ~32 days back so a month's timestamps stay inside Stripe's 35-day window."""
    start = minute_floor(time.time() - days_ago * DAY)
    event_name = f"api_calls_{start}_{time.monotonic_ns()}"
    meter = new_meter(client, event_name=event_name, formula=formula)
    price = new_metered_price(client, meter.id, unit_amount=unit_amount)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    customer = client.v1.customers.create({"name": "Acme", "test_clock": clock.id})
    return MeteredPlan(meter, price, clock, customer, start)
