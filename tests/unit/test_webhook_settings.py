"""Settings fail at cold start with a message naming the variable to fix."""

import pytest

from meterbridge.adapters.secrets import parse_secret_json
from meterbridge.errors import SettingsError
from meterbridge.settings import (
    DEFAULT_ACCEPTED_EVENT_TYPES,
    WebhookSettings,
    WorkerSettings,
    load_settings,
)


def test_missing_queue_url_is_named():
    with pytest.raises(SettingsError, match="QUEUE_URL: missing required environment variable"):
        load_settings(WebhookSettings, {"STRIPE_WEBHOOK_SECRET": "whsec_x"})


def test_a_webhook_secret_source_is_required():
    with pytest.raises(SettingsError, match=r"STRIPE_SECRET_ARN .* or STRIPE_WEBHOOK_SECRET"):
        load_settings(WebhookSettings, {"QUEUE_URL": "https://sqs/q"})


def test_invalid_number_is_named():
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        load_settings(
            WebhookSettings,
            {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": "whsec_x", "MAX_BODY_BYTES": "lots"},
        )


def test_defaults_and_comma_separated_lists():
    settings = load_settings(
        WebhookSettings,
        {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": " whsec_new , whsec_old ,"},
    )
    assert settings.stripe_webhook_secret == {"whsec_new", "whsec_old"}
    assert settings.accepted_event_types == DEFAULT_ACCEPTED_EVENT_TYPES
    assert settings.signature_tolerance_seconds == 300


def test_secrets_do_not_appear_in_the_settings_repr():
    settings = load_settings(
        WebhookSettings, {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": "whsec_s"}
    )
    assert "whsec_s" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"webhook_secrets": [1]}', "list of strings"),
    ],
)
def test_bad_secret_documents_are_explained(text: str, problem: str):
    with pytest.raises(SettingsError, match=problem):
        parse_secret_json(text)


def test_secret_document_with_a_single_webhook_secret_string():
    secrets = parse_secret_json('{"api_key": "sk_test_1", "webhook_secrets": "whsec_1"}')
    assert secrets.webhook_secrets == ("whsec_1",)
    assert secrets.api_key == "sk_test_1"


def test_meter_error_events_of_both_kinds_are_accepted_by_default():
    settings = load_settings(WebhookSettings, {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": "w"})
    assert {
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    } <= settings.accepted_event_types


def test_an_empty_accepted_type_list_is_refused():
    with pytest.raises(SettingsError, match="ACCEPTED_EVENT_TYPES"):
        load_settings(
            WebhookSettings,
            {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": "w", "ACCEPTED_EVENT_TYPES": " , "},
        )


def test_the_webhooks_own_secret_arn_is_a_secret_source():
    settings = load_settings(
        WebhookSettings,
        {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:…:secret:w"},
    )
    assert settings.stripe_webhook_secret_arn == "arn:aws:secretsmanager:…:secret:w"
    assert settings.stripe_secret_arn is None


def test_each_function_reads_only_its_own_stripe_variables():
    """The webhook has no field for the API key, the worker none for the signing secrets."""
    assert "STRIPE_API_KEY" not in {f.alias for f in WebhookSettings.model_fields.values()}
    assert "STRIPE_WEBHOOK_SECRET" not in {f.alias for f in WorkerSettings.model_fields.values()}
    assert "STRIPE_WEBHOOK_SECRET_ARN" not in {
        f.alias for f in WorkerSettings.model_fields.values()
    }
