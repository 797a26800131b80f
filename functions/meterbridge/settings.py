"""Settings of each function: one pydantic model per function, validated at cold start.

Fields are read from environment variables named by their alias; a missing or invalid
variable raises SettingsError naming it, so a misconfigured deploy fails loudly on its
first invocation instead of mid-billing-run.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from meterbridge.domain.usage_limits import parse_usage_value_ceilings
from meterbridge.errors import SettingsError

DEFAULT_ACCEPTED_EVENT_TYPES = frozenset(
    {
        "invoice.created",
        "invoice.finalized",
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    }
)


def _split_commas(value: Any) -> Any:
    """Environment variables carry lists as comma-separated text."""
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value


CommaSeparated = Annotated[frozenset[str], BeforeValidator(_split_commas)]

SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


def load_settings(model: type[SettingsModel], environ: Mapping[str, str]) -> SettingsModel:
    """Validate `environ` into `model`, turning pydantic's report into one readable error."""
    try:
        return model.model_validate(dict(environ))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = ".".join(str(part) for part in error["loc"]) or "settings"
            if error["type"] == "missing":
                problems.append(f"{variable}: missing required environment variable")
            else:
                problems.append(f"{variable}: {error['msg']}")
        raise SettingsError(f"invalid {model.__name__}: " + "; ".join(problems)) from None


class StripeCredentialSettings(BaseModel):
    """Where Stripe secrets come from: Secrets Manager in AWS, environment variables locally."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    stripe_secret_arn: str | None = Field(None, alias="STRIPE_SECRET_ARN")
    stripe_api_key: str | None = Field(None, alias="STRIPE_API_KEY", repr=False)
    stripe_webhook_secret: CommaSeparated = Field(
        frozenset(), alias="STRIPE_WEBHOOK_SECRET", repr=False
    )
    secret_max_age_seconds: int = Field(300, alias="SECRET_MAX_AGE_SECONDS", ge=0)


class WebhookSettings(StripeCredentialSettings):
    """The webhook function: verify, filter, enqueue."""

    queue_url: str = Field(alias="QUEUE_URL", min_length=1)
    accepted_event_types: CommaSeparated = Field(
        DEFAULT_ACCEPTED_EVENT_TYPES, alias="ACCEPTED_EVENT_TYPES", min_length=1
    )
    max_body_bytes: int = Field(1_048_576, alias="MAX_BODY_BYTES", gt=0)
    # The queue's MaximumMessageSize (template.yaml sets it); larger events travel as envelopes.
    queue_max_message_bytes: int = Field(262_144, alias="QUEUE_MAX_MESSAGE_BYTES", ge=1024)
    signature_tolerance_seconds: int = Field(300, alias="SIGNATURE_TOLERANCE_SECONDS", gt=0)

    @model_validator(mode="after")
    def _needs_a_webhook_secret_source(self) -> "WebhookSettings":
        if not self.stripe_secret_arn and not self.stripe_webhook_secret:
            raise ValueError(
                "set STRIPE_SECRET_ARN (Secrets Manager) or STRIPE_WEBHOOK_SECRET (local runs)"
            )
        return self


class WorkerSettings(StripeCredentialSettings):
    """The worker function: invoice.created → usage → meter events, recorded in the ledger."""

    ledger_table: str = Field(alias="LEDGER_TABLE", min_length=1)
    queue_url: str | None = Field(None, alias="QUEUE_URL")  # for visibility back-off
    usage_source: str = Field(alias="USAGE_SOURCE", min_length=1)
    usage_source_token: str | None = Field(None, alias="USAGE_SOURCE_TOKEN", repr=False)
    usage_source_timeout_seconds: float = Field(5.0, alias="USAGE_SOURCE_TIMEOUT_SECONDS", gt=0)
    # A larger answer fails the report permanently, read without holding it in memory.
    usage_source_max_answer_bytes: int = Field(
        65_536, alias="USAGE_SOURCE_MAX_ANSWER_BYTES", ge=1024
    )
    # Usage values above it are refused (docs/configuration.md): `1e12` for every meter, or
    # `api_requests=1e9,*=1e12` per meter event name. The default is the largest integer
    # Stripe's 15 significant digits can carry; empty: no ceiling.
    usage_value_ceiling: str = Field("1e15", alias="USAGE_VALUE_CEILING")
    allow_negative_usage: bool = Field(False, alias="ALLOW_NEGATIVE_USAGE")
    tenant_metadata_key: str | None = Field(None, alias="TENANT_METADATA_KEY")
    # Empty: every draft with a metered line, but domain.eligibility's excluded reasons.
    billing_reasons: CommaSeparated = Field(frozenset(), alias="BILLING_REASONS")
    meter_event_names: CommaSeparated = Field(frozenset(), alias="METER_EVENT_NAMES")
    report_zero_usage: bool = Field(True, alias="REPORT_ZERO_USAGE")
    grace_period_seconds: int = Field(3600, alias="GRACE_PERIOD_SECONDS", ge=0, le=259_200)
    meter_event_api: Literal["v1", "v2"] = Field("v1", alias="METER_EVENT_API")
    stripe_api_base: str | None = Field(None, alias="STRIPE_API_BASE")
    stripe_timeout_seconds: float = Field(10.0, alias="STRIPE_TIMEOUT_SECONDS", gt=0)
    stripe_max_network_retries: int = Field(2, alias="STRIPE_MAX_NETWORK_RETRIES", ge=0, le=10)
    stripe_rate_limit_retries: int = Field(3, alias="STRIPE_RATE_LIMIT_RETRIES", ge=0, le=10)
    # Up to 128: with METER_EVENT_API=v2 a stream request carries what the threads hold (≤ 100).
    batch_concurrency: int = Field(16, alias="BATCH_CONCURRENCY", ge=1, le=128)
    # Meter-event requests per second a container starts at; the limiter adapts on 429.
    meter_event_rate: float = Field(100.0, alias="METER_EVENT_RATE", gt=0)
    # v2: how long a ready event waits for others to share its stream request.
    stream_linger_seconds: float = Field(0.05, alias="STREAM_LINGER_SECONDS", ge=0, le=5)
    # Stripe retries webhooks for up to 3 days; remember event ids at least that long.
    event_memory_seconds: int = Field(4 * 86_400, alias="EVENT_MEMORY_SECONDS", ge=3 * 86_400)
    report_lease_seconds: int = Field(120, alias="REPORT_LEASE_SECONDS", gt=0)
    retry_backoff_base_seconds: int = Field(30, alias="RETRY_BACKOFF_BASE_SECONDS", ge=0)
    retry_backoff_max_seconds: int = Field(900, alias="RETRY_BACKOFF_MAX_SECONDS", ge=0, le=43_200)
    # Invoice guard (README, "Invoice guard"; docs/guard.md).
    invoice_guard: Literal["off", "confirm", "hold"] = Field("confirm", alias="INVOICE_GUARD")
    # Stripe waits at most 72 h for webhooks and allows at most a 72 h grace period.
    hold_limit_seconds: int = Field(86_400, alias="HOLD_LIMIT_SECONDS", gt=0, lt=259_200)
    confirmation_margin_seconds: int = Field(900, alias="CONFIRMATION_MARGIN_SECONDS", ge=0)
    confirm_delay_seconds: int = Field(60, alias="CONFIRM_DELAY_SECONDS", ge=0, le=900)
    confirm_max_delay_seconds: int = Field(900, alias="CONFIRM_MAX_DELAY_SECONDS", ge=0, le=900)
    confirm_max_checks: int = Field(200, alias="CONFIRM_MAX_CHECKS", ge=1)

    @field_validator("tenant_metadata_key", "stripe_api_base", "queue_url", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        """SAM passes unset parameters as empty strings."""
        return None if value == "" else value

    @field_validator("usage_value_ceiling")
    @classmethod
    def _ceilings_parse(cls, value: str) -> str:
        parse_usage_value_ceilings(value)  # its ValueError names the part that is wrong
        return value

    @field_validator("meter_event_api", "invoice_guard", mode="before")
    @classmethod
    def _api_in_lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs_an_api_key_source(self) -> "WorkerSettings":
        if not self.stripe_secret_arn and not self.stripe_api_key:
            raise ValueError(
                "set STRIPE_SECRET_ARN (Secrets Manager) or STRIPE_API_KEY (local runs)"
            )
        return self
