"""Check what `sam build` put into each function's package: the functions' own code and the
locked runtime dependencies at their locked versions, nothing else (no tests, no moto, no
local stack), with native code built for the function's architecture.

    python -m meterbridge_local.lambda_package [.aws-sam/build]

Reads the built template (.aws-sam/build/template.yaml) for each function's directory and
architecture, functions/requirements.txt for the pins, and each installed distribution's
RECORD for the files it owns. Exit 1 with one line per problem.
"""

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGE = "meterbridge"  # functions/meterbridge: the one package of our own
ALLOWED_FILES = {"requirements.txt"}  # sam build copies the CodeUri's requirements file too
# ELF e_machine of native extensions (bytes 18-19, little-endian) per Lambda architecture.
ELF_MACHINE = {"arm64": 183, "x86_64": 62}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(requirements: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (hash and marker lines aside)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


@dataclass(frozen=True)
class BuiltFunction:
    logical_id: str
    directory: Path
    architecture: str


def built_functions(build_dir: Path) -> list[BuiltFunction]:
    """Each AWS::Serverless::Function of the built template with its package directory."""

    # CloudFormation's short tags (!Ref, !GetAtt …) only need to load, not to resolve.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda _loader, _suffix, _node: None)
    template: dict[str, Any] = yaml.load((build_dir / "template.yaml").read_text(), Loader)
    defaults = (template.get("Globals") or {}).get("Function") or {}
    found = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = {**defaults, **(resource.get("Properties") or {})}
        architecture = (properties.get("Architectures") or ["x86_64"])[0]
        found.append(
            BuiltFunction(logical_id, build_dir / str(properties["CodeUri"]), architecture)
        )
    return found


def _distributions(directory: Path) -> dict[str, tuple[str, set[str]]]:
    """normalised name -> (version, top-level entries its RECORD owns) of each *.dist-info."""
    found = {}
    for info in directory.glob("*.dist-info"):
        name, version = _name_and_version(info)
        owned = {info.name, f"{info.name.removesuffix('.dist-info')}.data"}
        record = info / "RECORD"
        if record.exists():
            for line in record.read_text().splitlines():
                path = line.split(",", 1)[0]
                if path and not path.startswith(".."):
                    owned.add(path.split("/", 1)[0])
        found[normalise(name)] = (version, owned)
    return found


def _name_and_version(info: Path) -> tuple[str, str]:
    metadata = (
        (info / "METADATA").read_text(errors="replace") if (info / "METADATA").exists() else ""
    )
    fields = dict(line.split(": ", 1) for line in metadata.splitlines()[:20] if ": " in line)
    if "Name" in fields and "Version" in fields:
        return fields["Name"], fields["Version"]
    name, _, version = info.name.removesuffix(".dist-info").partition("-")
    return name, version


def check_function(
    function: BuiltFunction, pins: Mapping[str, str], source: Path = ROOT / "functions"
) -> list[str]:
    """Every problem with one function's package, as `<function>: <what is wrong>`."""
    problems: list[str] = []
    directory = function.directory
    if not directory.is_dir():
        return [f"{function.logical_id}: no package at {directory}"]
    distributions = _distributions(directory)
    for name, version in sorted(pins.items()):
        if name not in distributions:
            problems.append(f"locked dependency {name}=={version} is missing")
        elif distributions[name][0] != version:
            problems.append(f"{name} is {distributions[name][0]}, the lock says {version}")
    for name, (version, _) in sorted(distributions.items()):
        if name not in pins:
            problems.append(f"{name} {version} is installed but not in the lock's runtime set")
    owned = set().union(*(entries for _, entries in distributions.values()))
    for entry in sorted(path.name for path in directory.iterdir()):
        if entry in owned or entry in ALLOWED_FILES or entry == SOURCE_PACKAGE:
            continue
        problems.append(f"{entry} belongs to no locked distribution and is not our code")
    problems += _own_code_problems(directory / SOURCE_PACKAGE, source / SOURCE_PACKAGE)
    problems += _native_code_problems(directory, function.architecture)
    return [f"{function.logical_id}: {problem}" for problem in problems]


def _python_files(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _own_code_problems(built: Path, source: Path) -> list[str]:
    if not built.is_dir():
        return [f"{SOURCE_PACKAGE}/ is missing"]
    built_files, source_files = _python_files(built), _python_files(source)
    problems = [
        f"{SOURCE_PACKAGE}/{name} is not in functions/"
        for name in sorted(built_files - source_files)
    ]
    problems += [
        f"{SOURCE_PACKAGE}/{name} is missing" for name in sorted(source_files - built_files)
    ]
    return problems


def _native_code_problems(directory: Path, architecture: str) -> list[str]:
    wanted = ELF_MACHINE.get(architecture)
    problems = []
    for library in sorted(directory.rglob("*.so")):
        header = library.read_bytes()[:20]
        if header[:4] != b"\x7fELF":
            continue
        machine = int.from_bytes(header[18:20], "little")
        if machine != wanted:
            problems.append(
                f"{library.relative_to(directory)} is native code for ELF machine {machine},"
                f" not {architecture}"
            )
    return problems


def check_build(build_dir: Path, pins: Mapping[str, str]) -> list[str]:
    functions = built_functions(build_dir)
    if not functions:
        return [f"no functions in {build_dir / 'template.yaml'}"]
    return [problem for function in functions for problem in check_function(function, pins)]


def main(argv: Iterable[str] = ()) -> int:
    arguments = list(argv)
    build_dir = Path(arguments[0] if arguments else ROOT / ".aws-sam" / "build")
    if not (build_dir / "template.yaml").exists():
        print(f"{build_dir}/template.yaml not found: run `make build` first", file=sys.stderr)
        return 2
    pins = read_pins(ROOT / "functions" / "requirements.txt")
    problems = check_build(build_dir, pins)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    names = ", ".join(function.logical_id for function in built_functions(build_dir))
    print(
        f"{names}: only functions/meterbridge and the {len(pins)} locked runtime"
        " dependencies, at their locked versions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
