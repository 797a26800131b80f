"""The one place that creates Powertools objects; everything else imports these."""

import threading

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "meterbridge"
METRICS_NAMESPACE = "Meterbridge"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
# Every call meterbridge makes leaves through botocore (SQS, DynamoDB, Secrets Manager) or
# one of its own urllib3 transports (Stripe, the HTTP usage source), which record their own
# subsegments (adapters/stripe_http.py, adapters/usage_sources.py); patching only botocore
# skips importing and wrapping the rest of the X-Ray SDK's list at every cold start.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

_metrics_lock = threading.Lock()


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Powertools Metrics is not thread-safe; records of a batch run in parallel."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)
