"""The Lambda package installs what the code was tested with."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _requirements(lines: list[str]) -> set[str]:
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_lambda_requirements_match_the_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lambda_requirements = (ROOT / "functions" / "requirements.txt").read_text().splitlines()
    assert _requirements(lambda_requirements) == set(project["dependencies"])


def test_runtime_dependencies_exclude_local_tooling():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    for tool in ("moto", "pytest", "cfn-lint", "rich", "ruff"):
        assert tool not in runtime
