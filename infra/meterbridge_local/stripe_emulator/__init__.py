"""Stripe billing emulator: a stateful Stripe-compatible server the real `stripe` SDK talks to.

Covers the slice meterbridge uses: customers, products, prices, meters, meter events (v1 and the
v2 session + stream), event summaries, adjustments, subscriptions, test clocks, invoices, events
(v1 snapshot and v2 thin) and signed webhook delivery with retries, plus fault injection.

    with StripeEmulator(EmulatorConfig(aggregation_lag_seconds=0.2)) as emu:
        client = stripe.StripeClient(
            api_key="sk_test_x", base_addresses={"api": emu.url, "meter_events": emu.url}
        )
        ...
        emu.wait_idle()  # clocks ready, usage aggregated, webhooks settled

Modules: `server` (HTTP, auth, idempotency, lifecycle), `api` (one function per endpoint),
`billing` (meter events, aggregation, subscriptions, clocks, invoices), `webhooks` (events and
delivery), `objects` (Stripe's object shapes), `store`, `wire` (form encoding), `faults`.
Change faults on a running emulator by mutating `emu.config` fields or `emu.set_faults(...)`.
"""

from .config import EmulatorConfig
from .server import StripeEmulator

__all__ = ["EmulatorConfig", "StripeEmulator"]
