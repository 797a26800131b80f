"""Copy the Stripe operations and schemas the project checks out of Stripe's OpenAPI spec.

Usage: python scripts/trim_openapi.py [SOURCE] [DEST]
SOURCE defaults to ../shared/stripe/openapi.spec3.json (stripe/openapi `latest/openapi.spec3.json`,
MIT); DEST to tests/fixtures/stripe_openapi_trimmed.json. Re-run it against a newer spec to
refresh, or after adding an operation below (the contract tests name a missing one).

Kept: the OPERATIONS below (every endpoint the Stripe billing emulator serves, which includes
every call meterbridge's code makes), and the closure of the schemas they reference, with three
cuts that keep the copy small without loosening what is checked:
- descriptions are dropped;
- an expandable field (`anyOf: [id string, $ref X]`) keeps its `$ref` only when X is one of
  EXPANDABLE (resources the project reads expanded); otherwise only the id string is allowed,
  which is what the API answers when nobody asks for `expand[]`;
- STUBBED schemas (payment objects the emulator never serves, reached through error details)
  become `{"type": "object"}`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("post", "/v1/customers"),
    ("get", "/v1/customers"),
    ("get", "/v1/customers/{customer}"),
    ("post", "/v1/customers/{customer}"),
    ("delete", "/v1/customers/{customer}"),
    ("post", "/v1/products"),
    ("get", "/v1/products"),
    ("get", "/v1/products/{id}"),
    ("post", "/v1/products/{id}"),
    ("delete", "/v1/products/{id}"),
    ("post", "/v1/prices"),
    ("get", "/v1/prices"),
    ("get", "/v1/prices/{price}"),
    ("post", "/v1/prices/{price}"),
    ("post", "/v1/billing/meters"),
    ("get", "/v1/billing/meters"),
    ("get", "/v1/billing/meters/{id}"),
    ("post", "/v1/billing/meters/{id}"),
    ("post", "/v1/billing/meters/{id}/deactivate"),
    ("post", "/v1/billing/meters/{id}/reactivate"),
    ("get", "/v1/billing/meters/{id}/event_summaries"),
    ("post", "/v1/billing/meter_events"),
    ("post", "/v1/billing/meter_event_adjustments"),
    ("post", "/v2/billing/meter_event_adjustments"),
    ("post", "/v2/billing/meter_event_session"),
    ("post", "/v2/billing/meter_event_stream"),
    ("post", "/v1/subscriptions"),
    ("get", "/v1/subscriptions"),
    ("get", "/v1/subscriptions/{subscription_exposed_id}"),
    ("post", "/v1/subscriptions/{subscription_exposed_id}"),
    ("delete", "/v1/subscriptions/{subscription_exposed_id}"),
    ("post", "/v1/subscription_items"),
    ("get", "/v1/subscription_items"),
    ("get", "/v1/subscription_items/{item}"),
    ("post", "/v1/subscription_items/{item}"),
    ("delete", "/v1/subscription_items/{item}"),
    ("get", "/v1/invoiceitems"),
    ("get", "/v1/invoiceitems/{invoiceitem}"),
    ("post", "/v1/test_helpers/test_clocks"),
    ("get", "/v1/test_helpers/test_clocks"),
    ("get", "/v1/test_helpers/test_clocks/{test_clock}"),
    ("delete", "/v1/test_helpers/test_clocks/{test_clock}"),
    ("post", "/v1/test_helpers/test_clocks/{test_clock}/advance"),
    ("get", "/v1/invoices"),
    ("post", "/v1/invoices/create_preview"),
    ("get", "/v1/invoices/{invoice}"),
    ("post", "/v1/invoices/{invoice}"),
    ("post", "/v1/invoices/{invoice}/finalize"),
    ("get", "/v1/invoices/{invoice}/lines"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("get", "/v2/core/events"),
    ("get", "/v2/core/events/{id}"),
    ("post", "/v1/webhook_endpoints"),
    ("get", "/v1/webhook_endpoints"),
    ("get", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("post", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("delete", "/v1/webhook_endpoints/{webhook_endpoint}"),
)
EXPANDABLE = frozenset(
    {
        "billing.meter",
        "customer",
        "deleted_customer",
        "deleted_product",
        "invoice",
        "invoiceitem",
        "plan",
        "price",
        "product",
        "subscription",
        "subscription_item",
        "test_helpers.test_clock",
    }
)
STUBBED = frozenset(
    {
        "account",
        "application",
        "bank_account",
        "card",
        "charge",
        "discount",
        "payment_intent",
        "payment_method",
        "setup_intent",
        "source",
        "tax_id",
        "tax_rate",
    }
)
# Fields Stripe's own example objects (fixtures3.json) carry though the spec does not list them:
# tolerated in answers, marked on the schema as "x-served-beyond-spec".
SERVED_BEYOND_SPEC = {
    "invoice": ["subscription"],
    "product": ["type"],
    "recurring": ["trial_period_days"],
    "subscription_item": ["plan"],
}
ORIGIN = {
    "source": "stripe/openapi latest/openapi.spec3.json",
    "license": "MIT (Copyright (c) Stripe, Inc.)",
    "note": "A trimmed copy produced by scripts/trim_openapi.py: the operations the project "
    "checks and the schemas they reference; descriptions dropped, unexpanded references "
    "reduced to their id, payment objects stubbed; x-served-beyond-spec names fields "
    "Stripe's example objects carry that the spec omits.",
}


def _rewrite(node: Any, reached: set[str]) -> Any:
    """The node without descriptions; schema names it references are added to `reached`."""
    if isinstance(node, list):
        return [_rewrite(item, reached) for item in node]
    if not isinstance(node, dict):
        return node
    if "x-expansionResources" in node and "anyOf" in node:
        kept = [
            alternative
            for alternative in node["anyOf"]
            if "$ref" not in alternative or _name(alternative["$ref"]) in EXPANDABLE
        ]
        node = {**node, "anyOf": kept}
    if "$ref" in node and _name(node["$ref"]) in STUBBED:
        return {"type": "object", "x-trimmed": _name(node["$ref"])}
    if "$ref" in node:
        reached.add(_name(node["$ref"]))
    return {
        key: _rewrite(value, reached)
        for key, value in node.items()
        # "description" is also a property name: drop only the text
        if not (key == "description" and isinstance(value, str)) and key not in _SKIPPED
    }


_SKIPPED = ("x-expansionResources", "x-stripeOperations", "x-stripeResource")


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    paths: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    for method, path in OPERATIONS:
        operation = spec["paths"][path][method]  # KeyError: Stripe has no such operation
        paths.setdefault(path, {})[method] = _rewrite(operation, pending)
    kept: dict[str, Any] = {}
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        reached: set[str] = set()
        kept[name] = _rewrite(schemas[name], reached)
        if name in SERVED_BEYOND_SPEC:
            kept[name]["x-served-beyond-spec"] = SERVED_BEYOND_SPEC[name]
        pending |= reached - set(kept)
    return {
        "x-origin": ORIGIN,
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {"schemas": {name: kept[name] for name in sorted(kept)}},
    }


def _dump(trimmed: dict[str, Any]) -> str:
    """Compact JSON with one line per operation and per schema: small, yet diffs stay readable."""

    def block(entries: dict[str, Any]) -> str:
        return ",\n".join(
            f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in entries.items()
        )

    head = {key: trimmed[key] for key in ("x-origin", "openapi", "info")}
    return (
        json.dumps(head, indent=1)[:-2]
        + ',\n "paths": {\n'
        + block(trimmed["paths"])
        + '\n },\n "components": {"schemas": {\n'
        + block(trimmed["components"]["schemas"])
        + "\n }}\n}\n"
    )


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared/stripe/openapi.spec3.json"
    dest = Path(argv[2]) if len(argv) > 2 else ROOT / "tests/fixtures/stripe_openapi_trimmed.json"
    trimmed = trim(json.loads(source.read_text()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(_dump(trimmed))
    print(
        f"wrote {len(OPERATIONS)} operations and {len(trimmed['components']['schemas'])} "
        f"schemas (API version {trimmed['info']['version']}) to {dest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
