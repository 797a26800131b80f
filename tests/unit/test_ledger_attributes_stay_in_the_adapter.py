"""Only the ledger adapter knows the table's attribute names: everything else reads typed
records (domain/records.py). A `record["hold_status"]` or `item.get("lease_expires_at")`
anywhere else in functions/ or infra/ fails here."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = {
    "functions/meterbridge/adapters/ledger.py",
    "functions/meterbridge/adapters/dynamodb_table.py",
    "infra/meterbridge_local/ledger_table.py",  # the table's schema, for local stacks
}
# Names the ledger shares with the Stripe objects and usage answers it records (an invoice's
# `status`, a meter event's `identifier`): reading them from a Stripe object is not reading
# the table.
STRIPE_NAMES = {
    "event",
    "identifier",
    "invoice",
    "livemode",
    "period_end",
    "period_start",
    "reason",
    "status",
    "timestamp",
    "value",
}


def _strings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[a-z][a-z0-9_]*", node.value)
    }


def ledger_attribute_names() -> set[str]:
    """Every attribute-like string of the adapter: its keys, indexes and item fields."""
    names: set[str] = set()
    for relative in ADAPTER:
        names |= _strings(ROOT / relative)
    return names


def keyed_reads(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """`x["name"]` and `x.get("name")` (also pop/setdefault): a mapping read by key."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
        ):
            key = node.args[0]
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value, node.lineno


def test_the_adapter_has_attribute_names_to_look_for() -> None:
    names = ledger_attribute_names()
    assert {"pk", "sk", "hold_status", "lease_expires_at", "created_events"} <= names


def test_no_code_outside_the_ledger_adapter_reads_a_table_attribute() -> None:
    owned = ledger_attribute_names() - STRIPE_NAMES
    offenders = []
    for top in ("functions", "infra"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in ADAPTER:
                continue
            for name, line in keyed_reads(ast.parse(path.read_text())):
                if name in owned:
                    offenders.append(f"{relative}:{line} reads {name!r}")
    assert not offenders, "read the typed record instead:\n" + "\n".join(offenders)
