"""The local stack's queues, tables and function settings are the template's own."""

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from meterbridge_local.aws import MotoServer
from meterbridge_local.resources import (
    DEFAULT_TEMPLATE,
    LocalResources,
    TemplateError,
    create_resources,
)


class _TaggedLoader(yaml.SafeLoader):
    """Reads the template independently of the code under test: tags become {tag: value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_TaggedLoader.add_multi_constructor("!", _tag)
TEMPLATE: dict[str, Any] = yaml.load(DEFAULT_TEMPLATE.read_text(), Loader=_TaggedLoader)
RESOURCES = TEMPLATE["Resources"]
PARAMETERS = TEMPLATE["Parameters"]


def _of_type(kind: str) -> dict[str, Any]:
    return {key: value for key, value in RESOURCES.items() if value["Type"] == kind}


def _create(aws: MotoServer, **overrides: str) -> LocalResources:
    return create_resources(
        aws.endpoint_url,
        parameter_overrides=overrides,
        stack_name=f"res-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture(scope="module")
def created(aws: MotoServer) -> LocalResources:
    return _create(aws)


def _sqs(aws: MotoServer) -> Any:
    return boto3.client("sqs", endpoint_url=aws.endpoint_url)


def _dynamodb(aws: MotoServer) -> Any:
    return boto3.client("dynamodb", endpoint_url=aws.endpoint_url)


def test_every_template_queue_and_table_is_created(created: LocalResources) -> None:
    assert set(created.queues) == set(_of_type("AWS::SQS::Queue"))
    assert set(created.tables) == set(_of_type("AWS::DynamoDB::Table"))


@pytest.mark.parametrize("logical_id", sorted(_of_type("AWS::SQS::Queue")))
def test_queue_attributes_match_the_template(
    aws: MotoServer, created: LocalResources, logical_id: str
) -> None:
    actual = _sqs(aws).get_queue_attributes(
        QueueUrl=created.queues[logical_id].url, AttributeNames=["All"]
    )["Attributes"]
    properties = RESOURCES[logical_id]["Properties"]
    for name in ("VisibilityTimeout", "MessageRetentionPeriod", "MaximumMessageSize"):
        if name in properties:
            assert actual[name] == str(properties[name]), name
    assert actual["SqsManagedSseEnabled"] == str(properties["SqsManagedSseEnabled"]).lower()
    assert actual["QueueArn"] == created.queues[logical_id].arn


def test_redrive_targets_the_dead_letter_queue_with_the_default_receive_count(
    aws: MotoServer, created: LocalResources
) -> None:
    for logical_id, resource in _of_type("AWS::SQS::Queue").items():
        redrive = resource["Properties"].get("RedrivePolicy")
        if not redrive:
            continue
        actual = json.loads(
            _sqs(aws).get_queue_attributes(
                QueueUrl=created.queues[logical_id].url, AttributeNames=["RedrivePolicy"]
            )["Attributes"]["RedrivePolicy"]
        )
        target_id = redrive["deadLetterTargetArn"]["GetAtt"].split(".")[0]
        parameter = redrive["maxReceiveCount"]["Ref"]
        assert actual["deadLetterTargetArn"] == created.queues[target_id].arn
        assert int(actual["maxReceiveCount"]) == PARAMETERS[parameter]["Default"]


def test_a_parameter_override_changes_the_redrive_receive_count(aws: MotoServer) -> None:
    resources = _create(aws, MaxReceiveCount="2")
    actual = json.loads(
        _sqs(aws).get_queue_attributes(
            QueueUrl=resources.queues["EventQueue"].url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
    )
    assert int(actual["maxReceiveCount"]) == 2


@pytest.mark.parametrize("logical_id", sorted(_of_type("AWS::DynamoDB::Table")))
def test_table_keys_indexes_and_ttl_match_the_template(
    aws: MotoServer, created: LocalResources, logical_id: str
) -> None:
    properties = RESOURCES[logical_id]["Properties"]
    name = created.tables[logical_id].name
    table = _dynamodb(aws).describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == properties["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        properties["AttributeDefinitions"], key=str
    )
    expected_indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in properties.get("GlobalSecondaryIndexes", [])
    }
    actual_indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    assert actual_indexes == expected_indexes
    assert table["BillingModeSummary"]["BillingMode"] == properties["BillingMode"]
    ttl = _dynamodb(aws).describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    spec = properties["TimeToLiveSpecification"]
    assert ttl["AttributeName"] == spec["AttributeName"]
    assert ttl["TimeToLiveStatus"] == ("ENABLED" if spec["Enabled"] else "DISABLED")


def test_functions_carry_the_template_handler_timeout_and_local_environment(
    created: LocalResources,
) -> None:
    for logical_id, resource in _of_type("AWS::Serverless::Function").items():
        function = created.functions[logical_id]
        assert function.handler == resource["Properties"]["Handler"]
        assert function.timeout_seconds == resource["Properties"]["Timeout"]
        assert function.environment["QUEUE_URL"] == created.queues["EventQueue"].url
        # No default for StripeSecretArn: locally, secrets come from the environment.
        assert "STRIPE_SECRET_ARN" not in function.environment
        assert "STRIPE_WEBHOOK_SECRET_ARN" not in function.environment
        assert function.environment["POWERTOOLS_SERVICE_NAME"] == "meterbridge"  # Globals
    worker = created.functions["WorkerFunction"]
    assert worker.environment["LEDGER_TABLE"] == created.tables["LedgerTable"].name
    assert worker.environment["BILLING_REASONS"] == ",".join(
        PARAMETERS["BillingReasons"]["Default"].split(",")
    )
    webhook = created.functions["WebhookFunction"]
    assert [(r.method, r.path) for r in webhook.http_routes] == [("POST", "/stripe/webhook")]


def test_event_source_mapping_reads_the_template_and_overrides(aws: MotoServer) -> None:
    default = _create(aws).functions["WorkerFunction"].sqs_event_sources[0]
    assert default.batch_size == PARAMETERS["WorkerBatchSize"]["Default"]
    assert (
        default.maximum_batching_window_seconds
        == PARAMETERS["WorkerBatchingWindowSeconds"]["Default"]
    )
    assert default.maximum_concurrency == PARAMETERS["WorkerMaximumConcurrency"]["Default"]
    assert default.reports_batch_item_failures
    overridden = _create(aws, WorkerBatchSize="3", WorkerMaximumConcurrency="2")
    source = overridden.functions["WorkerFunction"].sqs_event_sources[0]
    assert (source.batch_size, source.maximum_concurrency) == (3, 2)
    assert source.queue_arn == overridden.queues["EventQueue"].arn


def test_unknown_parameter_override_is_refused(aws: MotoServer) -> None:
    with pytest.raises(TemplateError, match="NoSuchParameter"):
        _create(aws, NoSuchParameter="1")


SMALL_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
  Extra: {Type: String, Default: ""}
Conditions:
  HasExtra: !Not [!Equals [!Ref Extra, ""]]
Globals:
  Function:
    Timeout: 7
    Environment:
      Variables:
        FROM_GLOBALS: "yes"
Resources:
  Orders:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      ContentBasedDeduplication: true
      DelaySeconds: 2
  ExtraQueue:
    Type: AWS::SQS::Queue
    Condition: HasExtra
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: pkg.mod.handler
      MemorySize: 256
      Environment:
        Variables:
          ORDERS_NAME: !GetAtt Orders.QueueName
          GREETING: !Sub "${Stage}-${AWS::Region}-${!Literal}"
          MAYBE: !If [HasExtra, !Ref Extra, !Ref AWS::NoValue]
          JOINED: !Join ["/", [a, !Select [1, !Split [",", "x,y,z"]]]]
"""


def test_intrinsics_conditions_fifo_and_globals(aws: MotoServer, tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(SMALL_TEMPLATE)
    resources = create_resources(aws.endpoint_url, template_path=path, stack_name="small")
    assert set(resources.queues) == {"Orders"}  # ExtraQueue's condition is false
    orders = resources.queues["Orders"]
    assert orders.name == "small-Orders.fifo"
    attributes = _sqs(aws).get_queue_attributes(QueueUrl=orders.url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert (attributes["FifoQueue"], attributes["DelaySeconds"]) == ("true", "2")
    function = resources.functions["Fn"]
    assert (function.timeout_seconds, function.memory_mb) == (7, 256)
    assert function.environment == {
        "FROM_GLOBALS": "yes",
        "ORDERS_NAME": "small-Orders.fifo",
        "GREETING": "dev-us-east-1-${Literal}",
        "JOINED": "a/y",
    }
