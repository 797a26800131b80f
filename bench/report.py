"""Writing results into docs/benchmarks.md: each benchmark owns one marked section."""

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "docs" / "benchmarks.md"

INTRO = """# Benchmarks

Produced by `make bench` (`.venv/bin/python -m bench`; one benchmark: `python -m bench NAME`).
Each section below is rewritten by its benchmark; figures are from the machine named in it.
Targets come from the design's "Performance targets". Nothing here is asserted by the tests.
"""


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, or append it."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine_info(*packages: str) -> str:
    """One line naming the machine and versions, so figures are read against their setting."""
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), "
        f"Python {platform.python_version()} ({sys.implementation.name})"
        + ("; " + ", ".join(versions) if versions else "")
    )
