"""Settings of each function: one pydantic model per function, validated at cold start.

Fields are read from environment variables named by their alias; a missing or invalid
variable raises SettingsError naming it, so a misconfigured deploy fails loudly on its
first invocation instead of mid-billing-run.
"""

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from meterbridge.errors import SettingsError

DEFAULT_ACCEPTED_EVENT_TYPES = frozenset(
    {"invoice.created", "invoice.finalized", "v1.billing.meter.error_report_triggered"}
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
        DEFAULT_ACCEPTED_EVENT_TYPES, alias="ACCEPTED_EVENT_TYPES"
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
