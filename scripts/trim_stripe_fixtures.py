"""Copy the Stripe example objects the project's tests use out of Stripe's fixtures3.json.

Usage: python scripts/trim_stripe_fixtures.py [SOURCE] [DEST]
SOURCE defaults to ../shared/stripe/fixtures3.json (stripe/openapi `openapi/fixtures3.json`, MIT);
DEST to tests/fixtures/stripe_fixtures.json. Re-run it against a newer fixtures file to refresh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = (
    "billing.meter",
    "billing.meter_event",
    "billing.meter_event_adjustment",
    "billing.meter_event_summary",
    "customer",
    "event",
    "invoice",
    "invoiceitem",
    "line_item",
    "plan",
    "price",
    "product",
    "subscription",
    "subscription_item",
    "test_helpers.test_clock",
    "webhook_endpoint",
)
ORIGIN = {
    "source": "stripe/openapi openapi/fixtures3.json",
    "license": "MIT (Copyright (c) Stripe, Inc.)",
    "note": "Stripe's published example objects, unchanged, keyed by resource name; "
    "produced by scripts/trim_stripe_fixtures.py.",
}


def trim(source: Path, dest: Path) -> list[str]:
    resources = json.loads(source.read_text())["resources"]
    kept = {name: resources[name] for name in RESOURCES if name in resources}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"_origin": ORIGIN, **kept}, indent=2, sort_keys=False) + "\n")
    return sorted(kept)


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared/stripe/fixtures3.json"
    dest = Path(argv[2]) if len(argv) > 2 else ROOT / "tests/fixtures/stripe_fixtures.json"
    kept = trim(source, dest)
    print(f"wrote {len(kept)} resources to {dest}: {', '.join(kept)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
