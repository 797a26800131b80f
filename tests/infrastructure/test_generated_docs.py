"""README.md's parameter table and docs/configuration.md are generated from template.yaml
and the settings models (scripts/generate_docs.py): a change to either without `make docs`
fails here, and so does a template variable no settings model reads."""

import importlib.util
import re
from types import ModuleType
from typing import Any

import pytest

from tests.infrastructure.template_support import TEMPLATE, sam_template

ROOT = TEMPLATE.parent


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_docs", ROOT / "scripts" / "generate_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_parameter_table_is_generated_from_the_template(generator: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme == generator.readme_with_table(readme, generator.load_template()), (
        "README.md's parameter table is stale: run `make docs`"
    )


def test_configuration_doc_is_generated_from_settings_and_template(generator: Any) -> None:
    expected = generator.configuration_doc(generator.load_template())
    assert (ROOT / "docs" / "configuration.md").read_text() == expected, (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_every_parameter_is_described_and_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, spec in sam_template()["Parameters"].items():
        assert spec.get("Description", "").strip(), name
        assert f"| `{name}` |" in readme, name


def test_the_template_sets_only_variables_the_functions_read(generator: Any) -> None:
    """A misspelt or retired variable in template.yaml would be silently ignored."""
    template = generator.load_template()
    for _, _, function, model in generator.FUNCTIONS:
        ignored = [
            name
            for name in generator.unmodelled_variables(template, function, model)
            if not name.startswith("POWERTOOLS_")
        ]
        assert ignored == [], (function, ignored)


def test_every_parameter_is_used_by_the_template() -> None:
    template = sam_template()
    text = TEMPLATE.read_text()
    for name in template["Parameters"]:
        uses = re.findall(rf"(?:!Ref {name}\b|\$\{{{name}\}}|Ref: {name}\b)", text)
        assert uses, f"parameter {name} is declared but never used"


def test_every_settings_field_has_a_description(generator: Any) -> None:
    for _, _, _, model in generator.FUNCTIONS:
        for name, field in model.model_fields.items():
            assert len(field.description or "") > 20, (model.__name__, name)


def test_the_documented_limiter_and_caps_match_the_code() -> None:
    """The drift issue 11 found: a 429 'halves' the rate (it is 0.8) and the template
    'caps at 64' (it is 128)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert "halves" not in text
    assert "caps at 64" not in text
    assert sam_template()["Parameters"]["BatchConcurrency"]["MaxValue"] == 128
