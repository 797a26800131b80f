"""The one place that creates Powertools objects; everything else imports these."""

import threading

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "meterbridge"
METRICS_NAMESPACE = "Meterbridge"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
# Every call meterbridge makes leaves through botocore (SQS, DynamoDB, Secrets Manager),
# requests (HTTP usage source) or the stripe transport, which records its own subsegment
# (adapters/stripe_http.py); patching only the first two skips importing and wrapping the
# rest of the X-Ray SDK's list (sqlite3, http.client, …) at every cold start.
tracer = Tracer(service=SERVICE, patch_modules=("botocore", "requests"))

_metrics_lock = threading.Lock()


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Powertools Metrics is not thread-safe; records of a batch run in parallel."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)
