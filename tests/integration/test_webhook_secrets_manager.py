"""The deployed path: webhook secrets from Secrets Manager (moto), read through Powertools."""

import json
import uuid

import boto3

from meterbridge.handlers import webhook
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
