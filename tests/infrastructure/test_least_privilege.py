"""What each function may do (issue 13, item 9), read from the CloudFormation SAM generates,
and the edge's flood limits (item 8)."""

import ast
import re
from typing import Any

import pytest

from tests.infrastructure.template_support import TEMPLATE, sam_template, translated_template

ADAPTERS = TEMPLATE.parent / "functions" / "meterbridge" / "adapters"
# The ledger adapter and the table plumbing it is built on.
LEDGER_ADAPTER = (ADAPTERS / "ledger.py", ADAPTERS / "dynamodb_table.py")
# boto3 method -> IAM action, for the DynamoDB calls an adapter may make.
DYNAMODB_ACTIONS = {
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "transact_get_items": "dynamodb:GetItem",
    "describe_table": "dynamodb:DescribeTable",
}
# Helpers the local stack and the tests call to create the table; never the worker.
NOT_DEPLOYED = {"create_ledger_table"}


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(translated_template()["Resources"])


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in role["Properties"]["Policies"]:
        document = (policy["Fn::If"][1] if "Fn::If" in policy else policy)["PolicyDocument"]
        statements.extend(document["Statement"])
    return statements


def _by_action(role: dict[str, Any]) -> dict[str, list[Any]]:
    """Each action the role allows, with the resources it allows it on."""
    granted: dict[str, list[Any]] = {}
    for statement in _statements(role):
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        targets = statement["Resource"]
        for action in actions if isinstance(actions, list) else [actions]:
            granted.setdefault(action, []).extend(
                targets if isinstance(targets, list) else [targets]
            )
    return granted


def _ledger_calls() -> set[str]:
    """DynamoDB client methods the ledger adapter calls on the deployed path."""
    calls: set[str] = set()
    trees = [ast.parse(path.read_text()) for path in LEDGER_ADAPTER]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.FunctionDef) and node.name in NOT_DEPLOYED:
            node.body = []
    for node in (node for tree in trees for node in ast.walk(tree)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DYNAMODB_ACTIONS
            and re.search(r"client$", ast.unparse(node.func.value))
        ):
            calls.add(node.func.attr)
    return calls


def test_functions_use_their_own_roles_without_managed_policies(resources: dict[str, Any]):
    assert resources["WebhookFunction"]["Properties"]["Role"] == {
        "Fn::GetAtt": ["WebhookRole", "Arn"]
    }
    assert resources["WorkerFunction"]["Properties"]["Role"] == {
        "Fn::GetAtt": ["WorkerRole", "Arn"]
    }
    roles = {n for n, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
    # The sweep schedule's role is the template's own (continuous reporting).
    assert roles == {"WebhookRole", "WorkerRole", "SweepScheduleRole"}, (
        "SAM generated a role of its own"
    )
    for name in roles:
        assert "ManagedPolicyArns" not in resources[name]["Properties"]


def test_the_webhook_can_send_to_its_queue_and_read_only_the_signing_secrets(
    resources: dict[str, Any],
):
    granted = _by_action(resources["WebhookRole"])
    assert granted == {
        "sqs:SendMessage": [{"Fn::GetAtt": ["EventQueue", "Arn"]}],
        "secretsmanager:GetSecretValue": [{"Ref": "WebhookSecretArn"}],
        "logs:CreateLogStream": [{"Fn::GetAtt": ["WebhookLogGroup", "Arn"]}],
        "logs:PutLogEvents": [{"Fn::GetAtt": ["WebhookLogGroup", "Arn"]}],
        "xray:PutTraceSegments": ["*"],
        "xray:PutTelemetryRecords": ["*"],
    }


def test_the_worker_reads_the_api_key_its_queue_and_the_ledger_only(resources: dict[str, Any]):
    granted = _by_action(resources["WorkerRole"])
    queue = {"Fn::GetAtt": ["EventQueue", "Arn"]}
    for action in (
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ):
        assert granted.pop(action) == [queue], action
    # Its own queue (back-off, checks, continuations) and the DLQ (failures moved at once).
    dead_letters = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert granted.pop("sqs:SendMessage") == [queue, dead_letters]
    assert granted.pop("secretsmanager:GetSecretValue") == [{"Ref": "StripeSecretArn"}]
    log_group = [{"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}]
    assert granted.pop("logs:CreateLogStream") == granted.pop("logs:PutLogEvents") == log_group
    assert granted.pop("xray:PutTraceSegments") == granted.pop("xray:PutTelemetryRecords")
    ledger = [
        {"Fn::GetAtt": ["LedgerTable", "Arn"]},
        {"Fn::Sub": "${LedgerTable.Arn}/index/*"},
    ]
    usage_table_query = granted["dynamodb:Query"][len(ledger) :]  # the usage table's (If)
    assert len(usage_table_query) == 1
    granted["dynamodb:Query"] = granted["dynamodb:Query"][: len(ledger)]
    assert all(targets == ledger for targets in granted.values()), granted
    assert set(granted) == {"dynamodb:GetItem", "dynamodb:PutItem"} | {
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
    }


def test_the_sweep_schedule_can_only_queue_sweeps(resources: dict[str, Any]):
    role = resources["SweepScheduleRole"]
    assert role["Condition"] == resources["SweepSchedule"]["Condition"] == "Sweeps"
    assert _by_action(role) == {"sqs:SendMessage": [{"Fn::GetAtt": ["EventQueue", "Arn"]}]}
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_ledger_actions_are_exactly_the_ledger_adapters_calls(resources: dict[str, Any]):
    """A new ledger call (say batch_get_item) fails here until the role allows it, and an
    action nothing calls fails here until it is removed."""
    statement = next(s for s in _statements(resources["WorkerRole"]) if s.get("Sid") == "Ledger")
    assert set(statement["Action"]) == {DYNAMODB_ACTIONS[call] for call in _ledger_calls()}
    assert _ledger_calls() >= {"get_item", "put_item", "update_item", "query"}


def test_each_function_is_told_only_its_own_secret():
    template = sam_template()
    assert "STRIPE_SECRET_ARN" not in str(template["Globals"])
    webhook = template["Resources"]["WebhookFunction"]["Properties"]["Environment"]["Variables"]
    worker = template["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert webhook["STRIPE_WEBHOOK_SECRET_ARN"] == {"Ref": "WebhookSecretArn"}
    assert "STRIPE_SECRET_ARN" not in webhook
    assert worker["STRIPE_SECRET_ARN"] == {"Ref": "StripeSecretArn"}
    assert "STRIPE_WEBHOOK_SECRET_ARN" not in worker
    for parameter in ("StripeSecretArn", "WebhookSecretArn"):
        assert "Default" not in template["Parameters"][parameter], "a deploy must name it"


def test_every_log_group_has_a_retention_and_each_function_logs_to_its_own(
    resources: dict[str, Any],
):
    groups = {n: r for n, r in resources.items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert set(groups) == {"WebhookLogGroup", "WorkerLogGroup", "WebhookAccessLogGroup"}
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    for function in ("Webhook", "Worker"):
        logging = resources[f"{function}Function"]["Properties"]["LoggingConfig"]
        assert logging == {"LogGroup": {"Ref": f"{function}LogGroup"}}


def test_the_webhook_stage_is_throttled_and_access_logged(resources: dict[str, Any]):
    [stage] = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    properties = stage["Properties"]
    assert properties["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "WebhookThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "WebhookThrottlingRateLimit"},
    }
    access = properties["AccessLogSettings"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["WebhookAccessLogGroup", "Arn"]}
    assert "$context.requestId" in access["Format"]  # API Gateway requires it
    assert "$context.identity.sourceIp" in access["Format"]  # who flooded
    assert "\n" not in access["Format"]


def test_flood_defaults_keep_a_flood_below_the_reserved_concurrency():
    """API Gateway must refuse (429, Stripe retries) before Lambda throttles (a 500, which
    trips WebhookServerErrorsAlarm): reserved >= burst + rate x 0.5 s of cold start."""
    parameters = sam_template()["Parameters"]
    rate = parameters["WebhookThrottlingRateLimit"]["Default"]
    burst = parameters["WebhookThrottlingBurstLimit"]["Default"]
    reserved = parameters["WebhookReservedConcurrency"]["Default"]
    assert reserved >= burst + rate * 0.5
    function = sam_template()["Resources"]["WebhookFunction"]["Properties"]
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasWebhookReservedConcurrency",
            {"Ref": "WebhookReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_guided_deploy_sees_the_webhook_routes_authentication():
    """`sam deploy --guided` asks "<function> has no authentication. Is this okay?" for an
    Api/HttpApi event without Auth on the event or on its API (samcli auth_utils), and its
    default answer aborts. The route states its authentication: no authorizer (Stripe
    signs requests, it cannot sign them for IAM), the API closed to every other route."""
    resources = sam_template()["Resources"]
    for name, resource in resources.items():
        for event in (resource["Properties"].get("Events") or {}).values():
            if event["Type"] in ("Api", "HttpApi"):
                assert event["Properties"].get("Auth"), name
    route = resources["WebhookFunction"]["Properties"]["Events"]["StripeWebhook"]["Properties"]
    assert route["Auth"] == {"Authorizer": "NONE"}
    assert resources["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"


def test_the_translated_route_has_no_authorizer(resources: dict[str, Any]):
    [api] = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    post = api["Properties"]["Body"]["paths"]["/stripe/webhook"]["post"]
    assert post["security"] == [{"NONE": []}]
