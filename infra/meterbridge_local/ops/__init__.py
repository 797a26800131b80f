"""Operator commands: dead-letter replay, ledger status, re-reporting, and the Stripe check.

Each module holds one job's logic and returns plain results; `commands` wires them to the
`meterbridge` CLI and `render` turns results into rich tables. Everything talks to AWS
through boto3 (AWS_ENDPOINT_URL points it at the local stack) and to Stripe through the
real SDK (STRIPE_API_BASE points it at the emulator).
"""
