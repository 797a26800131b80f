"""The one place that creates Powertools objects; everything else imports these."""

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "meterbridge"
METRICS_NAMESPACE = "Meterbridge"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
# Every call meterbridge makes leaves through botocore (SQS, DynamoDB, Secrets Manager) or
# requests (stripe SDK, HTTP usage source); patching only those two skips importing and
# wrapping the rest of the X-Ray SDK's list (sqlite3, http.client, …) at every cold start.
tracer = Tracer(service=SERVICE, patch_modules=("botocore", "requests"))
