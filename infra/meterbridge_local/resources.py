"""The template's queues, tables and functions, brought up in moto from template.yaml itself.

Nothing here describes a resource a second time: queues, tables, the functions' handlers,
environment, timeouts and SQS event source mappings are all read from the SAM template
(parameters from their defaults plus overrides), so the local stack cannot drift from
what is deployed. cfn-lint's YAML decoder loads the short-form tags (!Ref, !GetAtt, …).
"""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT, LOCAL_REGION

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
LOCAL_API_ID = "local"

# SQS queue properties whose CloudFormation name is also the SQS attribute name.
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
# Lambda's defaults for an SQS event source when the template leaves them out.
DEFAULT_BATCH_SIZE = 10
DEFAULT_FUNCTION_TIMEOUT = 3
DEFAULT_MEMORY_MB = 128


class TemplateError(Exception):
    """The template uses something the local stack cannot resolve."""


class _NoValue:
    """AWS::NoValue: the property or list element disappears."""


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class QueueResource:
    logical_id: str
    name: str
    url: str
    arn: str
    attributes: dict[str, str]  # as sent to CreateQueue


@dataclass(frozen=True)
class TableResource:
    logical_id: str
    name: str
    arn: str


@dataclass(frozen=True)
class SqsEventSource:
    """One `Type: SQS` event of a function: the event source mapping's settings."""

    name: str
    queue_logical_id: str
    queue_url: str
    queue_arn: str
    batch_size: int
    maximum_batching_window_seconds: int
    function_response_types: tuple[str, ...]
    maximum_concurrency: int | None
    enabled: bool = True

    @property
    def reports_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str


@dataclass(frozen=True)
class FunctionDefinition:
    logical_id: str
    name: str
    handler: str  # dotted path, e.g. meterbridge.handlers.webhook.handler
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, str]
    sqs_event_sources: tuple[SqsEventSource, ...] = ()
    http_routes: tuple[HttpRoute, ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{self.name}"


@dataclass(frozen=True)
class LocalResources:
    """What was created, keyed by the template's logical ids."""

    stack_name: str
    parameters: dict[str, str | list[str]]
    queues: dict[str, QueueResource] = field(default_factory=dict)
    tables: dict[str, TableResource] = field(default_factory=dict)
    functions: dict[str, FunctionDefinition] = field(default_factory=dict)

    @property
    def queue_urls(self) -> dict[str, str]:
        return {key: queue.url for key, queue in self.queues.items()}

    @property
    def queue_arns(self) -> dict[str, str]:
        return {key: queue.arn for key, queue in self.queues.items()}

    @property
    def table_names(self) -> dict[str, str]:
        return {key: table.name for key, table in self.tables.items()}

    def queue_by_arn(self, arn: str) -> QueueResource:
        for queue in self.queues.values():
            if queue.arn == arn:
                return queue
        raise KeyError(arn)

    def functions_with_http_routes(self) -> list[FunctionDefinition]:
        return [fn for fn in self.functions.values() if fn.http_routes]

    def functions_with_sqs_sources(self) -> list[FunctionDefinition]:
        return [fn for fn in self.functions.values() if fn.sqs_event_sources]


def load_template(path: Path | str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = load_cfn_yaml(str(path or DEFAULT_TEMPLATE))
    return template


def resolve_parameters(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> dict[str, str | list[str]]:
    """Parameter values as Ref returns them: text, or a list for list types.

    A parameter without default or override is left out; references to it resolve to
    AWS::NoValue (e.g. StripeSecretArn: locally, secrets come from the environment).
    """
    overrides = dict(overrides or {})
    declared = template.get("Parameters") or {}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameter override(s): {', '.join(sorted(unknown))}")
    values: dict[str, str | list[str]] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            continue
        text = _scalar_text(raw) if not isinstance(raw, list) else ",".join(map(str, raw))
        kind = str(spec.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            values[name] = [part.strip() for part in text.split(",")] if text else [""]
        else:
            values[name] = text
    return values


def _scalar_text(value: Any) -> str:
    """How CloudFormation renders a scalar where text is expected."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Resolver:
    """Resolves the intrinsic functions the template's local resources use."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str | list[str]],
        stack_name: str,
        physical: Callable[[str], Any],
        attribute: Callable[[str, str], Any],
    ):
        self._template = template
        self._parameters = parameters
        self._stack_name = stack_name
        self._physical = physical
        self._attribute = attribute
        self._conditions: dict[str, bool] = {}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, argument),) = value.items()
                if key == "Ref":
                    return self._ref(argument)
                if key.startswith("Fn::") or key == "Condition":
                    return self._function(key, argument)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        return value

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self._template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": LOCAL_REGION,
            "AWS::AccountId": LOCAL_ACCOUNT_ID,
            "AWS::StackName": self._stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:"
            f"stack/{self._stack_name}/local",
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in (self._template.get("Parameters") or {}):
            return self._parameters.get(name, NO_VALUE)
        if name in (self._template.get("Resources") or {}):
            return self._physical(name)
        raise TemplateError(f"Ref to unknown name {name}")

    def _function(self, key: str, argument: Any) -> Any:
        if key == "Fn::GetAtt":
            logical_id, attribute = (
                argument.split(".", 1) if isinstance(argument, str) else argument
            )
            return self._attribute(logical_id, attribute)
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::If":
            name, if_true, if_false = argument
            return self.resolve(if_true if self.condition(name) else if_false)
        args = self.resolve(argument)
        if key == "Fn::Equals":
            left, right = args
            return _scalar_text(left) == _scalar_text(right)
        if key == "Fn::Not":
            return not args[0]
        if key == "Fn::And":
            return all(args)
        if key == "Fn::Or":
            return any(args)
        if key == "Fn::Join":
            separator, items = args
            return separator.join(_scalar_text(item) for item in items)
        if key == "Fn::Split":
            separator, text = args
            return text.split(separator)
        if key == "Fn::Select":
            index, items = args
            return items[int(index)]
        if key == "Fn::Sub":
            return self._sub(argument)
        raise TemplateError(f"{key} is not supported by the local stack")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {name: self.resolve(value) for name, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} stays literal
            if name in variables:
                return _scalar_text(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return _scalar_text(self._attribute(logical_id, attribute))
            return _scalar_text(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


class _Builder:
    """Creates resources on demand, so references are created before their referrers."""

    def __init__(
        self,
        template: dict[str, Any],
        parameters: dict[str, str | list[str]],
        stack_name: str,
        endpoint_url: str,
    ):
        self.template = template
        self.resources: dict[str, Any] = template.get("Resources") or {}
        self.result = LocalResources(stack_name=stack_name, parameters=parameters)
        self.stack_name = stack_name
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_AWS_ENVIRONMENT["AWS_SESSION_TOKEN"],
            region_name=LOCAL_REGION,
        )
        self.sqs = session.client("sqs", endpoint_url=endpoint_url)
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
        self._creating: set[str] = set()
        self.resolver = _Resolver(template, parameters, stack_name, self.physical, self.attribute)

    def physical_name(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def physical(self, logical_id: str) -> Any:
        kind = self.resources[logical_id]["Type"]
        if kind == "AWS::SQS::Queue":
            return self.queue(logical_id).url
        if kind == "AWS::DynamoDB::Table":
            return self.table(logical_id).name
        if kind == "AWS::Serverless::Function":
            return self.physical_name(logical_id)
        if kind in ("AWS::Serverless::HttpApi", "AWS::Serverless::Api"):
            return LOCAL_API_ID
        raise TemplateError(f"Ref {logical_id} ({kind}) has no local counterpart")

    def attribute(self, logical_id: str, attribute: str) -> Any:
        kind = self.resources.get(logical_id, {}).get("Type")
        if kind == "AWS::SQS::Queue":
            queue = self.queue(logical_id)
            values = {"Arn": queue.arn, "QueueName": queue.name, "QueueUrl": queue.url}
        elif kind == "AWS::DynamoDB::Table":
            table = self.table(logical_id)
            values = {"Arn": table.arn}
        else:
            values = {}
        if attribute not in values:
            raise TemplateError(f"GetAtt {logical_id}.{attribute} has no local counterpart")
        return values[attribute]

    def _properties(self, logical_id: str) -> dict[str, Any]:
        if logical_id in self._creating:
            raise TemplateError(f"circular reference through {logical_id}")
        self._creating.add(logical_id)
        try:
            resolved: dict[str, Any] = self.resolver.resolve(
                self.resources[logical_id].get("Properties") or {}
            )
            return resolved
        finally:
            self._creating.discard(logical_id)

    def queue(self, logical_id: str) -> QueueResource:
        if logical_id in self.result.queues:
            return self.result.queues[logical_id]
        properties = self._properties(logical_id)
        name = properties.get("QueueName") or self.physical_name(logical_id)
        if properties.get("FifoQueue") and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {
            key: json.dumps(value) if isinstance(value, dict) else _scalar_text(value)
            for key, value in properties.items()
            if key in _QUEUE_ATTRIBUTES
        }
        tags = {tag["Key"]: tag["Value"] for tag in properties.get("Tags", [])}
        request: Any = {"QueueName": name, "Attributes": attributes, "tags": tags}
        url = self.sqs.create_queue(**request)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue = QueueResource(logical_id, name, url, arn, attributes)
        self.result.queues[logical_id] = queue
        return queue

    def table(self, logical_id: str) -> TableResource:
        if logical_id in self.result.tables:
            return self.result.tables[logical_id]
        properties = self._properties(logical_id)
        name = properties.get("TableName") or self.physical_name(logical_id)
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        for key in (
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "ProvisionedThroughput",
            "TableClass",
            "DeletionProtectionEnabled",
            "Tags",
        ):
            if key in properties:
                request[key] = properties[key]
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": properties["StreamSpecification"]["StreamViewType"],
            }
        sse = properties.get("SSESpecification")
        if sse:
            request["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
                **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
            }
        arn = self.dynamodb.create_table(**request)["TableDescription"]["TableArn"]
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            self.dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={
                    "Enabled": bool(ttl.get("Enabled", False)),
                    "AttributeName": ttl["AttributeName"],
                },
            )
        recovery = properties.get("PointInTimeRecoverySpecification")
        if recovery:
            self.dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={
                    "PointInTimeRecoveryEnabled": bool(recovery["PointInTimeRecoveryEnabled"])
                },
            )
        table = TableResource(logical_id, name, arn)
        self.result.tables[logical_id] = table
        return table

    def function(self, logical_id: str) -> FunctionDefinition:
        """A function's local definition: SAM Globals merged under its own properties."""
        merged = _merge_globals(
            (self.template.get("Globals") or {}).get("Function") or {},
            self.resources[logical_id].get("Properties") or {},
        )
        resolve = self.resolver.resolve
        variables = resolve((merged.get("Environment") or {}).get("Variables") or {})
        sqs_sources: list[SqsEventSource] = []
        routes: list[HttpRoute] = []
        for event_name, event in (merged.get("Events") or {}).items():
            kind = event.get("Type")
            properties = event.get("Properties") or {}
            if kind == "SQS":
                sqs_sources.append(self._sqs_event_source(event_name, resolve(properties)))
            elif kind in ("HttpApi", "Api"):
                resolved = resolve({k: v for k, v in properties.items() if k != "ApiId"})
                routes.append(
                    HttpRoute(resolved.get("Method", "ANY").upper(), resolved.get("Path", "/"))
                )
        return FunctionDefinition(
            logical_id=logical_id,
            name=resolve(merged.get("FunctionName")) or self.physical_name(logical_id),
            handler=resolve(merged["Handler"]),
            timeout_seconds=int(resolve(merged.get("Timeout", DEFAULT_FUNCTION_TIMEOUT))),
            memory_mb=int(resolve(merged.get("MemorySize", DEFAULT_MEMORY_MB))),
            environment={key: _scalar_text(value) for key, value in variables.items()},
            sqs_event_sources=tuple(sqs_sources),
            http_routes=tuple(routes),
        )

    def _sqs_event_source(self, name: str, properties: dict[str, Any]) -> SqsEventSource:
        queue = self.result.queue_by_arn(properties["Queue"])
        scaling = properties.get("ScalingConfig") or {}
        concurrency = scaling.get("MaximumConcurrency")
        return SqsEventSource(
            name=name,
            queue_logical_id=queue.logical_id,
            queue_url=queue.url,
            queue_arn=queue.arn,
            batch_size=int(properties.get("BatchSize", DEFAULT_BATCH_SIZE)),
            maximum_batching_window_seconds=int(
                properties.get("MaximumBatchingWindowInSeconds", 0)
            ),
            function_response_types=tuple(properties.get("FunctionResponseTypes", ())),
            maximum_concurrency=int(concurrency) if concurrency is not None else None,
            enabled=_scalar_text(properties.get("Enabled", True)).lower() != "false",
        )


def _merge_globals(globals_: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: a function's own value wins; maps (Environment…) merge."""
    merged = dict(globals_)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_globals(base, value)
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref"))


def create_resources(
    endpoint_url: str,
    *,
    template_path: Path | str | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
    stack_name: str = "meterbridge",
) -> LocalResources:
    """Create every queue and table of the template in the AWS at `endpoint_url` (moto).

    Physical names are `<stack_name>-<LogicalId>` unless the template names them, so two
    stacks with different names can share one moto server.
    """
    template = load_template(template_path)
    parameters = resolve_parameters(template, parameter_overrides)
    builder = _Builder(template, parameters, stack_name, endpoint_url)
    for logical_id, resource in builder.resources.items():
        condition = resource.get("Condition")
        if condition and not builder.resolver.condition(condition):
            continue
        kind = resource.get("Type")
        if kind == "AWS::SQS::Queue":
            builder.queue(logical_id)
        elif kind == "AWS::DynamoDB::Table":
            builder.table(logical_id)
    for logical_id, resource in builder.resources.items():
        if resource.get("Type") == "AWS::Serverless::Function":
            builder.result.functions[logical_id] = builder.function(logical_id)
    return builder.result
