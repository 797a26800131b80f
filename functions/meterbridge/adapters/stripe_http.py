"""The stripe SDK's HTTP client, on urllib3 instead of requests.

The SDK's default RequestsClient spends about 1 ms of CPU per call in requests' session,
adapter and hook machinery on top of urllib3, which does the actual work; a Lambda
invocation reporting ~100 invoices a second makes two Stripe calls per invoice, so that
was 20 % of the worker's CPU (bench:worker). This client is the SDK's documented extension
point (`stripe.HTTPClient`): the SDK still builds, signs, retries and parses every request;
only the transport below it is urllib3 directly, with Stripe's own CA bundle, the same
connect/read timeouts and the same retry classification as RequestsClient.
"""

import os
import urllib.request
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

from meterbridge.observability import tracer

# Worth retrying (the SDK decides how often): the request did not get through, or its
# answer did not come back. The SDK sends an idempotency key with every POST retry.
_RETRYABLE = (ConnectTimeoutError, ReadTimeoutError, NewConnectionError, ProtocolError)


class Urllib3StripeClient(stripe.HTTPClient):
    """One connection pool for every thread of the process, `pool_size` connections per host."""

    name = "urllib3"

    def __init__(self, timeout_seconds: float, pool_size: int, proxy: str | None = None):
        super().__init__(proxy=proxy)
        self._timeout = urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds)
        options: dict[str, Any] = {
            "maxsize": max(pool_size, 1),
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": stripe.ca_bundle_path,
            "retries": False,
        }
        self._direct = urllib3.PoolManager(**options)
        self._proxied = urllib3.ProxyManager(proxy, **options) if proxy else None
        self._bypass: dict[str, bool] = {}  # host -> NO_PROXY names it (read once per host)

    def _pool(self, host: str) -> urllib3.PoolManager:
        if self._proxied is None:
            return self._direct
        bypass = self._bypass.get(host)
        if bypass is None:
            bypass = self._bypass[host] = bool(urllib.request.proxy_bypass(host))
        return self._direct if bypass else self._proxied

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
        self._direct.clear()
        if self._proxied is not None:
            self._proxied.clear()

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
        # requests was patched for X-Ray; this transport records its own subsegment.
        with tracer.provider.in_subsegment(host or "stripe") as subsegment:
            try:
                response = self._pool(host).request(
                    method.upper(),
                    url,
                    body=post_data,
                    headers=dict(headers or {}),
                    timeout=self._timeout,
                    retries=False,
                    redirect=False,
                    preload_content=preload,
                )
            except HTTPError as error:
                subsegment.add_exception(error, [])
                raise _connection_error(error) from error
            subsegment.put_annotation("http_status", str(response.status))
            return response


def _connection_error(error: HTTPError) -> stripe.APIConnectionError:
    retry = isinstance(error, _RETRYABLE) and not isinstance(error, SSLError)
    message = f"Could not reach Stripe ({type(error).__name__}: {error})"
    return stripe.APIConnectionError(message, should_retry=retry)  # type: ignore[no-untyped-call]


def stripe_http_client(timeout_seconds: float, pool_size: int) -> Urllib3StripeClient:
    """The transport for StripeGateway. An HTTPS_PROXY is honoured, except for the hosts
    NO_PROXY names; the environment is read once (requests re-read it on every call)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    return Urllib3StripeClient(timeout_seconds, pool_size, proxy=proxy)
