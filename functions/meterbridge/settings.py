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
        # A metered item removed, its price switched, the subscription cancelled mid-period:
        # Stripe bills the usage at that moment (worker/subscription_changes.py).
        "customer.subscription.updated",
        "customer.subscription.deleted",
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


class SettingsGroup(BaseModel):
    """A group of settings read from environment variables; the models below combine them."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class StripeCredentialSettings(SettingsGroup):
    """Where Stripe secrets come from: Secrets Manager in AWS, environment variables locally.

    Each function's model adds only the variables it reads: the worker the API key, the
    webhook the signing secrets (README, "Security": neither can read the other's).
    """

    stripe_secret_arn: str | None = Field(
        None,
        alias="STRIPE_SECRET_ARN",
        description=(
            'Secrets Manager secret (AWS) holding the Stripe API key: JSON `{"api_key":'
            ' "rk_…", "usage_source_token": "…"}` (`usage_source_token` optional).'
            " The webhook reads its `webhook_secrets` from here only when"
            " `STRIPE_WEBHOOK_SECRET_ARN` is unset (one secret for both functions, the layout"
            " before the split)."
        ),
    )
    secret_max_age_seconds: int = Field(
        300,
        alias="SECRET_MAX_AGE_SECONDS",
        ge=0,
        description=(
            "How long a secret read from Secrets Manager is cached before it is read again"
            " (webhook secret rotation; the worker reads its key once per cold start)."
        ),
    )


class WebhookSettings(StripeCredentialSettings):
    """The webhook function: verify, filter, enqueue."""

    stripe_webhook_secret_arn: str | None = Field(
        None,
        alias="STRIPE_WEBHOOK_SECRET_ARN",
        description=(
            "Secrets Manager secret (AWS) holding only the webhook signing secrets: JSON"
            ' `{"webhook_secrets": ["whsec_…"]}`, several while a secret is rolled (any'
            " one verifies). The webhook's role can read this secret and no other. One of this,"
            " `STRIPE_SECRET_ARN` or `STRIPE_WEBHOOK_SECRET` is required."
        ),
    )
    stripe_webhook_secret: CommaSeparated = Field(
        frozenset(),
        alias="STRIPE_WEBHOOK_SECRET",
        repr=False,
        description="Signing secret(s) for local runs, comma-separated while rolling a secret.",
    )
    queue_url: str = Field(
        alias="QUEUE_URL",
        min_length=1,
        description="The event queue accepted events are sent to.",
    )
    accepted_event_types: CommaSeparated = Field(
        DEFAULT_ACCEPTED_EVENT_TYPES,
        alias="ACCEPTED_EVENT_TYPES",
        min_length=1,
        description=(
            "Comma-separated Stripe event types that are queued; others get 200"
            ' `{"status": "ignored"}`.'
        ),
    )
    max_body_bytes: int = Field(
        1_048_576,
        alias="MAX_BODY_BYTES",
        gt=0,
        description="Larger bodies get 413 before any verification.",
    )
    # The queue's MaximumMessageSize (template.yaml sets it); larger events are envelopes.
    queue_max_message_bytes: int = Field(
        262_144,
        alias="QUEUE_MAX_MESSAGE_BYTES",
        ge=1024,
        description=(
            "The queue's `MaximumMessageSize`; larger events are queued as their envelope (id,"
            " type, object id) and fetched from Stripe by the worker."
        ),
    )
    signature_tolerance_seconds: int = Field(
        300,
        alias="SIGNATURE_TOLERANCE_SECONDS",
        gt=0,
        description="Oldest accepted `Stripe-Signature` timestamp, in seconds (Stripe's default).",
    )

    @model_validator(mode="after")
    def _needs_a_webhook_secret_source(self) -> "WebhookSettings":
        if not (
            self.stripe_webhook_secret_arn or self.stripe_secret_arn or self.stripe_webhook_secret
        ):
            raise ValueError(
                "set STRIPE_WEBHOOK_SECRET_ARN (Secrets Manager: the webhook's own secret),"
                " STRIPE_SECRET_ARN (one secret for both functions) or STRIPE_WEBHOOK_SECRET"
                " (local runs)"
            )
        return self


class StripeCallSettings(StripeCredentialSettings):
    """How the worker calls Stripe: the key, the meter-event API, timeouts, retries and pace."""

    stripe_api_key: str | None = Field(
        None,
        alias="STRIPE_API_KEY",
        repr=False,
        description=(
            "Stripe key for local runs (`sk_test_…` or a restricted `rk_test_…`). One of this or"
            " `STRIPE_SECRET_ARN` is required."
        ),
    )
    meter_event_api: Literal["v1", "v2"] = Field(
        "v1",
        alias="METER_EVENT_API",
        description=(
            "`v1`: one `POST /v1/billing/meter_events` per report (Stripe answers duplicates"
            " synchronously). `v2`: the meter event stream — a session token (15 min, cached)"
            " and `POST /v2/billing/meter_event_stream` with up to 100 ready reports per request;"
            " validation is asynchronous: errors arrive as thin meter error events naming the"
            " request, not the event; the ledger records which reports each request carried and"
            " marks them `suspect` until a confirmation check proves them."
        ),
    )
    stripe_api_base: str | None = Field(
        None,
        alias="STRIPE_API_BASE",
        description="Base URL for both the `api` and `meter_events` hosts (the local emulator).",
    )
    stripe_timeout_seconds: float = Field(
        10.0,
        alias="STRIPE_TIMEOUT_SECONDS",
        gt=0,
        description=(
            "Connect and read timeout of each Stripe request (the SDK's default of 80 s exceeds"
            " a Lambda's budget); part of the no-start margin above."
        ),
    )
    stripe_max_network_retries: int = Field(
        2,
        alias="STRIPE_MAX_NETWORK_RETRIES",
        ge=0,
        le=10,
        description="SDK retries for connection errors, 409 and 5xx (same idempotency key).",
    )
    stripe_rate_limit_retries: int = Field(
        3,
        alias="STRIPE_RATE_LIMIT_RETRIES",
        ge=0,
        le=10,
        description=(
            "meterbridge's own retries on 429 (the SDK does not retry 429): meter-event calls"
            " wait for the limiter's next slot, other calls back off with jitter from 0.5 s."
        ),
    )
    # Meter-event requests per second a container starts at; the limiter adapts on 429.
    meter_event_rate: float = Field(
        100.0,
        alias="METER_EVENT_RATE",
        gt=0,
        description=(
            "Meter-event requests per second each container starts at. A process-wide limiter"
            " spaces meter-event requests (v1 events, v2 stream requests); a 429 cuts its pace"
            " to 0.8 x what Stripe accepted in the last second, it returns to 95 % of that within"
            " about a second and then probes +2 %/s. Set near your account's limit divided by"
            " the expected concurrent containers."
        ),
    )
    # v2: how long a ready event waits for others to share its stream request.
    stream_linger_seconds: float = Field(
        0.05,
        alias="STREAM_LINGER_SECONDS",
        ge=0,
        le=5,
        description=(
            "v2 only: how long a ready report waits for others to share its stream request (a"
            " request also leaves as soon as 100 are waiting)."
        ),
    )


class QueueAndLedgerSettings(SettingsGroup):
    """Where the worker keeps its state and how it retries: the ledger, the queues, back-off."""

    ledger_table: str = Field(
        alias="LEDGER_TABLE",
        min_length=1,
        description="DynamoDB ledger table (schema in `functions/meterbridge/adapters/ledger.py`).",
    )
    queue_url: str | None = Field(
        None,
        alias="QUEUE_URL",
        description=(
            "The event queue; needed to push a failed message's retry out (visibility back-off)"
            " and for the invoice guard's delayed checks. Unset = SQS's own visibility timeout."
        ),
    )
    dead_letter_queue_url: str | None = Field(
        None,
        alias="DEAD_LETTER_QUEUE_URL",
        description=(
            "The event queue's dead-letter queue: a permanent failure goes there at once, a"
            " transient one once its retries run out (`RETRY_WINDOW_SECONDS`, or shortly before"
            " the invoice finalizes). Unset: failed messages wait for the queue's"
            " maxReceiveCount."
        ),
    )
    retry_window_seconds: int = Field(
        2700,
        alias="RETRY_WINDOW_SECONDS",
        ge=600,
        description=(
            "How long a transient failure is retried (visibility back-off) when no invoice"
            " finalization time applies (other events, test-clock invoices), from the first"
            " delivery; then dead-lettered and alarmed."
        ),
    )
    retry_deadline_margin_seconds: int = Field(
        300,
        alias="RETRY_DEADLINE_MARGIN_SECONDS",
        ge=0,
        description=(
            "An invoice.created that still fails transiently this close to its invoice's"
            " finalization time is dead-lettered and alarmed (its reports would be late)."
        ),
    )
    # Up to 128: with METER_EVENT_API=v2 a stream request carries what the threads hold (≤ 100).
    batch_concurrency: int = Field(
        16,
        alias="BATCH_CONCURRENCY",
        ge=1,
        le=128,
        description=(
            "Records of one SQS batch processed in parallel (threads, one pool per container)."
            " Also the size of the Stripe HTTP connection pool (and twice that for DynamoDB). For"
            " v2 streams of 100 events per request, set it to 100 or more."
        ),
    )
    # Stripe retries webhooks for up to 3 days; remember event ids at least that long.
    event_memory_seconds: int = Field(
        4 * 86_400,
        alias="EVENT_MEMORY_SECONDS",
        ge=3 * 86_400,
        description=(
            "How long processed Stripe event ids are remembered (at least Stripe's 3-day retry"
            " window). `invoice.created` ids live on their invoice's ledger item instead, added"
            " only with a final outcome."
        ),
    )
    report_lease_seconds: int = Field(
        120,
        alias="REPORT_LEASE_SECONDS",
        gt=0,
        description=(
            "How long a claimed report stays reserved for one worker; a crashed worker's report"
            " is taken over after it. Keep above `STRIPE_TIMEOUT_SECONDS` x"
            " (`STRIPE_MAX_NETWORK_RETRIES` + 1)."
        ),
    )
    retry_backoff_base_seconds: int = Field(
        30,
        alias="RETRY_BACKOFF_BASE_SECONDS",
        ge=0,
        description="Visibility back-off after a transient failure: base x 2^(attempt-1) …",
    )
    retry_backoff_max_seconds: int = Field(
        900,
        alias="RETRY_BACKOFF_MAX_SECONDS",
        ge=0,
        le=43_200,
        description=(
            "… capped here (and at SQS's 12 h). Permanent failures are retried after the base"
            " delay until `maxReceiveCount` moves them to the DLQ."
        ),
    )


class UsageSourceSettings(SettingsGroup):
    """Which invoices are reported and where their usage comes from."""

    usage_source: str = Field(
        alias="USAGE_SOURCE",
        min_length=1,
        description=(
            '`https://…`/`http://…` (POST JSON `{"customer","tenant","meter","start",'
            '"end"}` → `{"value":"<decimal>"}`), `dynamodb://TABLE` (items `customer` S'
            " hash, `usage_key` S range = `<meter event name>#<unix seconds, 10 digits>#<unique>`,"
            " `value` N), or `python://module:function` (called with a `UsageQuery`). `meter` is"
            " the meter's event name; `[start, end)` the line's service period. The template sets"
            " `dynamodb://TABLE` from `UsageSource=dynamodb://` and `UsageTableName=TABLE`, the"
            " same name it grants read access to."
        ),
    )
    usage_source_token: str | None = Field(
        None,
        alias="USAGE_SOURCE_TOKEN",
        repr=False,
        description=(
            "Bearer token for an HTTP usage source, local runs (in AWS: `usage_source_token` in"
            " the `STRIPE_SECRET_ARN` secret)."
        ),
    )
    usage_source_timeout_seconds: float = Field(
        5.0,
        alias="USAGE_SOURCE_TIMEOUT_SECONDS",
        gt=0,
        description=(
            "HTTP usage source timeout; a timeout is a transient failure (retried). With"
            " `STRIPE_TIMEOUT_SECONDS` x (1 + `STRIPE_MAX_NETWORK_RETRIES`) + 2 s it is also the"
            " margin before the invocation's timeout in which no report starts (left-over"
            " reports fail transiently and are retried)."
        ),
    )
    usage_source_max_answer_bytes: int = Field(
        65_536,
        alias="USAGE_SOURCE_MAX_ANSWER_BYTES",
        ge=1024,
        description=(
            "Largest usage-source answer read; a larger one fails the report permanently"
            " (read in pieces, never held whole in memory)."
        ),
    )
    usage_value_ceiling: str = Field(
        "1e15",
        alias="USAGE_VALUE_CEILING",
        description=(
            "Usage values above it are refused (a permanent failure, `ReportsFailed`): `1e12`"
            " for every meter, or `api_requests=1e9,storage_gb=1e6,*=1e12` per meter event name"
            " (`*`: every other meter); empty: no ceiling. The default is the largest integer"
            " Stripe's 15 significant digits carry."
        ),
    )
    allow_negative_usage: bool = Field(
        False,
        alias="ALLOW_NEGATIVE_USAGE",
        description=(
            "Send negative usage values (Stripe takes them; a negative period total bills 0);"
            " `false` refuses them as implausible."
        ),
    )
    tenant_metadata_key: str | None = Field(
        None,
        alias="TENANT_METADATA_KEY",
        description=(
            "Customer metadata key whose value is passed to the usage source as `tenant`. When"
            " set, the customer is read once per invoice (a Stripe API call) and a customer"
            " without the key is a permanent failure (never a silent 0); unset, the worker never"
            " reads customers."
        ),
    )
    billing_reasons: CommaSeparated = Field(
        frozenset(),
        alias="BILLING_REASONS",
        description=(
            "Comma-separated invoice `billing_reason` values that get usage reports; empty:"
            " every draft with a line priced on a reported meter, except `subscription_create`,"
            ' `subscription_threshold` and `upcoming` (docs/guard.md, "Which invoices").'
        ),
    )
    meter_event_names: CommaSeparated = Field(
        frozenset(),
        alias="METER_EVENT_NAMES",
        description=(
            "Comma-separated meter event names meterbridge reports; empty reports every meter on"
            " the invoice's metered lines."
        ),
    )
    report_zero_usage: bool = Field(
        True,
        alias="REPORT_ZERO_USAGE",
        description=(
            "Send `0` for a period without usage (the invoice then shows 0); `false` records the"
            " report as skipped."
        ),
    )
    grace_period_seconds: int = Field(
        3600,
        alias="GRACE_PERIOD_SECONDS",
        ge=0,
        le=259_200,
        description=(
            "Your Stripe finalization grace period; the deadline for invoices without"
            " `automatically_finalizes_at`. Reports sent after the deadline are recorded `late`."
        ),
    )


class InvoiceGuardSettings(SettingsGroup):
    """The invoice guard (docs/guard.md): hold, confirmation and their timing."""

    invoice_guard: Literal["off", "confirm", "hold"] = Field(
        "confirm",
        alias="INVOICE_GUARD",
        description=(
            "`off` · `confirm` · `hold` ([docs/guard.md](guard.md)). `confirm`: delayed checks"
            " through the meter's event summaries, `ConfirmationMissing` near finalization."
            " `hold`: also `auto_advance=false` on the draft until its usage is confirmed. Needs"
            " `QUEUE_URL` (otherwise runs as `off`, with a warning). Reconciliation and meter"
            " error reports run in every mode."
        ),
    )
    # Stripe waits at most 72 h for webhooks and allows at most a 72 h grace period.
    hold_limit_seconds: int = Field(
        86_400,
        alias="HOLD_LIMIT_SECONDS",
        gt=0,
        lt=259_200,
        description=(
            "Longest hold (from the invoice's creation, on its clock), below Stripe's 72 h; at"
            " the limit the draft is released with `HoldLimitReached`."
        ),
    )
    confirmation_margin_seconds: int = Field(
        900,
        alias="CONFIRMATION_MARGIN_SECONDS",
        ge=0,
        description=(
            "Still unconfirmed this close to the draft's finalization: `ConfirmationMissing`."
        ),
    )
    confirm_delay_seconds: int = Field(
        60,
        alias="CONFIRM_DELAY_SECONDS",
        ge=0,
        le=900,
        description=(
            "First confirmation check after reporting (SQS `DelaySeconds`); later checks double"
            " it …"
        ),
    )
    confirm_max_delay_seconds: int = Field(
        900,
        alias="CONFIRM_MAX_DELAY_SECONDS",
        ge=0,
        le=900,
        description=(
            "… up to this (SQS allows at most 900), never past the margin or the hold limit."
        ),
    )
    confirm_max_checks: int = Field(
        200,
        alias="CONFIRM_MAX_CHECKS",
        ge=1,
        description=(
            "`confirm` stops checking after this many (`ConfirmationAbandoned`); a hold always"
            " ends at its limit."
        ),
    )


class ContinuousReportingSettings(SettingsGroup):
    """Continuous reporting (docs/continuous.md): usage swept into Stripe during the period."""

    continuous_reporting: Literal["off", "hourly", "daily", "true-up-only"] = Field(
        "off",
        alias="CONTINUOUS_REPORTING",
        description=(
            "`off` · `hourly` · `daily` · `true-up-only` ([docs/continuous.md](continuous.md))."
            " `hourly`/`daily`: the worker handles the schedule's sweeps, reporting each active"
            " metered item's usage during the period, and renewals send only what the period"
            " still lacks (the true-up). `true-up-only`: no sweeps, renewals still true up —"
            " the way to switch sweeps off without counting their usage twice. `off`: renewals"
            " report the whole period (sweeps are refused)."
        ),
    )
    sweep_settle_minutes: int = Field(
        10,
        alias="SWEEP_SETTLE_MINUTES",
        ge=0,
        le=59,
        description=(
            "A sweep reports up to this many minutes before its scheduled time, so usage still"
            " arriving at the usage source is not cut off (the schedule fires this many minutes"
            " past the hour: windows end on the hour)."
        ),
    )
    sweep_meter_event_rate: float = Field(
        180.0,
        alias="SWEEP_METER_EVENT_RATE",
        gt=0,
        description=(
            "Most meter events per second a container's sweeps send (a fixed pace, before the"
            " adaptive limiter every meter event shares). Keep it x `WorkerMaximumConcurrency`"
            " at or below 90 % of Stripe's meter-event limit: 180 x 5 = 900 of the live"
            " 1,000/s. Renewals are not held to it."
        ),
    )


class WorkerSettings(
    ContinuousReportingSettings,
    InvoiceGuardSettings,
    UsageSourceSettings,
    QueueAndLedgerSettings,
    StripeCallSettings,
):
    """The worker function: invoice.created → usage → meter events, recorded in the ledger."""

    @field_validator(
        "tenant_metadata_key",
        "stripe_api_base",
        "queue_url",
        "dead_letter_queue_url",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        """SAM passes unset parameters as empty strings."""
        return None if value == "" else value

    @field_validator("usage_value_ceiling")
    @classmethod
    def _ceilings_parse(cls, value: str) -> str:
        parse_usage_value_ceilings(value)  # its ValueError names the part that is wrong
        return value

    @field_validator("meter_event_api", "invoice_guard", "continuous_reporting", mode="before")
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
