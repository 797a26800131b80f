"""The stripe SDK's HTTP client, on urllib3 instead of requests.

The SDK's default RequestsClient spends about 1 ms of CPU per call in requests' session,
adapter and hook machinery on top of urllib3, which does the actual work; a Lambda
invocation reporting ~100 invoices a second makes two Stripe calls per invoice, so that
was 20 % of the worker's CPU (bench:worker). This client is the SDK's documented extension
point (`stripe.HTTPClient`): the SDK still builds, signs, retries and parses every request;
only the transport below it is urllib3 directly, with Stripe's own CA bundle, the same
connect/read timeouts and the same retry classification as RequestsClient.

Each request (each attempt of the SDK's retries) also has a total deadline,
`total_timeout_seconds` (default: the timeout), which urllib3's per-read timeouts alone do
not give (adapters/outbound_http.py); a caller caps it for every request it makes with
`outbound_deadline(deadline)`. Once that deadline has passed, a request is refused before
it is sent and not retried.
"""

import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from meterbridge.adapters.outbound_http import (
    WatchedPools,
    call_timeout,
    caller_deadline,
    earliest,
    watched_call,
)
from meterbridge.observability import tracer

# Worth retrying (the SDK decides how often): the request did not get through, or its
# answer did not come back. The SDK sends an idempotency key with every POST retry.
_RETRYABLE = (ConnectTimeoutError, ReadTimeoutError, NewConnectionError, ProtocolError)


class Urllib3StripeClient(stripe.HTTPClient):
    """One connection pool for every thread of the process, `pool_size` connections per host."""

    name = "urllib3"

    def __init__(
        self,
        timeout_seconds: float,
        pool_size: int,
        proxy: str | None = None,
        *,
        total_timeout_seconds: float | None = None,
    ):
        super().__init__(proxy=proxy)
        self._timeout = timeout_seconds
        self._total = total_timeout_seconds or timeout_seconds
        self._pools = WatchedPools(
            pool_size=pool_size,
            proxy=proxy,
            cert_reqs="CERT_REQUIRED",
            ca_certs=stripe.ca_bundle_path,
        )

    # The SDK annotates the body as str; RequestsClient returns bytes too, which it decodes.
    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        response = self._send(method, url, headers, post_data, preload=True)
        return response.data, response.status, response.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        response = self._send(method, url, headers, post_data, preload=False)
        return response, response.status, response.headers

    def close(self) -> None:
        self._pools.clear()

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any,
        *,
        preload: bool,
    ) -> urllib3.BaseHTTPResponse:
        host = urlsplit(url).hostname or ""
        limit = caller_deadline()
        now = time.monotonic()
        if limit is not None and limit <= now:
            # The caller's time is up: sending now could only be cut off mid-answer.
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                "Could not reach Stripe (DeadlineExceeded: the caller's deadline passed"
                " before the request was sent)",
                should_retry=False,
            )
        deadline = earliest(now + self._total, limit) or now + self._total
        # requests was patched for X-Ray; this transport records its own subsegment.
        with (
            tracer.provider.in_subsegment(host or "stripe") as subsegment,
            watched_call(deadline) as call,
        ):
            try:
                response = self._pools.for_host(host).request(
                    method.upper(),
                    url,
                    body=post_data,
                    headers=dict(headers or {}),
                    timeout=call_timeout(self._timeout, self._timeout, call),
                    retries=False,
                    redirect=False,
                    preload_content=preload,
                )
            except HTTPError as error:
                subsegment.add_exception(error, [])
                if call.interrupted:
                    raise _deadline_error(deadline - now, caller=deadline == limit) from error
                raise _connection_error(error) from error
            if call.interrupted:  # a body without a length ends at the shutdown, cut short
                response.release_conn()
                raise _deadline_error(deadline - now, caller=deadline == limit)
            subsegment.put_annotation("http_status", str(response.status))
            return response


def _deadline_error(seconds: float, *, caller: bool) -> stripe.APIConnectionError:
    """The watchdog ended the request: a timeout, retried by the SDK unless it was the
    caller's deadline (then every retry would be refused anyway)."""
    whose = "the caller's deadline" if caller else "the request's total deadline"
    message = f"Could not reach Stripe (DeadlineExceeded: no complete answer within {whose},"
    message += f" {seconds:.2f} s)"
    return stripe.APIConnectionError(message, should_retry=not caller)  # type: ignore[no-untyped-call]


def _connection_error(error: HTTPError) -> stripe.APIConnectionError:
    retry = isinstance(error, _RETRYABLE) and not isinstance(error, SSLError)
    message = f"Could not reach Stripe ({type(error).__name__}: {error})"
    return stripe.APIConnectionError(message, should_retry=retry)  # type: ignore[no-untyped-call]


def stripe_http_client(
    timeout_seconds: float, pool_size: int, *, total_timeout_seconds: float | None = None
) -> Urllib3StripeClient:
    """The transport for StripeGateway. An HTTPS_PROXY is honoured, except for the hosts
    NO_PROXY names; the environment is read once (requests re-read it on every call)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    return Urllib3StripeClient(
        timeout_seconds, pool_size, proxy=proxy, total_timeout_seconds=total_timeout_seconds
    )
