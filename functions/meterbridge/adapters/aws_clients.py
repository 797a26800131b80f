"""One botocore session per container, shared by every AWS client the functions build.

A session loads endpoint rules and service models once; a second session (boto3's
default one, or the one Powertools Parameters would make) repeats that work on every
cold start. boto3 only wraps these same clients.
"""

from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def aws_client(service: str, config: Config | None = None) -> Any:
    """A client for `service`; AWS_ENDPOINT_URL and the region come from the environment."""
    return _session().create_client(service, config=config)


# DynamoDB answers in milliseconds; botocore's defaults (60 s connect, 60 s read, legacy
# retries: 5 attempts) let one ledger call block 10 minutes against an endpoint that
# accepts and never answers, far past the function's timeout (issue 13). Standard retry
# mode retries throttling, 5xx and connection errors with jittered back-off
# (botocore/retries/standard.py: up to 1 s x 2^attempt for throttling, 25 ms x 2^attempt
# otherwise for DynamoDB).
LEDGER_CONNECT_TIMEOUT_SECONDS = 1.0
LEDGER_READ_TIMEOUT_SECONDS = 2.0
LEDGER_MAX_ATTEMPTS = 3


def ledger_client_config(
    max_pool_connections: int,
    *,
    connect_timeout_seconds: float = LEDGER_CONNECT_TIMEOUT_SECONDS,
    read_timeout_seconds: float = LEDGER_READ_TIMEOUT_SECONDS,
    max_attempts: int = LEDGER_MAX_ATTEMPTS,
) -> Config:
    """The botocore Config of the worker's DynamoDB client (ledger, dynamodb:// usage).

    Parameter validation is off: the ledger builds every request itself and DynamoDB
    validates them anyway (botocore's check cost ~10 % of the worker's CPU per report)."""
    return Config(
        connect_timeout=connect_timeout_seconds,
        read_timeout=read_timeout_seconds,
        # total_max_attempts counts the first attempt; "max_attempts" would count retries.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        parameter_validation=False,
    )


def worst_case_call_seconds(config: Config) -> float:
    """The longest one call with `config` can take when every attempt times out: what the
    worker's time margin must leave for each DynamoDB call still to come. Backs off as for
    throttling (1 s, 2 s, …, the larger case); DNS resolution is not bounded."""
    retries: dict[str, Any] = getattr(config, "retries", None) or {}
    attempts = int(retries.get("total_max_attempts", retries.get("max_attempts", 0) + 1))
    per_attempt = float(getattr(config, "connect_timeout", 60)) + float(
        getattr(config, "read_timeout", 60)
    )
    backoff = sum(min(2.0**attempt, 20.0) for attempt in range(attempts - 1))
    return attempts * per_attempt + backoff
