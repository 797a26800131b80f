"""StripeCalls: one SDK call at a time, with 429 back-off and meterbridge's failure classes.

- the SDK's default 80 s HTTP timeout is far beyond a Lambda's budget, so it is explicit;
- the SDK retries connection errors, 409 and 5xx (`max_network_retries`) but never 429,
  so 429 gets its own jittered exponential back-off before becoming a TransientError;
  meter-event writes instead wait for the process's adaptive limiter, which a 429 slows;
- a 400 saying an event with this identifier already exists means Stripe holds the report
  (docs/stripe.md#S-ME-2): StripeDuplicate, an AlreadyDelivered, never a failure.
"""

import random
from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from meterbridge.adapters.rate_limiter import AdaptiveRateLimiter
from meterbridge.adapters.stripe_http import stripe_http_client
from meterbridge.errors import AlreadyDelivered, PermanentError, TransientError

T = TypeVar("T")


class UnknownStripeObject(PermanentError):
    """Stripe answered 404: the object (customer, price, meter, event) does not exist."""


class StripeDuplicate(AlreadyDelivered):
    """AlreadyDelivered carrying Stripe's request id."""

    def __init__(self, message: str, request_id: str | None):
        super().__init__(message)
        self.request_id = request_id


class IdempotencyKeyReused(PermanentError):
    """The idempotency key was used before with different parameters."""


class StripeCalls:
    """The SDK client and how every call of it is made: limited, retried, classified."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None,
        timeout_seconds: float,
        max_network_retries: int,
        rate_limit_retries: int,
        rate_limit_backoff_seconds: float,
        sleep: Callable[[float], None],
        pool_size: int,
        meter_event_rate: float,
    ):
        base_addresses: Any = {"api": api_base, "meter_events": api_base} if api_base else None
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,
            max_network_retries=max_network_retries,
            http_client=stripe_http_client(timeout_seconds, pool_size),
        )
        self._rate_limit_retries = rate_limit_retries
        self._rate_limit_backoff = rate_limit_backoff_seconds
        self._sleep = sleep
        # One pace for every thread of the process (module docstring of rate_limiter).
        self.meter_event_limiter = AdaptiveRateLimiter(meter_event_rate, sleep=sleep)

    def call(self, request: Callable[[], T], *, limited: bool = False) -> T:
        """Run one SDK call; 429s are retried here (the SDK does not). `limited` calls are
        meter-event writes: they wait for the limiter's slot, and a 429 slows it down."""
        limiter = self.meter_event_limiter if limited else None
        attempt = 0
        while True:
            if limiter is not None:
                limiter.acquire()
            try:
                answer = request()
            except stripe.RateLimitError as error:
                if limiter is not None:
                    limiter.on_rate_limited()
                if attempt >= self._rate_limit_retries:
                    raise TransientError(
                        f"Stripe rate limit (429) after {attempt + 1} attempts"
                    ) from error
                if limiter is None:
                    # Full jitter keeps many concurrent workers from retrying in lock step.
                    self._sleep(random.uniform(0, self._rate_limit_backoff * 2**attempt))
                attempt += 1
                continue
            except stripe.StripeError as error:
                raise classify(error) from error
            if limiter is not None:
                limiter.on_success()
            return answer


def _is_duplicate_identifier(error: stripe.InvalidRequestError) -> bool:
    message = (error.user_message or str(error) or "").lower()
    return "already exists" in message and "identifier" in message


def classify(error: stripe.StripeError) -> Exception:
    """Map an SDK error to meterbridge's failure classes (retries already spent by the SDK)."""
    status = error.http_status
    detail = f"Stripe {type(error).__name__} ({status}): {error.user_message or error}"
    if isinstance(error, stripe.InvalidRequestError) and _is_duplicate_identifier(error):
        return StripeDuplicate(detail, error.request_id)
    if isinstance(error, stripe.IdempotencyError) and status == 400:
        return IdempotencyKeyReused(detail)
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return TransientError(detail)
    if status is not None and (status >= 500 or status in {409, 429}):
        return TransientError(detail)
    if status == 404:
        return UnknownStripeObject(detail)
    # 400 validation, 401 bad key, 403 permissions: retrying as-is cannot help.
    return PermanentError(detail)
