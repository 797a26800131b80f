"""The Lambda package installs what the code was tested with: the pins of uv.lock."""

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from meterbridge_local.lambda_package import (
    BuiltFunction,
    check_function,
    normalise,
    read_pins,
)

ROOT = Path(__file__).resolve().parents[2]


def _lock() -> dict[str, dict[str, Any]]:
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {normalise(package["name"]): package for package in packages}


def _runtime_closure(lock: dict[str, dict[str, Any]]) -> dict[str, str]:
    """name -> locked version of everything the project's runtime dependencies pull in."""
    found: dict[str, str] = {}
    pending = list(lock["meterbridge"]["dependencies"])
    while pending:
        dependency = pending.pop()
        name = normalise(dependency["name"])
        package = lock[name]
        extras = package.get("optional-dependencies", {})
        for extra in dependency.get("extra", []):
            pending += extras.get(extra, [])
        if name not in found:
            found[name] = package["version"]
            pending += package.get("dependencies", [])
    return found


def test_lambda_requirements_are_the_locked_runtime_closure():
    pins = read_pins(ROOT / "functions" / "requirements.txt")
    assert pins == _runtime_closure(_lock())
    assert {"stripe", "boto3", "botocore", "pydantic", "aws-lambda-powertools"} <= set(pins)


def test_every_lambda_requirement_carries_hashes():
    text = (ROOT / "functions" / "requirements.txt").read_text()
    entries = [block for block in text.split("\n") if "==" in block and not block.startswith("#")]
    assert entries
    # Each pin line continues onto --hash lines, so pip (sam build) checks every download.
    assert all(line.rstrip().endswith("\\") for line in entries)


def test_runtime_dependencies_exclude_local_tooling():
    closure = _runtime_closure(_lock())
    for tool in ("moto", "pytest", "cfn-lint", "rich", "ruff", "pyyaml", "uv"):
        assert tool not in closure


def test_the_venv_runs_on_the_lambda_runtime_python():
    import sys

    template = (ROOT / "template.yaml").read_text()
    assert f"Runtime: python{sys.version_info.major}.{sys.version_info.minor}" in template


# --------------------------------------------------------------------------- the checker


@pytest.fixture
def package(tmp_path: Path) -> BuiltFunction:
    """A clean package: our code and one locked distribution with its RECORD."""
    directory = tmp_path / "WorkerFunction"
    shutil.copytree(
        ROOT / "functions" / "meterbridge",
        directory / "meterbridge",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    _distribution(directory, "six", "1.17.0", ["six.py"])
    return BuiltFunction("WorkerFunction", directory, "arm64")


def _distribution(directory: Path, name: str, version: str, files: list[str]) -> None:
    info = directory / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for file in files:
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_text("")
    records = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{record},,\n" for record in records))


def test_a_clean_package_passes(package: BuiltFunction):
    assert check_function(package, {"six": "1.17.0"}) == []


def test_the_checker_names_every_kind_of_stray(package: BuiltFunction):
    _distribution(package.directory, "moto", "5.2.5", ["moto/__init__.py"])
    (package.directory / "tests").mkdir()
    (package.directory / "meterbridge" / "conftest.py").write_text("")
    elf = b"\x7fELF" + bytes(14) + (62).to_bytes(2, "little")  # x86-64
    (package.directory / "fast.so").write_bytes(elf)

    problems = check_function(package, {"six": "1.16.0", "stripe": "16.1.0"})

    assert "WorkerFunction: six is 1.17.0, the lock says 1.16.0" in problems
    assert "WorkerFunction: locked dependency stripe==16.1.0 is missing" in problems
    assert "WorkerFunction: moto 5.2.5 is installed but not in the lock's runtime set" in problems
    assert "WorkerFunction: tests belongs to no locked distribution and is not our code" in problems
    assert "WorkerFunction: meterbridge/conftest.py is not in functions/" in problems
    assert any("fast.so is native code for ELF machine 62, not arm64" in p for p in problems)
