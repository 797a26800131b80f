"""The template's Rules refuse parameter combinations AWS would accept but cannot run.

CloudFormation evaluates Rules before creating or updating anything; cfn-lint checks their
shape but not what they decide, nor the functions nested inside them. These tests evaluate
the rules the way CloudFormation does: every parameter value is its text, and only the
documented rule functions exist.
"""

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from meterbridge_local.aws import MotoServer
from meterbridge_local.resources import create_resources
from tests.infrastructure.template_support import (
    EXAMPLE_PARAMETERS,
    sam_template,
    translated_template,
)

# CloudFormation's rule functions; Ref reads a parameter. Nothing else (Join, Split, Sub,
# If, Select) is evaluated in Rules.
RULE_FUNCTIONS = {
    "Fn::And",
    "Fn::Contains",
    "Fn::EachMemberEquals",
    "Fn::EachMemberIn",
    "Fn::Equals",
    "Fn::Not",
    "Fn::Or",
    "Fn::RefAll",
    "Fn::ValueOf",
    "Fn::ValueOfAll",
    "Ref",
}


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    """The Rules AWS receives: SAM's output, not only our source."""
    return dict(translated_template().get("Rules", {}))


def _functions(expression: Any) -> set[str]:
    if isinstance(expression, list):
        return set().union(*map(_functions, expression))
    if isinstance(expression, dict):
        return set(expression) | set().union(*map(_functions, expression.values()))
    return set()


def _evaluate(expression: Any, values: Mapping[str, str]) -> Any:
    """Rule functions compare text; a literal that is not text would never match."""
    if isinstance(expression, str):
        return expression
    if isinstance(expression, list):
        return [_evaluate(item, values) for item in expression]
    assert isinstance(expression, dict), expression
    assert len(expression) == 1, expression
    ((function, argument),) = expression.items()
    if function == "Ref":
        return values[argument]
    arguments = _evaluate(argument, values)
    if function == "Fn::Equals":
        left, right = arguments
        assert isinstance(left, str), expression
        assert isinstance(right, str), expression
        return left == right
    if function == "Fn::Contains":
        candidates, value = arguments
        assert all(isinstance(c, str) for c in candidates), expression
        return value in candidates
    if function == "Fn::Not":
        [inner] = arguments
        return not inner
    if function == "Fn::And":
        return all(arguments)
    if function == "Fn::Or":
        return any(arguments)
    raise AssertionError(f"{function} is not evaluated by these tests")


@pytest.fixture(scope="module")
def refusals(rules: dict[str, Any]) -> Callable[..., list[str]]:
    """AssertDescription of every failed assertion for given parameter overrides, as
    CloudFormation would report them. Ref gives a parameter's text, its default if none."""
    declared = sam_template()["Parameters"]
    defaults = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}

    def refused(**overrides: str) -> list[str]:
        assert set(overrides) <= set(declared), set(overrides) - set(declared)
        values = defaults | EXAMPLE_PARAMETERS | overrides
        failed = []
        for rule in rules.values():
            if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], values):
                continue
            for assertion in rule["Assertions"]:
                if not _evaluate(assertion["Assert"], values):
                    failed.append(assertion["AssertDescription"])
        return failed

    return refused


def test_rules_use_only_rule_functions_and_declared_parameters(rules: dict[str, Any]) -> None:
    assert rules == sam_template()["Rules"]  # SAM passes them through unchanged
    parameters = set(sam_template()["Parameters"])
    for name, rule in rules.items():
        assert _functions(rule.get("RuleCondition")) <= RULE_FUNCTIONS, name
        for assertion in rule["Assertions"]:
            assert _functions(assertion["Assert"]) <= RULE_FUNCTIONS, name
            assert assertion["AssertDescription"].strip(), name
        assert _referenced(rule) <= parameters, name


def _referenced(expression: Any) -> set[str]:
    if isinstance(expression, list):
        return set().union(*map(_referenced, expression))
    if isinstance(expression, dict):
        own = {expression["Ref"]} if "Ref" in expression else set()
        return own | set().union(*map(_referenced, expression.values()))
    return set()


def test_the_default_deploy_passes_every_rule(refusals: Callable[..., list[str]]) -> None:
    assert refusals() == []


def test_batching_window_rule_guards_the_event_source_mapping() -> None:
    """The rule checks the parameters the SQS event source really takes its values from."""
    mappings = [
        r["Properties"]
        for r in translated_template()["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert [(m["BatchSize"], m["MaximumBatchingWindowInSeconds"]) for m in mappings] == [
        ({"Ref": "WorkerBatchSize"}, {"Ref": "WorkerBatchingWindowSeconds"})
    ]


def test_a_batch_above_ten_without_batching_window_is_refused(
    refusals: Callable[..., list[str]],
) -> None:
    """Lambda: BatchSize > 10 needs MaximumBatchingWindowInSeconds >= 1, for every size the
    parameter allows."""
    size = sam_template()["Parameters"]["WorkerBatchSize"]
    for batch in range(size["MinValue"], size["MaxValue"] + 1):
        for window in (0, 1, 300):
            refused = refusals(WorkerBatchSize=str(batch), WorkerBatchingWindowSeconds=str(window))
            if batch > 10 and window == 0:
                assert len(refused) == 1, (batch, window)
                assert "WorkerBatchSize above 10" in refused[0]
                assert "WorkerBatchingWindowSeconds of at least 1" in refused[0]
            else:
                assert refused == [], (batch, window)


@pytest.mark.parametrize(
    ("usage_source", "usage_table", "refused_because"),
    [
        ("dynamodb://", "", "set UsageTableName"),
        ("https://usage.example.com/usage", "usage-records", "UsageTableName is read only"),
        ("python://billing.usage:query", "usage-records", "UsageTableName is read only"),
        ("dynamodb://", "usage-records", None),
        ("https://usage.example.com/usage", "", None),
        ("python://billing.usage:query", "", None),
    ],
)
def test_usage_table_and_dynamodb_usage_source_go_together(
    refusals: Callable[..., list[str]],
    usage_source: str,
    usage_table: str,
    refused_because: str | None,
) -> None:
    refused = refusals(UsageSource=usage_source, UsageTableName=usage_table)
    if refused_because is None:
        assert refused == []
    else:
        assert len(refused) == 1
        assert refused_because in refused[0]


def test_the_worker_reads_the_usage_table_it_is_granted(aws: MotoServer) -> None:
    """USAGE_SOURCE and the read policy both come from UsageTableName, under one condition."""
    local = create_resources(
        aws.endpoint_url,
        parameter_overrides={"UsageSource": "dynamodb://", "UsageTableName": "usage-records"},
        stack_name="rules-usage-table",
    )
    assert local.functions["WorkerFunction"].environment["USAGE_SOURCE"] == (
        "dynamodb://usage-records"
    )
    template = sam_template()["Resources"]
    worker = template["WorkerFunction"]["Properties"]
    role_policies = template["WorkerRole"]["Properties"]["Policies"]
    [(condition, policy, _)] = [
        p["Fn::If"] for p in role_policies if isinstance(p, dict) and "Fn::If" in p
    ]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "dynamodb:Query"
    assert "${UsageTableName}" in statement["Resource"]["Fn::Sub"]
    assert worker["Environment"]["Variables"]["USAGE_SOURCE"]["Fn::If"][0] == condition


def test_without_a_usage_table_the_worker_gets_the_usage_source_as_given(
    aws: MotoServer,
) -> None:
    local = create_resources(
        aws.endpoint_url,
        parameter_overrides={"UsageSource": "https://usage.example.com/usage"},
        stack_name="rules-usage-http",
    )
    assert local.functions["WorkerFunction"].environment["USAGE_SOURCE"] == (
        "https://usage.example.com/usage"
    )
