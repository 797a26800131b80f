"""Stripe secrets: Secrets Manager (cached by Powertools Parameters) or local environment.

Deployed, each function reads its own secret and has IAM access to no other: the webhook
the signing secrets (`STRIPE_WEBHOOK_SECRET_ARN`), the worker the API key
(`STRIPE_SECRET_ARN`). One secret holding both still works for either (`STRIPE_SECRET_ARN`
alone), as before the split.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from meterbridge.adapters.aws_clients import aws_client
from meterbridge.errors import SettingsError, TransientError
from meterbridge.settings import StripeCredentialSettings, WebhookSettings, WorkerSettings


@dataclass(frozen=True)
class StripeSecrets:
    """The secret JSON: {"api_key": …, "webhook_secrets": [...], "usage_source_token": …}."""

    api_key: str | None = field(default=None, repr=False)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    usage_source_token: str | None = field(default=None, repr=False)


class SecretSource(Protocol):
    def stripe_secrets(self) -> StripeSecrets: ...


class EnvironmentSecrets:
    """Local runs: STRIPE_API_KEY (worker) and STRIPE_WEBHOOK_SECRET (webhook, comma-separated
    for rotation); each function's settings model carries only its own."""

    def __init__(self, settings: StripeCredentialSettings, usage_source_token: str | None = None):
        self._secrets = StripeSecrets(
            api_key=getattr(settings, "stripe_api_key", None),
            webhook_secrets=tuple(sorted(getattr(settings, "stripe_webhook_secret", ()))),
            usage_source_token=usage_source_token,
        )

    def stripe_secrets(self) -> StripeSecrets:
        return self._secrets


class SecretsManagerSecrets:
    """AWS: one JSON secret, fetched through Powertools Parameters and cached for `max_age`."""

    def __init__(self, secret_arn: str, max_age_seconds: int = 300):
        from aws_lambda_powertools.utilities import parameters  # local runs never pay this

        self._arn = secret_arn
        self._max_age = max_age_seconds
        self._errors = (parameters.exceptions.GetParameterError,)
        # On the container's shared session: Parameters' own would load botocore's data twice.
        self._provider = parameters.SecretsProvider(boto3_client=aws_client("secretsmanager"))

    def stripe_secrets(self) -> StripeSecrets:
        try:
            raw: Any = self._provider.get(self._arn, max_age=self._max_age)
        except self._errors as exc:
            raise TransientError(f"cannot read secret {self._arn}: {exc}") from exc
        if not isinstance(raw, str):
            try:
                raw = raw.decode()  # SecretBinary
            except UnicodeDecodeError:
                raise SettingsError(f"the secret {self._arn} is not UTF-8 JSON") from None
        return parse_secret_json(raw)


def parse_secret_json(text: str) -> StripeSecrets:
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise SettingsError("the Stripe secret is not JSON") from None
    if not isinstance(document, dict):
        raise SettingsError("the Stripe secret must be a JSON object")
    secrets = document.get("webhook_secrets", [])
    if isinstance(secrets, str):
        secrets = [secrets]
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise SettingsError("webhook_secrets in the Stripe secret must be a list of strings")
    return StripeSecrets(
        api_key=document.get("api_key"),
        webhook_secrets=tuple(secrets),
        usage_source_token=document.get("usage_source_token"),
    )


def secret_source(settings: StripeCredentialSettings) -> SecretSource:
    """The API key's source (the worker's): STRIPE_SECRET_ARN, else the environment."""
    if settings.stripe_secret_arn:
        return SecretsManagerSecrets(settings.stripe_secret_arn, settings.secret_max_age_seconds)
    return EnvironmentSecrets(settings)


def webhook_secret_source(settings: WebhookSettings) -> SecretSource:
    """The signing secrets' source: the webhook's own secret (STRIPE_WEBHOOK_SECRET_ARN), else
    one secret for both (STRIPE_SECRET_ARN), else STRIPE_WEBHOOK_SECRET."""
    arn = settings.stripe_webhook_secret_arn or settings.stripe_secret_arn
    if arn:
        return SecretsManagerSecrets(arn, settings.secret_max_age_seconds)
    return EnvironmentSecrets(settings)


def worker_secrets(settings: WorkerSettings) -> StripeSecrets:
    """What the worker reads at cold start: the API key and usage_source_token from
    STRIPE_SECRET_ARN, or STRIPE_API_KEY and USAGE_SOURCE_TOKEN locally."""
    source = secret_source(settings)
    if isinstance(source, EnvironmentSecrets):
        source = EnvironmentSecrets(settings, usage_source_token=settings.usage_source_token)
    secrets = source.stripe_secrets()
    if not secrets.api_key:
        where = settings.stripe_secret_arn or "STRIPE_API_KEY"
        raise SettingsError(f"no Stripe api_key in {where}: the worker needs one")
    return secrets
