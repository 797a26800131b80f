"""Alarms and dashboard, checked on the CloudFormation SAM generates (what AWS receives)."""

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from meterbridge import worker
from meterbridge.intake import Outcome
from meterbridge.observability import METRICS_NAMESPACE
from meterbridge.observability import SERVICE as SERVICE_NAME
from tests.infrastructure.template_support import TEMPLATE, sam_template, translated_template

TOPIC = {"Ref": "AlarmTopic"}
SERVICE = [{"Name": "service", "Value": "meterbridge"}]  # Powertools' default dimension


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(translated_template()["Resources"])


def _alarm(resources: dict[str, Any], name: str) -> dict[str, Any]:
    resource = resources[name]
    assert resource["Type"] == "AWS::CloudWatch::Alarm"
    properties: dict[str, Any] = resource["Properties"]
    assert properties["AlarmActions"] == [TOPIC]
    assert properties["OKActions"] == [TOPIC]
    assert properties["TreatMissingData"] == "notBreaching"
    assert f'"{name}"' in properties["AlarmDescription"]  # names its runbook section
    return properties


RUNBOOK = TEMPLATE.parent / "docs" / "runbook.md"

SINGLE_METRIC_ALARMS = {
    # name: (namespace, metric, dimensions, statistic, period, threshold, comparison)
    "DeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}],
        "Maximum",
        60,
        0,
        "GreaterThanThreshold",
    ),
    "OldestEventAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventQueue", "QueueName"]}}],
        "Maximum",
        60,
        {"Ref": "OldestMessageAlarmSeconds"},
        "GreaterThanThreshold",
    ),
    "WorkerErrorsAlarm": (
        "AWS/Lambda",
        "Errors",
        [{"Name": "FunctionName", "Value": {"Ref": "WorkerFunction"}}],
        "Sum",
        300,
        0,
        "GreaterThanThreshold",
    ),
    "WorkerThrottlesAlarm": (
        "AWS/Lambda",
        "Throttles",
        [{"Name": "FunctionName", "Value": {"Ref": "WorkerFunction"}}],
        "Sum",
        300,
        0,
        "GreaterThanThreshold",
    ),
    "WebhookServerErrorsAlarm": (
        "AWS/ApiGateway",
        "5xx",
        [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}, {"Name": "Stage", "Value": "$default"}],
        "Sum",
        300,
        {"Ref": "WebhookServerErrorAlarmThreshold"},
        "GreaterThanOrEqualToThreshold",
    ),
    "SignatureFailuresAlarm": (
        "Meterbridge",
        "SignatureFailures",
        SERVICE,
        "Sum",
        300,
        {"Ref": "SignatureFailureAlarmThreshold"},
        "GreaterThanOrEqualToThreshold",
    ),
    "ReportsLateAlarm": (
        "Meterbridge",
        "ReportsLate",
        SERVICE,
        "Sum",
        300,
        0,
        "GreaterThanThreshold",
    ),
    # The invoice guard's (docs/guard.md).
    **{
        alarm: ("Meterbridge", metric, SERVICE, "Sum", 300, 0, "GreaterThanThreshold")
        for alarm, metric in (
            ("ConfirmationMissingAlarm", "ConfirmationMissing"),
            ("InvoiceMismatchAlarm", "InvoiceLineMismatches"),
            ("MeterErrorReportsAlarm", "MeterEventErrors"),
            ("HoldLimitAlarm", "HoldLimitReached"),
            ("HoldReleaseFallbackAlarm", "HoldReleaseFallback"),
            ("SharedMeterAlarm", "SharedMeter"),
            ("UsageNotReportedAlarm", "UsageNotReported"),
        )
    },
}


@pytest.mark.parametrize("name", sorted(SINGLE_METRIC_ALARMS))
def test_single_metric_alarm(resources: dict[str, Any], name: str) -> None:
    namespace, metric, dimensions, statistic, period, threshold, compare = SINGLE_METRIC_ALARMS[
        name
    ]
    alarm = _alarm(resources, name)
    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert alarm["Dimensions"] == dimensions
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == (
        statistic,
        period,
        1,
    )
    assert alarm["Threshold"] == threshold
    assert alarm["ComparisonOperator"] == compare


def test_reports_failed_alarm_adds_failed_reports_and_failed_invoices(
    resources: dict[str, Any],
) -> None:
    """An invoice can fail before any report is planned (deleted customer, missing tenant):
    InvoicesFailed covers it, ReportsFailed covers single lines."""
    alarm = _alarm(resources, "ReportsFailedAlarm")
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    assert queries["failed"]["Expression"] == "FILL(reports, 0) + FILL(invoices, 0)"
    assert [q["Id"] for q in alarm["Metrics"] if q["ReturnData"]] == ["failed"]
    for query_id, metric in (("reports", "ReportsFailed"), ("invoices", "InvoicesFailed")):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": "Meterbridge",
            "MetricName": metric,
            "Dimensions": SERVICE,
        }
        assert (stat["Stat"], stat["Period"]) == ("Sum", 300)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_alarm_names_match_what_the_code_emits() -> None:
    """Metric names in alarms are the ones the functions emit (a rename would silence them)."""
    assert Outcome.SIGNATURE_INVALID.value == "SignatureFailures"
    source = "".join(
        (Path(worker.__file__).parent / name).read_text()
        for name in sorted(os.listdir(Path(worker.__file__).parent))
        if name.endswith(".py")
    )
    for metric in (
        "ReportsFailed",
        "InvoicesFailed",
        "ReportsLate",
        "ReportsSent",
        "ConfirmationMissing",
        "InvoiceLineMismatches",
        "MeterEventErrors",
        "HoldLimitReached",
        "HoldReleaseFallback",
        "SharedMeter",
        "UsageNotReported",
    ):
        assert f'"{metric}"' in source

    assert (METRICS_NAMESPACE, SERVICE_NAME) == ("Meterbridge", "meterbridge")


def test_every_alarm_is_covered_and_every_alarm_is_on_the_dashboard(
    resources: dict[str, Any],
) -> None:
    alarms = {n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == {
        "DeadLetterQueueAlarm",
        "OldestEventAlarm",
        "WorkerErrorsAlarm",
        "WorkerThrottlesAlarm",
        "WebhookServerErrorsAlarm",
        "SignatureFailuresAlarm",
        "ReportsFailedAlarm",
        "ReportsLateAlarm",
        "ConfirmationMissingAlarm",
        "InvoiceMismatchAlarm",
        "MeterErrorReportsAlarm",
        "HoldLimitAlarm",
        "HoldReleaseFallbackAlarm",
        "SharedMeterAlarm",
        "UsageNotReportedAlarm",
    }
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert {f"{name}.Arn" for name in alarms} <= set(re.findall(r"\$\{([^}]+)\}", body))


def test_every_alarm_has_its_runbook_section(resources: dict[str, Any]) -> None:
    """Each alarm's description sends the operator to a section of that name."""
    sections = set(re.findall(r"^## (\S+)$", RUNBOOK.read_text(), flags=re.MULTILINE))
    alarms = {n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms - sections == set()


def test_guard_widget_charts_every_guard_alarm_metric(resources: dict[str, Any]) -> None:
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    guard_widget = next(
        w
        for w in document["widgets"]
        if w["properties"].get("title", "").startswith("Invoice guard")
    )
    charted = {row[1] for row in guard_widget["properties"]["metrics"]}
    assert {
        "ConfirmationMissing",
        "InvoiceLineMismatches",
        "HoldLimitReached",
        "HoldReleaseFallback",
    } <= charted


def test_dashboard_body_is_json_once_substituted(resources: dict[str, Any]) -> None:
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    references = set(re.findall(r"\$\{([^}]+)\}", body))
    assert references <= {
        "AWS::Region",
        "HttpApi",
        "WebhookFunction",
        "WorkerFunction",
        "EventQueue.QueueName",
        "DeadLetterQueue.QueueName",
    } | {name for name in resources if name.endswith("Alarm")} | {
        f"{name}.Arn" for name in resources if name.endswith("Alarm")
    }
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    titles = [w["properties"].get("title") for w in document["widgets"]]
    assert "Pipeline: received → queued → sent / failed / late" in titles
    assert "Latency (p99, ms)" in titles
    assert "Queue depth and age" in titles
    edge = next(
        w for w in document["widgets"] if w["properties"].get("title", "").startswith("Web")
    )
    charted = [row[1] for row in edge["properties"]["metrics"]]
    assert charted[:3] == ["Count", "4xx", "SignatureFailures"]  # a flood: runbook
    assert {"ConcurrentExecutions", "Throttles"} <= set(charted)
    flow = next(
        w for w in document["widgets"] if w["properties"].get("title", "").startswith("Pip")
    )
    metric_names = [row[1] for row in flow["properties"]["metrics"]]
    assert metric_names[:2] == ["Count", "EventsQueued"]
    assert {"ReportsSent", "ReportsFailed", "ReportsLate"} <= set(metric_names)


def test_email_subscription_only_with_an_address() -> None:
    template = sam_template()
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


def test_oldest_message_threshold_defaults_well_inside_the_grace_period() -> None:
    parameters = sam_template()["Parameters"]
    oldest = parameters["OldestMessageAlarmSeconds"]["Default"]
    assert oldest == 900
    assert oldest <= parameters["GracePeriodSeconds"]["Default"] // 4
