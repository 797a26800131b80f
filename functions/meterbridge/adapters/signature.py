"""Stripe-Signature verification with the stripe SDK, over any of the configured secrets."""

from typing import Protocol

from stripe import SignatureVerificationError, WebhookSignature

from meterbridge.adapters.secrets import SecretSource
from meterbridge.errors import SettingsError


class InvalidSignature(Exception):
    """Missing, malformed, tampered, stale or signed with a secret we do not hold."""


class SignatureVerifier(Protocol):
    def verify(self, payload: bytes, header: str | None) -> None: ...


class StripeSignatureVerifier:
    """Accepts a body if any held secret matches any v1 signature (secret rotation: Stripe
    signs with both the old and the new secret for up to 24 h)."""

    def __init__(self, secrets: SecretSource, tolerance_seconds: int = 300):
        self._secrets = secrets
        self._tolerance = tolerance_seconds

    def verify(self, payload: bytes, header: str | None) -> None:
        if not header:
            raise InvalidSignature("no Stripe-Signature header")
        if not header.isascii():
            # Stripe's header is ASCII. The SDK compares signatures with hmac.compare_digest,
            # which raises TypeError for non-ASCII text ("t=1,v1=\xe9"): the sender's fault,
            # so a 400 and a SignatureFailures count, never a 500.
            raise InvalidSignature("Stripe-Signature is not ASCII")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("body is not UTF-8") from None
        webhook_secrets = self._secrets.stripe_secrets().webhook_secrets
        if not webhook_secrets:
            # Our misconfiguration, not Stripe's fault: fail loudly (5xx) so Stripe retries.
            raise SettingsError(
                "no webhook secret configured: set webhook_secrets in the webhook's secret"
                " (STRIPE_WEBHOOK_SECRET_ARN, or STRIPE_SECRET_ARN when one secret serves both)"
                " or STRIPE_WEBHOOK_SECRET"
            )
        last_error = "no secret matched"
        for secret in webhook_secrets:
            try:
                WebhookSignature.verify_header(text, header, secret, self._tolerance)
                return
            except SignatureVerificationError as exc:
                last_error = str(exc)
            except (TypeError, ValueError):
                # Whatever else the SDK's parser trips over in a header anyone can send is a
                # bad signature too (the secret is ours and checked above).
                last_error = "malformed Stripe-Signature"
        raise InvalidSignature(last_error)
