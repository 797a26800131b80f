"""Where usage comes from: the product's own numbers, behind one small interface.

`USAGE_SOURCE` picks the adapter:
- `https://…` (`http://` only on loopback: 127.0.0.1, localhost, ::1 — the bearer token
  never travels in clear): POST JSON {"customer","tenant","meter","start","end"},
  answer {"value": "<decimal>"}; bearer token from the secret's `usage_source_token`.
- `dynamodb://TABLE`: sum of the customer's usage items in [start, end) for the meter.
  Items: `customer` (S, HASH) = Stripe customer id; `usage_key` (S, RANGE) =
  "<meter event name>#<unix seconds, 10 digits>#<anything unique>"; `value` (N or S).
- `python://module:function`: `function(query: UsageQuery)` returns a decimal (or its text).

Each answers a raw value; meterbridge.domain.reports.usage_value validates it. Outages and
timeouts are TransientError (retry later); answers that can never work are PermanentError.
Text a usage source wrote (an error page, an exception) is scrubbed and cut to 200
characters before it becomes an error message (domain/usage_limits.py).

The HTTP source's timeout is a total deadline for the whole call — connect, headers and
body — not urllib3's per-read timeout, and the answer is read in pieces up to
`max_answer_bytes`: a source trickling bytes or sending 50 MB ends the call, not the
invocation (issue 13; adapters/outbound_http.py). A query's `deadline` and the caller's
`outbound_deadline` shorten it.
"""

import importlib
import ipaddress
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import certifi
import urllib3
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from meterbridge.adapters.outbound_http import (
    WatchedCall,
    WatchedPools,
    call_timeout,
    caller_deadline,
    earliest,
    watched_call,
)
from meterbridge.domain.usage_limits import scrub_usage_source_text
from meterbridge.errors import MeterbridgeError, PermanentError, SettingsError, TransientError
from meterbridge.observability import tracer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_MAX_ANSWER_BYTES = 64 * 1024  # {"value": "…"} is a few dozen bytes
_READ_CHUNK = 16 * 1024
_ERROR_BODY_BYTES = 4 * 1024  # of an error page, enough for the 200 characters kept
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True)
class UsageQuery:
    """One customer's usage of one meter over one service period [start, end).

    `deadline` (time.monotonic() seconds, optional) is when the caller needs the answer
    by; the HTTP and DynamoDB sources give up then. It is not part of the query itself."""

    customer: str
    tenant: str | None
    meter: str  # the meter's event name
    start: int
    end: int
    deadline: float | None = field(default=None, compare=False, repr=False)


class UsageSource(Protocol):
    def usage(self, query: UsageQuery) -> object: ...


def check_usage_source_url(url: str) -> None:
    """SettingsError unless `url` is https://, or http:// to a loopback address (the local
    stack and tests): plain http elsewhere would send the bearer token in clear."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"USAGE_SOURCE {url!r}: expected https://HOST/…")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SettingsError(
            f"USAGE_SOURCE {url!r}: plain http:// is allowed only for loopback"
            " (127.0.0.1, localhost, ::1); use https:// so the bearer token and the usage"
            " figures are encrypted"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpUsageSource:
    """The product's usage endpoint, over urllib3 connection pools reused across reports."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        token: str | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        connect_timeout_seconds: float | None = None,
        pool_size: int = 10,
    ):
        check_usage_source_url(url)
        parts = urlsplit(url)
        self._url = url
        self._host = parts.hostname or ""
        self._loopback = _is_loopback(self._host)
        self._timeout = timeout_seconds
        self._connect_timeout = min(connect_timeout_seconds or timeout_seconds, timeout_seconds)
        self._max_answer = max_answer_bytes
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
        self._pools = WatchedPools(
            pool_size=pool_size,
            proxy=proxy if parts.scheme == "https" else None,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),  # the trust requests gave this source before
        )

    def usage(self, query: UsageQuery) -> object:
        started = time.monotonic()
        deadline = earliest(started + self._timeout, query.deadline, caller_deadline())
        assert deadline is not None
        if deadline <= started:
            raise TransientError("usage source not asked: the report's deadline has passed")
        body = json.dumps(
            {
                "customer": query.customer,
                "tenant": query.tenant,
                "meter": query.meter,
                "start": query.start,
                "end": query.end,
            }
        )
        # requests was patched for X-Ray; this transport records its own subsegment.
        with (
            tracer.provider.in_subsegment(self._host or "usage source") as subsegment,
            watched_call(deadline) as call,
        ):
            try:
                answer = self._pools.for_host(self._host, direct=self._loopback).request(
                    "POST",
                    self._url,
                    body=body,
                    headers=self._headers,
                    timeout=call_timeout(self._connect_timeout, self._timeout, call),
                    retries=False,
                    redirect=False,  # a redirect must not carry the token anywhere else
                    preload_content=False,
                )
            except HTTPError as error:
                subsegment.add_exception(error, [])
                raise self._unreachable(error, call, deadline - started) from error
            subsegment.put_annotation("http_status", str(answer.status))
            try:
                status = answer.status
                if status >= 500 or status in {408, 429}:
                    raise TransientError(f"usage source answered {status}")
                if 300 <= status < 400:
                    raise PermanentError(
                        f"usage source answered a redirect ({status}); set USAGE_SOURCE to"
                        " the URL that answers"
                    )
                if status >= 400 or status < 200:
                    text = self._read(answer, _ERROR_BODY_BYTES, truncate=True)
                    detail = scrub_usage_source_text(text.decode("utf-8", "replace"))
                    raise PermanentError(f"usage source refused the query ({status}): {detail}")
                data = self._read(answer, self._max_answer, truncate=False)
            except HTTPError as error:
                raise self._unreachable(error, call, deadline - started) from error
            finally:
                answer.close()  # unread rest (an error page, an answer over the cap): not drained
                answer.release_conn()
            if call.interrupted:  # a body without a length ends at the shutdown, cut short
                raise self._unreachable(None, call, deadline - started)
        return _value_of(data)

    def _read(self, answer: urllib3.BaseHTTPResponse, limit: int, *, truncate: bool) -> bytes:
        """At most `limit` bytes of the body, read in pieces: more than that is refused
        (or, for an error page, cut) without ever holding it."""
        declared = answer.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > limit:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = answer.read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        if size > limit:
            if truncate:
                return data[:limit]
            raise self._too_large()
        return data

    def _too_large(self) -> PermanentError:
        return PermanentError(
            f"usage source answer is larger than {self._max_answer} bytes, the cap on usage"
            ' answers (USAGE_SOURCE_MAX_ANSWER_BYTES); an answer is {"value": "…"}'
        )

    def _unreachable(
        self, error: Exception | None, call: WatchedCall, seconds: float
    ) -> TransientError:
        # NewConnectionError subclasses ConnectTimeoutError in urllib3: refused is not slow.
        timed_out = isinstance(error, urllib3.exceptions.TimeoutError) and not isinstance(
            error, urllib3.exceptions.NewConnectionError
        )
        if call.interrupted or timed_out:
            return TransientError(
                f"usage source timed out: no complete answer within {seconds:.1f} s"
            )
        return TransientError(f"usage source unreachable: {type(error).__name__}")


def _value_of(data: bytes) -> object:
    """The "value" of a JSON object; anything else can never work: PermanentError."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested too deep
        raise PermanentError("usage source answered something that is not JSON") from None
    if not isinstance(document, dict):
        kind = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean"}.get(
            type(document), "null" if document is None else "a bare JSON number"
        )
        raise PermanentError(
            f'usage source answered {kind}; expected a JSON object {{"value": "<decimal>"}}'
        )
    if "value" not in document:
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
        deadline = earliest(query.deadline, caller_deadline())
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TransientError(
                    f"usage table {self._table}: the report's deadline passed while paging"
                )
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
                raise _dynamodb_failure(self._table, error) from error
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


# What DynamoDB answers for an overload or its own fault: botocore's standard retry mode
# retries these too (botocore/retries/standard.py); any other client error (validation,
# access denied, unknown key) repeats until someone fixes the table or the permissions.
_DYNAMODB_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TransactionInProgressException",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "ExpiredTokenException",  # the function's credentials are renewed by Lambda
    }
)


def _dynamodb_failure(table: str, error: ClientError) -> MeterbridgeError:
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "ResourceNotFoundException":
        return PermanentError(f"usage table {table} does not exist")
    if code in _DYNAMODB_TRANSIENT_CODES or status >= 500:
        return TransientError(f"usage table {table}: {code}")
    message = scrub_usage_source_text(str(error.response.get("Error", {}).get("Message", "")))
    return PermanentError(f"usage table {table} refused the query ({code}): {message}")


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
            detail = scrub_usage_source_text(f"{type(error).__name__}: {error}")
            raise TransientError(f"usage function failed: {detail}") from error


def usage_source_from(
    reference: str,
    *,
    timeout_seconds: float,
    token: str | None,
    dynamodb: Callable[[], "DynamoDBClient"],
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    pool_size: int = 10,
) -> UsageSource:
    """Build the adapter `USAGE_SOURCE` names (SettingsError naming it if it cannot work)."""
    scheme, _, rest = reference.partition("://")
    if scheme in {"http", "https"}:
        return HttpUsageSource(
            reference,
            timeout_seconds=timeout_seconds,
            token=token,
            max_answer_bytes=max_answer_bytes,
            pool_size=pool_size,
        )
    if scheme == "dynamodb" and rest:
        return DynamoDbUsageSource(rest, dynamodb())
    if scheme == "python" and rest:
        return CallableUsageSource.from_reference(rest)
    raise SettingsError(
        f"USAGE_SOURCE {reference!r}: expected https://…, dynamodb://TABLE or python://module:fn"
    )
