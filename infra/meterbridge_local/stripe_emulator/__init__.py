"""Stripe billing emulator: a stateful Stripe-compatible server the real `stripe` SDK talks to.

Covers the slice meterbridge uses: customers, products, prices, meters, meter events (v1 and the
v2 stream), summaries, adjustments, subscriptions, test clocks, invoices, events and webhooks.
"""

from .config import EmulatorConfig
from .server import StripeEmulator

__all__ = ["EmulatorConfig", "StripeEmulator"]
