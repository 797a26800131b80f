"""The deployed path: webhook secrets from Secrets Manager (moto), read through Powertools."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from meterbridge.adapters import aws_clients
from meterbridge.adapters.secrets import webhook_secret_source, worker_secrets
from meterbridge.errors import SettingsError
from meterbridge.handlers import webhook
from meterbridge.handlers.worker import build_worker
from meterbridge.settings import WebhookSettings, WorkerSettings, load_settings
from meterbridge_local.aws import MotoServer
from tests.integration.test_webhook import INVOICE, call, http_v2, queued
from tests.support.stripe_events import encode, sign, snapshot_event


def test_secrets_manager_secret_with_two_webhook_secrets(aws: MotoServer):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    secret_arn = boto3.client("secretsmanager").create_secret(
        Name=f"meterbridge/stripe-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps(
            {"api_key": "sk_test_x", "webhook_secrets": ["whsec_old", "whsec_new"]}
        ),
    )["ARN"]
    intake = webhook.build_intake({"QUEUE_URL": queue_url, "STRIPE_SECRET_ARN": secret_arn})

    for secret in ("whsec_old", "whsec_new", "whsec_unknown"):
        body = encode(snapshot_event("invoice.created", INVOICE))
        call(intake, http_v2(body, sign(body, secret)))

    assert len(queued(queue_url)) == 2


def test_unreadable_secret_answers_503_so_stripe_retries(aws: MotoServer):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf"
    intake = webhook.build_intake({"QUEUE_URL": queue_url, "STRIPE_SECRET_ARN": missing})
    body = encode(snapshot_event("invoice.created", INVOICE))

    response = call(intake, http_v2(body, sign(body, "whsec_new")))

    assert response["statusCode"] == 503
    assert queued(queue_url) == []


def test_secret_without_webhook_secrets_answers_503_and_says_why(aws: MotoServer):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    secret_arn = boto3.client("secretsmanager").create_secret(
        Name=f"meterbridge/stripe-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"api_key": "sk_test_x", "webhook_secret": "whsec_typo"}),
    )["ARN"]
    intake = webhook.build_intake({"QUEUE_URL": queue_url, "STRIPE_SECRET_ARN": secret_arn})
    body = encode(snapshot_event("invoice.created", INVOICE))

    reply = intake.receive(body, sign(body, "whsec_typo"))

    assert reply.status == 503, "our misconfiguration must not look like Stripe's bad signature"
    assert reply.detail is not None
    assert "webhook_secrets" in reply.detail
    assert "whsec_typo" not in json.dumps(reply.body)
    assert queued(queue_url) == []


# --- One secret per function (issue 13, item 9): the webhook never holds the API key --------


@contextmanager
def secrets_read() -> Iterator[list[str]]:
    """SecretIds the functions ask Secrets Manager for, seen on their shared botocore
    session (every client they build comes from it, adapters/aws_clients.py)."""
    seen: list[str] = []

    def record(**kwargs: Any) -> None:
        seen.append(kwargs["params"]["SecretId"])

    session = aws_clients._session()
    event = "provide-client-params.secrets-manager.GetSecretValue"
    session.register(event, record)
    try:
        yield seen
    finally:
        session.unregister(event, record)


def _secret(document: dict[str, Any]) -> str:
    return str(
        boto3.client("secretsmanager").create_secret(
            Name=f"meterbridge/{uuid.uuid4().hex[:8]}", SecretString=json.dumps(document)
        )["ARN"]
    )


def test_the_webhook_reads_only_its_own_secret(aws: MotoServer):
    """As deployed: STRIPE_WEBHOOK_SECRET_ARN names a secret with only the signing secrets.
    Even with STRIPE_SECRET_ARN also set, the webhook never asks for the API key's secret."""
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    api_key_secret = _secret({"api_key": "rk_test_x", "webhook_secrets": ["whsec_stale_copy"]})
    webhook_secret = _secret({"webhook_secrets": ["whsec_endpoint"]})

    with secrets_read() as seen:
        intake = webhook.build_intake(
            {
                "QUEUE_URL": queue_url,
                "STRIPE_WEBHOOK_SECRET_ARN": webhook_secret,
                "STRIPE_SECRET_ARN": api_key_secret,
            }
        )
        answers = {}
        for secret in ("whsec_endpoint", "whsec_stale_copy"):
            body = encode(snapshot_event("invoice.created", INVOICE))
            answers[secret] = call(intake, http_v2(body, sign(body, secret)))["statusCode"]

    assert answers == {"whsec_endpoint": 200, "whsec_stale_copy": 400}
    assert set(seen) == {webhook_secret}
    assert len(queued(queue_url)) == 1


def test_the_worker_reads_only_the_api_key_secret(aws: MotoServer):
    """As deployed: STRIPE_SECRET_ARN holds the key (and usage_source_token), no signing
    secrets; the worker's cold start reads it and nothing else, through the same
    build_worker call as before the split."""
    api_key_secret = _secret({"api_key": "rk_test_worker", "usage_source_token": "tok_usage"})
    environ = {
        "STRIPE_SECRET_ARN": api_key_secret,
        "LEDGER_TABLE": "ledger-not-touched-at-cold-start",
        "USAGE_SOURCE": "https://usage.example.com/usage",
    }

    with secrets_read() as seen:
        secrets = worker_secrets(load_settings(WorkerSettings, environ))
        build_worker(environ)

    assert (secrets.api_key, secrets.usage_source_token) == ("rk_test_worker", "tok_usage")
    assert secrets.webhook_secrets == ()
    assert set(seen) == {api_key_secret}


def test_a_worker_secret_without_an_api_key_fails_naming_it(aws: MotoServer):
    webhook_only = _secret({"webhook_secrets": ["whsec_endpoint"]})
    settings = load_settings(
        WorkerSettings,
        {"STRIPE_SECRET_ARN": webhook_only, "LEDGER_TABLE": "l", "USAGE_SOURCE": "python://m:f"},
    )
    with pytest.raises(SettingsError, match="no Stripe api_key in arn:aws:secretsmanager:"):
        worker_secrets(settings)


def test_local_runs_keep_their_environment_variables():
    worker = worker_secrets(
        load_settings(
            WorkerSettings,
            {
                "STRIPE_API_KEY": "sk_test_local",
                "USAGE_SOURCE_TOKEN": "tok_local",
                "LEDGER_TABLE": "l",
                "USAGE_SOURCE": "python://m:f",
            },
        )
    )
    assert (worker.api_key, worker.usage_source_token) == ("sk_test_local", "tok_local")
    webhook_settings = load_settings(
        WebhookSettings, {"QUEUE_URL": "q", "STRIPE_WEBHOOK_SECRET": "whsec_b,whsec_a"}
    )
    source = webhook_secret_source(webhook_settings)
    assert source.stripe_secrets().webhook_secrets == ("whsec_a", "whsec_b")
    assert source.stripe_secrets().api_key is None
