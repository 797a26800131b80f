"""Stripe-shaped API errors raised by handlers and rendered by the HTTP layer."""

from __future__ import annotations

from typing import Any


class StripeApiError(Exception):
    """An error answer: HTTP status plus Stripe's `{"error": {...}}` body and retry hint.

    `before_execution` marks a request refused while its parameters were validated: Stripe
    saves no idempotent answer for it (docs/stripe.md#S-IDEM-1).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        should_retry: bool | None = None,
        before_execution: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.should_retry = should_retry
        self.before_execution = before_execution

    def body(self, *, v2: bool = False) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        elif v2:  # v2 errors always name a code
            error["code"] = _V2_CODES.get(self.status, self.type)
        if self.param is not None and not v2:
            error["param"] = self.param
        return {"error": error}


_V2_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 429: "rate_limit"}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeApiError:
    return StripeApiError(400, message, param=param, code=code)


def invalid_param(message: str, param: str) -> StripeApiError:
    """A parameter of the wrong type or value: refused before the endpoint runs."""
    return StripeApiError(400, message, param=param, before_execution=True)


def missing(resource: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404,
        f"No such {resource}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def required(param: str) -> StripeApiError:
    return StripeApiError(
        400,
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
        before_execution=True,
    )
