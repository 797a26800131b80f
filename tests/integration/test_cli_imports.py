"""`meterbridge --help` and the operator commands that talk to AWS load no local-stack
machinery: each runs in a fresh interpreter, which reports the modules it loaded."""

import json
import os
import subprocess
import sys
import uuid

import boto3

from meterbridge_local.aws import MotoServer
from meterbridge_local.ledger_table import create_ledger_table
from tests.support.ops import queue_with_dead_letters

LOCAL_STACK = ("moto", "cfnlint", "sympy", "flask", "werkzeug")
OURS_LOCAL = (
    "meterbridge_local.stripe_emulator",
    "meterbridge_local.stack",
    "meterbridge_local.demo",
    "meterbridge_local.lambda_runtime",
    "meterbridge_local.resources",
)
PROBE = """
import json, sys
from meterbridge_local.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _loaded(*argv: str, environment: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        env=environment or dict(os.environ),
        timeout=120,
        check=False,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), result.stdout


def _machinery(modules: set[str]) -> set[str]:
    return {
        module
        for module in modules
        if module.split(".")[0] in LOCAL_STACK or module.startswith(OURS_LOCAL)
    }


def test_help_loads_only_the_parsers():
    code, modules, output = _loaded("--help")
    assert code == 0
    assert "status" in output
    assert "dlq" in output
    assert _machinery(modules) == set()
    for heavy in ("boto3", "botocore", "rich", "stripe", "pydantic", "aws_lambda_powertools"):
        assert heavy not in modules


def test_status_and_dlq_load_no_local_stack(aws: MotoServer):
    table = f"ledger-{uuid.uuid4().hex[:8]}"
    create_ledger_table(boto3.client("dynamodb"), table)
    queue, _ = queue_with_dead_letters("imports", max_receive_count=3)
    environment = dict(os.environ)  # points boto3 at moto (the aws fixture)
    for exported in ("QUEUE_URL", "DEAD_LETTER_QUEUE_URL", "LEDGER_TABLE"):
        environment.pop(exported, None)  # only the flags below say where to look

    code, modules, output = _loaded(
        "status", "invoice", "in_none", "--ledger-table", table, environment=environment
    )
    assert code == 1  # ran for real: the ledger has no such invoice
    assert "No ledger record for invoice in_none" in output
    assert _machinery(modules) == set()
    assert "stripe" not in modules
    assert "aws_lambda_powertools" not in modules

    code, modules, output = _loaded("dlq", "list", "--queue-url", queue, environment=environment)
    assert code == 0
    assert "The dead-letter queue is empty." in output
    assert _machinery(modules) == set()
