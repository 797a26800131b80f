"""Where usage comes from: the product's own numbers, behind one small interface.

`USAGE_SOURCE` picks the adapter:
- `https://…` / `http://…`: POST JSON {"customer","tenant","meter","start","end"},
  answer {"value": "<decimal>"}; bearer token from the secret's `usage_source_token`.
- `dynamodb://TABLE`: sum of the customer's usage items in [start, end) for the meter.
  Items: `customer` (S, HASH) = Stripe customer id; `usage_key` (S, RANGE) =
  "<meter event name>#<unix seconds, 10 digits>#<anything unique>"; `value` (N or S).
- `python://module:function`: `function(query: UsageQuery)` returns a decimal (or its text).

Each answers a raw value; meterbridge.domain.reports.usage_value validates it. Outages and
timeouts are TransientError (retry later); answers that can never work are PermanentError.
"""

import importlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import requests
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.errors import MeterbridgeError, PermanentError, SettingsError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class UsageQuery:
    """One customer's usage of one meter over one service period [start, end)."""

    customer: str
    tenant: str | None
    meter: str  # the meter's event name
    start: int
    end: int


class UsageSource(Protocol):
    def usage(self, query: UsageQuery) -> object: ...


class HttpUsageSource:
    """The product's usage endpoint. One requests.Session: connection reuse across reports."""

    def __init__(self, url: str, *, timeout_seconds: float, token: str | None = None):
        self._url = url
        self._timeout = timeout_seconds
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def usage(self, query: UsageQuery) -> object:
        try:
            answer = self._session.post(
                self._url, data=json.dumps(asdict(query)), timeout=self._timeout
            )
        except requests.RequestException as error:
            raise TransientError(f"usage source unreachable: {type(error).__name__}") from error
        if answer.status_code >= 500 or answer.status_code in {408, 429}:
            raise TransientError(f"usage source answered {answer.status_code}")
        if answer.status_code >= 400:
            raise PermanentError(
                f"usage source refused the query ({answer.status_code}): {answer.text[:200]}"
            )
        try:
            document = answer.json()
        except ValueError:
            raise PermanentError("usage source answered something that is not JSON") from None
        if not isinstance(document, dict) or "value" not in document:
            raise PermanentError('usage source answer has no "value"')
        return document["value"]


class DynamoDbUsageSource:
    """Usage items in a DynamoDB table, summed per customer, meter and period."""

    def __init__(self, table_name: str, client: "DynamoDBClient"):
        self._table = table_name
        self._client = client

    def usage(self, query: UsageQuery) -> object:
        low = f"{query.meter}#{query.start:010d}"
        high = f"{query.meter}#{query.end:010d}"  # BETWEEN is inclusive: drop `end` below
        total = Decimal(0)
        start_key: dict[str, Any] | None = None
        while True:
            extra: dict[str, Any] = {"ExclusiveStartKey": start_key} if start_key else {}
            try:
                page = self._client.query(
                    TableName=self._table,
                    KeyConditionExpression=(
                        "customer = :customer AND usage_key BETWEEN :low AND :high"
                    ),
                    ExpressionAttributeValues={
                        ":customer": {"S": query.customer},
                        ":low": {"S": low},
                        ":high": {"S": high},
                    },
                    ProjectionExpression="usage_key, #value",
                    ExpressionAttributeNames={"#value": "value"},
                    ConsistentRead=True,
                    **extra,
                )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException":
                    raise PermanentError(f"usage table {self._table} does not exist") from error
                raise TransientError(f"usage table {self._table}: {code}") from error
            except BotoCoreError as error:
                raise TransientError(f"usage table {self._table} unreachable") from error
            for item in page.get("Items", []):
                if item["usage_key"]["S"].startswith(high):
                    continue
                raw = item.get("value", {})
                text = raw.get("N") or raw.get("S")
                if text is None:
                    raise PermanentError(
                        f"usage item {item['usage_key']['S']} in {self._table} has no value"
                    )
                try:
                    total += Decimal(text)
                except ArithmeticError:
                    raise PermanentError(
                        f"usage item {item['usage_key']['S']} has a bad value {text!r}"
                    ) from None
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                return total


class CallableUsageSource:
    """A Python function in the deployment package: `python://module:function`."""

    def __init__(self, function: Callable[[UsageQuery], object]):
        self._function = function

    @classmethod
    def from_reference(cls, reference: str) -> "CallableUsageSource":
        module_name, _, attribute = reference.partition(":")
        if not module_name or not attribute:
            raise SettingsError(f"USAGE_SOURCE python://{reference}: expected module:function")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise SettingsError(f"USAGE_SOURCE python://{reference}: {error}") from error
        if not callable(function):
            raise SettingsError(f"USAGE_SOURCE python://{reference} is not callable")
        return cls(function)

    def usage(self, query: UsageQuery) -> object:
        try:
            return self._function(query)
        except MeterbridgeError:
            raise
        except Exception as error:  # the product's code: treat a crash as an outage
            raise TransientError(
                f"usage function failed: {type(error).__name__}: {error}"
            ) from error


def usage_source_from(
    reference: str,
    *,
    timeout_seconds: float,
    token: str | None,
    dynamodb: Callable[[], "DynamoDBClient"],
) -> UsageSource:
    """Build the adapter `USAGE_SOURCE` names."""
    scheme, _, rest = reference.partition("://")
    if scheme in {"http", "https"}:
        return HttpUsageSource(reference, timeout_seconds=timeout_seconds, token=token)
    if scheme == "dynamodb" and rest:
        return DynamoDbUsageSource(rest, dynamodb())
    if scheme == "python" and rest:
        return CallableUsageSource.from_reference(rest)
    raise SettingsError(
        f"USAGE_SOURCE {reference!r}: expected https://…, dynamodb://TABLE or python://module:fn"
    )
