"""The naive webhook Lambda the cold-start benchmark compares meterbridge's against.

It does the same work (verify with the stripe SDK over any of the secrets, filter the
type, SendMessage with the same attributes, Logger/Metrics/Tracer) the way a first
version usually looks: stripe, boto3 and all of Powertools imported at top level "because
we may need them", the SQS client built at import, and `stripe.Webhook.construct_event`,
which parses the whole event into a StripeObject. "All of Powertools" is every utility
that imports with meterbridge's dependencies except the experimental `auth_alpha`;
`validation` is left out because it needs `fastjsonschema`, which meterbridge does not
install. With NAIVE_POWERTOOLS=listed only
the utilities issue 2 names (parameters, batch, idempotency, parser, event_handler,
data_classes) are imported: the benchmark reports that lighter baseline too.
"""

import json
import os
from typing import Any

import boto3
import stripe
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver  # noqa: F401
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType  # noqa: F401
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.idempotency import (  # noqa: F401
    DynamoDBPersistenceLayer,
    idempotent,
)
from aws_lambda_powertools.utilities.parser import BaseModel, parse  # noqa: F401
from aws_lambda_powertools.utilities.typing import LambdaContext

if os.environ.get("NAIVE_POWERTOOLS") != "listed":
    from aws_lambda_powertools.event_handler.openapi.models import OpenAPI  # noqa: F401
    from aws_lambda_powertools.utilities.circuit_breaker import circuit_breaker  # noqa: F401
    from aws_lambda_powertools.utilities.data_masking import DataMasking  # noqa: F401
    from aws_lambda_powertools.utilities.feature_flags import FeatureFlags  # noqa: F401
    from aws_lambda_powertools.utilities.jmespath_utils import query  # noqa: F401
    from aws_lambda_powertools.utilities.kafka import kafka_consumer  # noqa: F401
    from aws_lambda_powertools.utilities.metadata import get_lambda_metadata  # noqa: F401
    from aws_lambda_powertools.utilities.streaming import S3Object  # noqa: F401

logger = Logger(service="naive-webhook")
metrics = Metrics(namespace="NaiveWebhook", service="naive-webhook")
tracer = Tracer(service="naive-webhook")
sqs = boto3.client("sqs")

QUEUE_URL = os.environ["QUEUE_URL"]
ACCEPTED = {"invoice.created", "invoice.finalized", "v1.billing.meter.error_report_triggered"}


def webhook_secrets() -> list[str]:
    arn = os.environ.get("STRIPE_SECRET_ARN")
    if arn:
        secret: Any = parameters.get_secret(arn, transform="json", max_age=300)
        return list(secret["webhook_secrets"])
    return os.environ["STRIPE_WEBHOOK_SECRET"].split(",")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayProxyEventV2(event)
    payload = request.decoded_body or ""
    signature = request.headers.get("stripe-signature", "")
    stripe_event = None
    for secret in webhook_secrets():
        try:
            stripe_event = stripe.Webhook.construct_event(payload, signature, secret)
            break
        except (ValueError, stripe.SignatureVerificationError):
            continue
    if stripe_event is None:
        metrics.add_metric(name="SignatureFailures", unit=MetricUnit.Count, value=1)
        return {"statusCode": 400, "body": json.dumps({"error": "invalid signature"})}
    if stripe_event.type not in ACCEPTED:
        return {"statusCode": 200, "body": json.dumps({"status": "ignored"})}
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody=payload,
        MessageAttributes={
            "stripe_event_id": {"DataType": "String", "StringValue": stripe_event.id},
            "stripe_event_type": {"DataType": "String", "StringValue": stripe_event.type},
            "livemode": {
                "DataType": "String",
                "StringValue": "true" if stripe_event.livemode else "false",
            },
            "body_kind": {"DataType": "String", "StringValue": "event"},
        },
    )
    metrics.add_metric(name="EventsQueued", unit=MetricUnit.Count, value=1)
    logger.info("webhook answered", extra={"status": 200, "event_id": stripe_event.id})
    return {"statusCode": 200, "body": json.dumps({"status": "queued", "id": stripe_event.id})}
