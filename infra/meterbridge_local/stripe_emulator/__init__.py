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

It follows Stripe's documented rules, not meterbridge's code: each rule is commented with its
line in docs/stripe.md (`S-…` ids), which names the source and says what is undocumented.

Modules: `server` (HTTP, auth, saved idempotent answers, control routes, lifecycle), `api`
(one function per endpoint), `metering` (meter events, aggregation, error reports), `billing`
(subscriptions, changes, cancellations, thresholds, test clocks), `invoicing` (invoices,
lines, invoice items, previews), `webhooks` (events and delivery), `versions` (rendering per
API version), `contract` (opt-in OpenAPI checks), `objects` (Stripe's object shapes),
`store`, `wire` (form encoding), `faults`. Change faults on a running emulator by mutating
`emu.config` fields, `emu.set_faults(...)`, `emu.fail_next(...)` or the `/_emulator/faults`
routes; turn on contract mode with `emu.enable_contract(spec)` or `contract_spec`.
"""

from .config import EmulatorConfig
from .server import StripeEmulator

__all__ = ["EmulatorConfig", "StripeEmulator"]
