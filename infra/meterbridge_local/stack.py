"""The whole AWS side of meterbridge in one process: moto, the template's resources, the
webhook behind an HTTP front and the worker behind an SQS poller.

Environment: both handlers run in this process and read their settings from os.environ
when they are first invoked (cold start) and keep them for the life of the process, as a
Lambda container does. So LocalStack sets os.environ *before* the first invocation and
restores it on stop; settings added later (e.g. the webhook secret once the endpoint is
registered with Stripe) must be set with `set_environment` before the first request that
needs them. For the same reason one process should run one LocalStack with the real
handlers; tests that need several stacks pass their own handler callables.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meterbridge_local.aws import MotoServer
from meterbridge_local.lambda_runtime import (
    FunctionConfig,
    Handler,
    HttpFront,
    SqsPoller,
    load_handler,
)
from meterbridge_local.resources import LocalResources, TemplateError, create_resources

# Secrets Manager is not used locally: credentials come from plain variables instead.
_DEPLOY_ONLY_VARIABLES = ("STRIPE_SECRET_ARN", "STRIPE_WEBHOOK_SECRET_ARN")


class LocalStack:
    """moto + template resources + HTTP front + SQS poller; a context manager.

    `handlers` maps a function's logical id (WebhookFunction, WorkerFunction) to a callable
    used instead of importing the template's Handler. `visibility_timeout` replaces the
    queue's visibility timeout on receive, to compress retries in tests and demos.
    `aws` reuses a running MotoServer (its lifetime stays the caller's).
    """

    def __init__(
        self,
        *,
        stripe_api_base: str | None = None,
        stripe_api_key: str | None = None,
        webhook_secret: str | None = None,
        usage_source: str | None = None,
        port: int = 0,
        parameter_overrides: Mapping[str, str] | None = None,
        template_path: Path | str | None = None,
        stack_name: str = "meterbridge",
        handlers: Mapping[str, Handler] | None = None,
        visibility_timeout: int | None = None,
        environment: Mapping[str, str] | None = None,
        aws: MotoServer | None = None,
        start_poller: bool = True,
    ):
        self.stripe_api_base = stripe_api_base
        self.stripe_api_key = stripe_api_key
        self.webhook_secret = webhook_secret
        self.usage_source = usage_source
        self.port = port
        self.parameter_overrides = dict(parameter_overrides or {})
        self.template_path = template_path
        self.stack_name = stack_name
        self.handler_overrides = dict(handlers or {})
        self.visibility_timeout = visibility_timeout
        self.extra_environment = dict(environment or {})
        self.start_poller = start_poller
        self._aws = aws
        self._owns_aws = aws is None
        self._saved_environ: dict[str, str | None] = {}
        self.environment: dict[str, str] = {}
        self.resources: LocalResources | None = None
        self.front: HttpFront | None = None
        self.pollers: dict[str, SqsPoller] = {}

    # -- lifecycle

    def start(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self._aws is None:
            self._aws = MotoServer().start()
        self.resources = create_resources(
            self._aws.endpoint_url,
            template_path=self.template_path,
            parameter_overrides=self.parameter_overrides,
            stack_name=self.stack_name,
        )
        self.set_environment(self._function_environment())
        # No Secrets Manager locally; no base means real Stripe, whatever the shell says.
        unset = [*_DEPLOY_ONLY_VARIABLES, *([] if self.stripe_api_base else ["STRIPE_API_BASE"])]
        for key in unset:
            self._saved_environ.setdefault(key, os.environ.pop(key, None))
        http_functions = self.resources.functions_with_http_routes()
        if len(http_functions) > 1:
            raise TemplateError("the local stack serves the routes of one function")
        for definition in http_functions:
            self.front = HttpFront(
                self._handler(definition.logical_id, definition.handler),
                definition.http_routes,
                function=FunctionConfig.of(definition),
                port=self.port,
            ).start()
        for definition in self.resources.functions_with_sqs_sources():
            for source in definition.sqs_event_sources:
                if not source.enabled:
                    continue
                poller = SqsPoller(
                    self._handler(definition.logical_id, definition.handler),
                    source,
                    function=FunctionConfig.of(definition),
                    endpoint_url=self._aws.endpoint_url,
                    visibility_timeout=self.visibility_timeout,
                )
                self.pollers[f"{definition.logical_id}.{source.name}"] = poller
                if self.start_poller:
                    poller.start()

    def stop(self) -> None:
        """Stop the front, the pollers (joining their threads), moto if ours; restore env."""
        if self.front is not None:
            self.front.stop()
            self.front = None
        for poller in self.pollers.values():
            poller.stop()
        self.pollers = {}
        if self._owns_aws and self._aws is not None:
            self._aws.stop()
            self._aws = None
        for key, old in self._saved_environ.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved_environ = {}

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_environment(self, values: Mapping[str, str]) -> None:
        """Set process environment for the handlers (restored on stop). Handlers read it at
        their first invocation, so set everything before the first request."""
        for key, value in values.items():
            if key not in self._saved_environ:
                self._saved_environ[key] = os.environ.get(key)
            os.environ[key] = value
            self.environment[key] = value

    def register_webhook_endpoint(self, enabled_events: tuple[str, ...] = ("*",)) -> str:
        """Register the webhook URL with the configured Stripe (emulator or other server)
        through the real SDK, and use the endpoint's signing secret. Call it before the
        first webhook arrives; returns the secret."""
        import stripe  # only needed on this path

        if not self.stripe_api_key:
            raise RuntimeError("registering a webhook endpoint needs stripe_api_key")
        base = self.stripe_api_base or "https://api.stripe.com"
        client = stripe.StripeClient(
            self.stripe_api_key, base_addresses={"api": base, "meter_events": base}
        )
        params: Any = {"url": self.webhook_url, "enabled_events": list(enabled_events)}
        endpoint = client.v1.webhook_endpoints.create(params)
        if not endpoint.secret:
            raise RuntimeError(f"{base} returned no webhook signing secret")
        self.webhook_secret = endpoint.secret
        self.set_environment({"STRIPE_WEBHOOK_SECRET": endpoint.secret})
        return endpoint.secret

    def drain(self, timeout: float = 30.0) -> bool:
        """Run every poller until its queue is empty and nothing is in flight."""
        return all(poller.drain(timeout) for poller in self.pollers.values())

    # -- what callers print or use

    @property
    def aws(self) -> MotoServer:
        if self._aws is None:
            raise RuntimeError("the stack is not running")
        return self._aws

    @property
    def aws_endpoint_url(self) -> str:
        return self.aws.endpoint_url

    @property
    def webhook_url(self) -> str:
        if self.front is None:
            raise RuntimeError("no HTTP front is running")
        return self.front.route_url()

    @property
    def event_queue_url(self) -> str:
        """The queue the worker's event source reads."""
        return self._worker_poller().source.queue_url

    @property
    def dead_letter_queue_url(self) -> str:
        """The event queue's RedrivePolicy target."""
        resources = self._resources()
        queue = resources.queue_by_arn(self._worker_poller().source.queue_arn)
        target = json.loads(queue.attributes["RedrivePolicy"])["deadLetterTargetArn"]
        return resources.queue_by_arn(target).url

    @property
    def ledger_table_name(self) -> str:
        return self.environment["LEDGER_TABLE"]

    @property
    def worker_poller(self) -> SqsPoller:
        return self._worker_poller()

    def urls(self) -> dict[str, str]:
        """What `meterbridge local` prints: where to send webhooks and how to reach AWS."""
        described = {
            "webhook_url": self.webhook_url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "event_queue_url": self.event_queue_url,
            "dead_letter_queue_url": self.dead_letter_queue_url,
            "ledger_table": self.ledger_table_name,
        }
        if self.stripe_api_base:
            described["stripe_api_base"] = self.stripe_api_base
        return described

    # -- internals

    def _resources(self) -> LocalResources:
        if self.resources is None:
            raise RuntimeError("the stack is not running")
        return self.resources

    def _worker_poller(self) -> SqsPoller:
        if not self.pollers:
            raise RuntimeError("no SQS event source is running")
        return next(iter(self.pollers.values()))

    def _handler(self, logical_id: str, dotted_path: str) -> Handler:
        return self.handler_overrides.get(logical_id) or load_handler(dotted_path)

    def _function_environment(self) -> dict[str, str]:
        """Every function's template environment (they share one process, so a variable
        two functions set differently is an error), then the local-only settings."""
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for definition in self._resources().functions.values():
            for key, value in definition.environment.items():
                if key in merged and merged[key] != value:
                    raise TemplateError(
                        f"{key} differs between {owner[key]} and {definition.logical_id}; "
                        "the local stack runs both in one process"
                    )
                merged[key], owner[key] = value, definition.logical_id
        for key in _DEPLOY_ONLY_VARIABLES:
            merged.pop(key, None)
        local: dict[str, Any] = {
            **self.aws.environment(),
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
            "STRIPE_API_BASE": self.stripe_api_base,
            "STRIPE_API_KEY": self.stripe_api_key,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "USAGE_SOURCE": self.usage_source,
        }
        merged.update({key: value for key, value in local.items() if value is not None})
        merged.update(self.extra_environment)
        return merged
