"""Shared fixtures: one moto server per test session, reached by the real boto3."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from meterbridge.observability import metrics
from meterbridge_local.aws import MotoServer

# Python 3.13's pdb (which pytest imports) imports readline, and GNU readline exports COLUMNS=80
# and LINES=24 to the C environment: the worker processes pytest-xdist starts would inherit
# an 80-column terminal this process never had, and wrap the operator CLI's output.
for _name in ("COLUMNS", "LINES"):
    if _name not in os.environ:
        os.unsetenv(_name)


# Tests that start whole local stacks in their own processes (`meterbridge demo`, `local`)
# run one after another on one pytest-xdist worker: several at once on a 2-core machine
# starve each other past their timeouts.
LOCAL_STACK_TESTS = ("tests/e2e/", "tests/integration/test_local_runtime.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one process more than cores. A quarter of the serial suite's time is spent
    waiting (queue drains, stream lingers, subprocesses), which the extra process fills."""
    return (os.process_cpu_count() or 1) + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` (pyproject.toml), with the local-stack files as one file.

    Overrides `_split_scope`, the method by which xdist's own LoadFileScheduling differs from
    LoadScopeScheduling (its `--dist loadgroup` marks are lost on pytest 9's node ids)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesWithLocalStacksTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "local stacks" if path.startswith(LOCAL_STACK_TESTS) else path

    return FilesWithLocalStacksTogether(config, log)


@pytest.fixture(autouse=True)
def no_metrics_from_earlier_tests() -> None:
    """Powertools keeps metrics in one buffer per process until a handler flushes it: a test
    that steps the worker without its handler would otherwise leave metrics for whichever
    test of the process flushes next (pytest-xdist runs the files in any order)."""
    metrics.clear_metrics()


@pytest.fixture(scope="session")
def aws() -> Iterator[MotoServer]:
    """moto in server mode on loopback; the environment points boto3 at it for the session."""
    server = MotoServer().start()
    saved = dict(os.environ)
    os.environ.update(server.environment())
    try:
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
