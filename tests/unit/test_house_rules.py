"""Two rules of the house, read statically (ast): no class in functions/ grows past
CLASS_LIMIT lines, and docs/architecture.md's file map names every module of functions/
and infra/ (a new file gets its one job written down, a removed one leaves the map)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLASS_LIMIT = 250


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def class_sizes(source: str) -> dict[str, int]:
    """Each class's name (dotted when nested) and its length in lines, decorators included."""
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                name = f"{prefix}{child.name}"
                sizes[name] = (child.end_lineno or child.lineno) - first + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def test_class_sizes_are_measured_from_the_first_decorator_to_the_last_line() -> None:
    source = "@dataclass\nclass A:\n    x: int\n\n    class B:\n        y: int\n"
    assert class_sizes(source) == {"A": 6, "A.B": 2}


def test_no_class_in_functions_is_longer_than_the_limit() -> None:
    too_long = [
        f"{path.relative_to(ROOT)}: {name} has {size} lines"
        for path in _sources("functions")
        for name, size in class_sizes(path.read_text()).items()
        if size > CLASS_LIMIT
    ]
    assert too_long == [], f"split these along their jobs (limit {CLASS_LIMIT}): {too_long}"


def mapped_files(architecture: str) -> set[str]:
    """Paths in the file map: the first cell of each row of its tables, in backticks."""
    section = architecture.split("## File map", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+\.py)` \|", section, flags=re.M))


def test_the_file_map_names_every_module_of_functions_and_infra() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    mapped = mapped_files(architecture)
    present = {str(path.relative_to(ROOT)) for path in _sources("functions", "infra")}
    assert sorted(present - mapped) == [], "add these to docs/architecture.md, File map"
    assert sorted(mapped - present) == [], "these are gone: remove them from the file map"
