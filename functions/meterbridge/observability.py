"""The one place that creates Powertools objects; everything else imports these."""

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "meterbridge"
METRICS_NAMESPACE = "Meterbridge"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
