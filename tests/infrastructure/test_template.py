"""template.yaml stays deployable: cfn-lint on both forms, and the wiring the code relies on."""

import json
import re
from typing import Any

import pytest
from cfnlint.api import lint

from meterbridge.messages import SweepPage, is_sweep_body, read_sweep
from tests.infrastructure.template_support import TEMPLATE, sam_template, translated_template

# Regions we document as deploy targets (SnapStart for Python is regional; see README).
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"]


def _problems(text: str) -> list[str]:
    return [str(match) for match in lint(text, regions=REGIONS)]


def test_cfn_lint_is_clean_on_the_sam_template():
    assert _problems(TEMPLATE.read_text()) == []


def test_cfn_lint_is_clean_on_the_translated_template():
    assert _problems(json.dumps(translated_template())) == []


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(translated_template()["Resources"])


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def test_webhook_route_and_handler(resources: dict[str, Any]):
    functions = sam_template()["Resources"]
    assert functions["WebhookFunction"]["Properties"]["Handler"] == (
        "meterbridge.handlers.webhook.handler"
    )
    assert functions["WorkerFunction"]["Properties"]["Handler"] == (
        "meterbridge.handlers.worker.handler"
    )
    routes = _of_type(resources, "AWS::ApiGatewayV2::Api")
    body = next(iter(routes.values()))["Properties"]["Body"]
    assert set(body["paths"]) == {"/stripe/webhook"}
    assert set(body["paths"]["/stripe/webhook"]) == {"post"}


def test_worker_consumes_the_queue_with_partial_batch_responses(resources: dict[str, Any]):
    [mapping] = _of_type(resources, "AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaximumConcurrency"}


def test_queue_visibility_covers_six_worker_timeouts_and_redrives_to_the_dlq(
    resources: dict[str, Any],
):
    queue = resources["EventQueue"]["Properties"]
    worker_timeout = resources["WorkerFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    # A safety net: the worker dead-letters failures itself (worker/retrying.py).
    assert sam_template()["Parameters"]["MaxReceiveCount"]["Default"] == 20
    assert resources["DeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True


def test_ledger_table_is_on_demand_with_pitr_ttl_and_lookup_indexes(resources: dict[str, Any]):
    table = resources["LedgerTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert {index["IndexName"] for index in table["GlobalSecondaryIndexes"]} >= {
        "by_invoice",
        "by_customer",
    }


# X-Ray's write actions cannot name a resource: IAM accepts only "*" for them.
RESOURCELESS_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_policies_are_scoped_to_our_own_resources(resources: dict[str, Any]):
    """Least privilege: no statement grants a wildcard resource for data-plane actions, and
    no role carries a managed policy (SAM's SQS one allows every queue of the account)."""
    for name, role in _of_type(resources, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        for policy in role["Properties"].get("Policies", []):
            document = policy.get("PolicyDocument") or policy["Fn::If"][1]["PolicyDocument"]
            for statement in document["Statement"]:
                actions = statement["Action"]
                actions = set(actions if isinstance(actions, list) else [actions])
                assert not any("*" in action for action in actions), (name, statement)
                if statement.get("Resource") == "*":
                    assert actions <= RESOURCELESS_ACTIONS, (name, statement)


def test_snapstart_on_published_versions(resources: dict[str, Any]):
    for name in ("WebhookFunction", "WorkerFunction"):
        assert resources[name]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}


def test_outputs_name_what_operators_need():
    assert set(sam_template()["Outputs"]) >= {
        "WebhookUrl",
        "EventQueueUrl",
        "DeadLetterQueueUrl",
        "LedgerTableName",
    }


def test_template_default_event_types_are_the_webhooks_default():
    from meterbridge.settings import DEFAULT_ACCEPTED_EVENT_TYPES

    default = sam_template()["Parameters"]["AcceptedEventTypes"]["Default"]
    assert set(default.split(",")) == DEFAULT_ACCEPTED_EVENT_TYPES


def test_alarm_topic_is_not_on_the_aws_managed_sns_key():
    """CloudWatch alarms cannot publish to a topic encrypted with alias/aws/sns."""
    topic = sam_template()["Resources"]["AlarmTopic"]["Properties"]
    assert topic.get("KmsMasterKeyId") != "alias/aws/sns"


def test_a_deploy_must_name_its_usage_source():
    usage_source = sam_template()["Parameters"]["UsageSource"]
    assert "Default" not in usage_source
    pattern = re.compile(usage_source["AllowedPattern"])
    # CloudFormation matches AllowedPattern against the whole value.
    assert all(
        pattern.fullmatch(value)
        for value in ("https://u.example/usage", "dynamodb://", "python://m:f")
    )
    # dynamodb://TABLE is refused: its table would be a second, unchecked copy of
    # UsageTableName (the one the worker is granted read access to).
    assert not any(
        pattern.fullmatch(value)
        for value in ("", "usage.example.com", "ftp://x", "dynamodb://usage", "https://")
    )


def test_the_sweep_schedule_puts_a_sweep_the_worker_recognises_on_the_event_queue(
    resources: dict[str, Any],
):
    """No message attributes come from EventBridge Scheduler: the worker knows a sweep by its
    body, and takes its window end from the schedule's nominal time."""
    schedule = resources["SweepSchedule"]["Properties"]
    target = schedule["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert is_sweep_body(target["Input"])
    request = read_sweep(target["Input"].replace("<aws.scheduler.scheduled-time>", "x"))
    assert request == SweepPage(scheduled_at="x")
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    hourly, daily = schedule["ScheduleExpression"]["Fn::If"][1:]
    assert hourly == {"Fn::Sub": "cron(${SweepSettleMinutes} * * * ? *)"}
    assert daily == {"Fn::Sub": "cron(${SweepSettleMinutes} 0 * * ? *)"}
