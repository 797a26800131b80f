"""POST /stripe/webhook: raw body in, 200/400/413/503 out, accepted events on the queue."""

import gc

# Cold start: boto3, stripe, Powertools and pydantic allocate a few hundred thousand objects
# that live as long as the container; the cyclic GC would rescan them again and again while
# they load (~40 ms, bench/webhook.py). Pause it for the imports, then freeze what they
# loaded so later collections, during requests too, skip it. Nothing is deferred.
_collecting = gc.isenabled()
gc.disable()
try:
    import base64
    import binascii
    import json
    import os
    from typing import Any

    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from meterbridge.adapters.queue import SqsQueue
    from meterbridge.adapters.secrets import webhook_secret_source
    from meterbridge.adapters.signature import StripeSignatureVerifier
    from meterbridge.intake import Intake, Outcome, Reply
    from meterbridge.observability import logger, metrics, tracer
    from meterbridge.settings import WebhookSettings, load_settings
finally:
    if _collecting:
        gc.freeze()
        gc.enable()

_intake: Intake | None = None


def build_intake(environ: dict[str, str] | None = None) -> Intake:
    """Wire the intake from settings; a missing variable fails here, naming it."""
    settings = load_settings(WebhookSettings, os.environ if environ is None else environ)
    return Intake(
        verifier=StripeSignatureVerifier(
            webhook_secret_source(settings), settings.signature_tolerance_seconds
        ),
        queue=SqsQueue(settings.queue_url),
        accepted_event_types=settings.accepted_event_types,
        max_body_bytes=settings.max_body_bytes,
        queue_max_message_bytes=settings.queue_max_message_bytes,
    )


def raw_request(event: dict[str, Any]) -> tuple[str, bytes, str | None]:
    """Method, exact body bytes and Stripe-Signature of an API Gateway v2 or REST v1 event."""
    method = event.get("requestContext", {}).get("http", {}).get("method") or event.get(
        "httpMethod", ""
    )
    body_text = event.get("body") or ""
    body = (
        base64.b64decode(body_text, validate=True)
        if event.get("isBase64Encoded")
        else body_text.encode("utf-8")
    )
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    return method.upper(), body, headers.get("stripe-signature")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(
    event: dict[str, Any], context: LambdaContext, intake: Intake | None = None
) -> dict[str, Any]:
    global _intake  # noqa: PLW0603 - built once per container, at cold start
    if intake is None:
        if _intake is None:
            _intake = build_intake()
        intake = _intake
    try:
        method, body, signature = raw_request(event)
    except (binascii.Error, ValueError):
        # Invalid base64, or body text with lone surrogates, which has no UTF-8 bytes.
        reply = Reply(400, Outcome.MALFORMED, {"error": "body is not valid base64 or UTF-8"})
    else:
        if method and method != "POST":
            metrics.add_metric(name="MethodNotAllowed", unit=MetricUnit.Count, value=1)
            return {"statusCode": 405, "headers": {"Allow": "POST"}, "body": ""}
        reply = intake.receive(body, signature)

    metrics.add_metric(name=reply.outcome.value, unit=MetricUnit.Count, value=1)
    if reply.envelope:
        logger.append_keys(stripe_event_id=reply.envelope.id, stripe_event_type=reply.envelope.type)
    log = logger.warning if reply.status >= 400 else logger.info
    details = {"detail": reply.detail} if reply.detail else {}
    log(
        "webhook answered",
        extra={"status": reply.status, "outcome": reply.outcome.value, **details},
    )
    return _response(reply)


def _response(reply: Reply) -> dict[str, Any]:
    return {
        "statusCode": reply.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(reply.body),
    }
