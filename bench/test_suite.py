"""bench:tests — how long the test suite takes, side by side with a baseline commit.

Three commands alternate round by round on the same machine, all in the project's venv:
- before: the suite of BENCH_TESTS_BASELINE (default 258c2b1, before issue 11), exported
  with `git archive` into a temporary directory, its code first on PYTHONPATH, run as it
  ran then (one process, no xdist);
- now, one process: today's suite with `-n 0`;
- now: today's suite as `make test` runs it (pytest-xdist, `-n auto --dist loadfile`).
Each is `python -m pytest -q -p no:randomly` timed from spawn to exit; the ruff and mypy
steps of `make test` are left out (the same few seconds either way). Medians are quoted.
"""

import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report import REPO_ROOT, machine_info, write_section

BASELINE = os.environ.get("BENCH_TESTS_BASELINE", "258c2b1")
ROUNDS = int(os.environ.get("BENCH_TESTS_RUNS", "1"))


def _export(ref: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def _run(label: str, cwd: Path, extra: list[str], environment: dict[str, str]) -> tuple[float, str]:
    print(f"   {label} ...", end=" ", flush=True)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *extra],
        cwd=cwd, env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    summary = next(
        (line for line in reversed(result.stdout.splitlines()) if re.search(r" in [0-9.]+s", line)),
        "no summary",
    )
    counts = re.sub(r"=+|\s+in [0-9.]+s.*", "", summary).strip()
    print(f"{elapsed:.1f} s ({counts})", flush=True)
    for line in result.stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            print(f"     {line}", flush=True)
    return elapsed, counts


def run() -> None:
    base = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    with tempfile.TemporaryDirectory() as scratch:
        baseline = _export(BASELINE, Path(scratch))
        then_path = os.pathsep.join(str(baseline / part) for part in ("functions", "infra", ""))
        commands = {
            f"before ({BASELINE}), one process": (
                baseline,
                ["-p", "no:xdist"],
                {**base, "PYTHONPATH": then_path},
            ),
            "now, one process (`-n 0`)": (REPO_ROOT, ["-n", "0"], base),
            "now, as `make test` runs it (xdist)": (REPO_ROOT, [], base),
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        counts: dict[str, str] = {}
        for round_number in range(ROUNDS):
            print(f"  round {round_number + 1} of {ROUNDS}", flush=True)
            for label, (cwd, extra, environment) in commands.items():
                elapsed, counts[label] = _run(label, cwd, extra, environment)
                times[label].append(elapsed)
    medians = {label: statistics.median(values) for label, values in times.items()}
    before = medians[f"before ({BASELINE}), one process"]
    rows = [
        "| suite | tests | median wall time | vs before |",
        "| --- | --- | ---: | ---: |",
        *(
            f"| {label} | {counts[label]} | {median:.0f} s | {median / before:.2f}x |"
            for label, median in medians.items()
        ),
    ]
    serial, parallel = list(medians.values())[1:]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    then_tests = _tests(counts[f"before ({BASELINE}), one process"])
    now_tests = _tests(counts["now, as `make test` runs it (xdist)"])
    body = f"""## Test suite

Measured {stamp} with `.venv/bin/python -m bench tests` (`BENCH_TESTS_RUNS={ROUNDS}`
rounds, the three commands alternating) on {machine_info("pytest", "pytest-xdist", "moto")}.

{chr(10).join(rows)}

The same tests in one process and as `make test` runs them: {serial:.0f} s → {parallel:.0f} s
({1 - parallel / serial:.0%} less wall time). Against the baseline commit the suites differ:
today's adds the billing-scenario matrix, the contract, fuzz and fault tests, the fake-backed
unit tests and continuous reporting's; per test, {before / max(1, then_tests):.2f} s before
and {parallel / max(1, now_tests):.2f} s now. Left out: the ruff and mypy steps of
`make test` (the same few seconds for both trees).
"""
    write_section("tests", body)
    print(body)


def _tests(counts: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) (?:passed|failed|xfailed|xpassed)", counts))


if __name__ == "__main__":
    run()
