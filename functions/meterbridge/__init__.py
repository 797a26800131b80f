"""meterbridge: usage on every Stripe invoice, exactly once, before it finalizes."""

__version__ = "0.1.0"
