"""What runs around the Lambda code: the local stack, the Stripe billing emulator, the CLI."""
