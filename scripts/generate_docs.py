"""Writes the tables that would otherwise drift: README.md's parameter table (from
template.yaml) and docs/configuration.md (from the settings models and the template).

    .venv/bin/python scripts/generate_docs.py          # rewrite both
    .venv/bin/python scripts/generate_docs.py --check  # exit 1 if either is stale

tests/infrastructure/test_generated_docs.py runs the check in `make test`. The facts live
in `Description:` of each template parameter and `description=` of each settings field.
"""

import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from cfnlint.decode import decode_str
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))

from meterbridge.settings import WebhookSettings, WorkerSettings  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- parameters:begin (generated from template.yaml by scripts/generate_docs.py) -->"
END = "<!-- parameters:end -->"

FUNCTIONS = (
    ("Webhook", "meterbridge.handlers.webhook.handler", "WebhookFunction", WebhookSettings),
    ("Worker", "meterbridge.handlers.worker.handler", "WorkerFunction", WorkerSettings),
)


def load_template() -> dict[str, Any]:
    template, problems = decode_str(TEMPLATE.read_text())
    if problems:
        raise SystemExit(f"template.yaml does not parse: {problems}")
    return dict(template)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --- README: the template's parameters ---------------------------------------------------


def _parameter_default(spec: dict[str, Any]) -> str:
    if "Default" not in spec:
        return "**required**"
    default = spec["Default"]
    return f"`{default}`" if default != "" else "empty"


def _parameter_allowed(spec: dict[str, Any]) -> str:
    values = spec.get("AllowedValues")
    if values and len(values) > 6:
        return f"one of {len(values)} values, `{values[0]}` to `{values[-1]}`"
    if values:
        return ", ".join(f"`{value}`" for value in values)
    low, high = spec.get("MinValue"), spec.get("MaxValue")
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"≥ {low}"
    if high is not None:
        return f"≤ {high}"
    if "ConstraintDescription" in spec:
        return _cell(spec["ConstraintDescription"])
    return "any" if spec["Type"] != "CommaDelimitedList" else "comma-separated"


def parameter_table(template: dict[str, Any]) -> str:
    rows = [
        "| parameter | default | allowed | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, spec in template["Parameters"].items():
        if not spec.get("Description"):
            raise SystemExit(f"template.yaml: parameter {name} has no Description")
        rows.append(
            f"| `{name}` | {_parameter_default(spec)} | {_parameter_allowed(spec)}"
            f" | {_cell(spec['Description'])} |"
        )
    return "\n".join(rows)


def readme_with_table(readme: str, template: dict[str, Any]) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {BEGIN} … {END}")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{parameter_table(template)}\n{END}{tail}"


# --- docs/configuration.md: each function's variables ------------------------------------


def _merged_variables(template: dict[str, Any], function: str) -> dict[str, Any]:
    globals_ = template.get("Globals", {}).get("Function", {})
    own = template["Resources"][function]["Properties"]
    return {
        **globals_.get("Environment", {}).get("Variables", {}),
        **own.get("Environment", {}).get("Variables", {}),
    }


def _references(value: Any) -> list[str]:
    """Names a template value refers to: Ref targets and ${…} in Sub, in order."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref":
                found.append(argument)
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else argument[0]
                for part in text.split("${")[1:]:
                    found.append(part.split("}")[0].split(".")[0])
            elif key == "Fn::If":
                for branch in argument[1:]:
                    found.extend(_references(branch))
            else:
                found.extend(_references(argument))
    elif isinstance(value, list):
        for item in value:
            found.extend(_references(item))
    return list(dict.fromkeys(name for name in found if not name.startswith("AWS::")))


def _set_by(template: dict[str, Any], value: Any) -> str:
    if value is None:
        return "—"
    if not isinstance(value, dict | list):
        return f"fixed: `{value}`"
    names = _references(value)
    parameters = [f"`{n}`" for n in names if n in template["Parameters"]]
    resources = [f"the stack's `{n}`" for n in names if n in template["Resources"]]
    return ", ".join(parameters + resources)


def _default(field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined:
        return "**required**"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, frozenset):
        return f"`{','.join(sorted(default))}`" if default else "empty"
    return f"`{default}`"


def _allowed(field: FieldInfo) -> str:
    bounds: dict[str, Any] = {}
    for constraint in field.metadata:  # annotated_types' Ge, Gt, Le, Lt, MinLen
        for kind in ("ge", "gt", "le", "lt", "min_length"):
            value = getattr(constraint, kind, None)
            if value is not None:
                bounds[kind] = value
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return ", ".join(f"`{value}`" for value in get_args(annotation))
    if annotation is bool:
        return "`true`, `false`"
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']} to {bounds['le']}"
    parts = [
        f"{symbol} {bounds[kind]}"
        for kind, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
        if kind in bounds
    ]
    if "min_length" in bounds:
        parts.append("not empty")
    return ", ".join(parts) or "any"


def _field_groups(model: type[BaseModel]) -> list[tuple[str, list[str]]]:
    """The model's fields by the settings class that declares them, base classes first."""
    groups: list[tuple[str, list[str]]] = []
    for cls in reversed(model.__mro__):
        names = [
            name for name in vars(cls).get("__annotations__", {}) if name in model.model_fields
        ]
        if names:
            summary = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
            groups.append((summary, names))
    return groups


def function_table(template: dict[str, Any], function: str, model: type[BaseModel]) -> str:
    variables = _merged_variables(template, function)
    tables = []
    for summary, names in _field_groups(model):
        rows = [
            summary,
            "",
            "| variable | default | allowed | set by the template from | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in names:
            field = model.model_fields[name]
            if not field.description:
                raise SystemExit(f"settings.py: {model.__name__}.{name} has no description")
            alias = field.alias or name
            rows.append(
                f"| `{alias}` | {_default(field)} | {_allowed(field)}"
                f" | {_set_by(template, variables.get(alias))} | {_cell(field.description)} |"
            )
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def unmodelled_variables(
    template: dict[str, Any], function: str, model: type[BaseModel]
) -> list[str]:
    """Variables the template sets that the function's settings model does not read."""
    fields = {field.alias or name for name, field in model.model_fields.items()}
    return [name for name in _merged_variables(template, function) if name not in fields]


def configuration_doc(template: dict[str, Any]) -> str:
    sections = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/generate_docs.py from functions/meterbridge/settings.py and"
        " template.yaml; edit those, then run it. -->",
        "",
        "Each function reads its settings from environment variables once, at cold start; a"
        " missing or invalid one stops the function with an error naming the variable. In AWS"
        ' the SAM template sets them from its parameters (column "set by the template from";'
        " the README's parameter table says what each parameter means); a variable the"
        " template does not set keeps its default. Locally `meterbridge local` sets them.",
    ]
    for title, entry_point, function, model in FUNCTIONS:
        powertools = [
            f"`{name}`"
            for name in unmodelled_variables(template, function, model)
            if name.startswith("POWERTOOLS_")
        ]
        sections += [
            "",
            f"## {title} (`{entry_point}`)",
            "",
            function_table(template, function, model),
            "",
            f"The template also sets Powertools' own {', '.join(powertools)}.",
        ]
    sections += [
        "",
        "Not a setting of the model: `HTTPS_PROXY` (or `https_proxy`) is read once at the"
        " worker's cold start by its Stripe transport and sends every Stripe call through that"
        " proxy; hosts named in `NO_PROXY` (or `no_proxy`) are reached directly.",
        "",
    ]
    return "\n".join(sections)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    template = load_template()
    outputs = {
        README: readme_with_table(README.read_text(), template),
        CONFIGURATION: configuration_doc(template),
    }
    stale = [path for path, text in outputs.items() if path.read_text() != text]
    if check:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is stale: run .venv/bin/python scripts/generate_docs.py"
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
