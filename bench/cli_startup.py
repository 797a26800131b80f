"""bench:cli — start-up of the operator CLI, side by side with a baseline commit.

Each run is a fresh `python -c "from meterbridge_local.cli import main; main(argv)"`
process, timed from outside (spawn to exit). The baseline is the same command on the code
of BENCH_CLI_BASELINE (default 258c2b1, before the CLI imported lazily), exported with
`git archive` into a temporary directory and put first on PYTHONPATH, in the same venv, so
only our code differs. `status invoice` runs for real against a moto server and a ledger
table (exit 1: the invoice is unknown). A and B alternate run by run; medians are quoted.
"""

import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.report import REPO_ROOT, machine_info, write_section

BASELINE = os.environ.get("BENCH_CLI_BASELINE", "258c2b1")
RUNS = int(os.environ.get("BENCH_CLI_RUNS", "15"))
TARGET_HELP_SECONDS = 0.3


def _export(ref: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "-o", str(archive), ref, "functions", "infra"],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def _time(argv: list[str], environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import sys; from meterbridge_local.cli import main;"
         " sys.exit(main(sys.argv[1:]))", *argv],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return time.perf_counter() - started


def run() -> None:
    import boto3

    from meterbridge_local.aws import moto_server
    from meterbridge_local.ledger_table import create_ledger_table

    # Bytecode as a user's machine has it: written on the first run (warm-up), then reused.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as scratch, moto_server() as moto:
        baseline = _export(BASELINE, Path(scratch))
        table = f"bench-ledger-{uuid.uuid4().hex[:8]}"
        aws = {**base, **moto.environment()}
        local = moto.environment()
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=moto.endpoint_url,
            region_name=local["AWS_REGION"],
            aws_access_key_id=local["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=local["AWS_SECRET_ACCESS_KEY"],
        )
        create_ledger_table(dynamodb, table)
        commands = {
            "`meterbridge --help`": ["--help"],
            "`meterbridge status invoice in_x` (moto, real ledger read)": [
                "status", "invoice", "in_x", "--ledger-table", table,
            ],
        }  # fmt: skip
        now_path = f"{REPO_ROOT / 'functions'}{os.pathsep}{REPO_ROOT / 'infra'}"
        then_path = f"{baseline / 'functions'}{os.pathsep}{baseline / 'infra'}"
        rows = []
        for label, argv in commands.items():
            now_env = {**aws, "PYTHONPATH": now_path}
            then_env = {**aws, "PYTHONPATH": then_path}
            _time(argv, now_env)  # warm-up: writes .pyc for both trees
            _time(argv, then_env)
            now, then = [], []
            for _ in range(RUNS):
                now.append(_time(argv, now_env))
                then.append(_time(argv, then_env))
            ratios = [a / b for a, b in zip(now, then, strict=True)]
            rows.append((label, statistics.median(then), statistics.median(now),
                         statistics.median(ratios), min(now), max(now)))  # fmt: skip
    help_now = rows[0][2]
    verdict = "met" if help_now < TARGET_HELP_SECONDS else "**missed**"
    table_lines = [
        "| command | before (" + BASELINE + ") | now | now / before | now min to max |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {label} | {then * 1000:.0f} ms | {now * 1000:.0f} ms | {ratio:.2f}x |"
            f" {low * 1000:.0f} to {high * 1000:.0f} ms |"
            for label, then, now, ratio, low, high in rows
        ),
    ]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""## Operator CLI start-up

Measured {stamp} with `make bench` (`.venv/bin/python -m bench cli`; `BENCH_CLI_RUNS={RUNS}`)
on {machine_info("boto3", "rich", "moto", "cfn-lint")}.

Each run is a fresh interpreter running `meterbridge_local.cli.main(argv)`, timed from
spawn to exit; "before" is the same command on the code of `{BASELINE}` (exported with
`git archive`, first on `PYTHONPATH`, same venv), so only our code differs. The two
alternate run by run; medians of {RUNS} runs each, and the median of the paired ratios.
`status` reads a real (empty) ledger table on a moto server; it exits 1 (no such invoice).

{chr(10).join(table_lines)}

Target: `--help` under {TARGET_HELP_SECONDS} s ({verdict}: {help_now * 1000:.0f} ms).

Before, every command imported the whole local stack at start-up (moto, cfn-lint and
through it sympy, the Stripe emulator, the demo); now the parsers import argparse only and
each command imports its own work: `status` loads boto3, the ledger reader, pydantic
(the domain's models) and rich, and nothing of the local stack
(tests/integration/test_cli_imports.py checks the module lists).
"""
    write_section("cli", body)
    print(body)


if __name__ == "__main__":
    run()
