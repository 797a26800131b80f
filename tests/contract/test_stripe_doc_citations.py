"""Every `S-…` id the code cites names a line of docs/stripe.md (the Stripe facts reference)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"\bS-[A-Z]+-\d+\b")


def test_every_cited_stripe_fact_is_in_docs_stripe_md() -> None:
    doc = (ROOT / "docs" / "stripe.md").read_text()
    anchors = set(re.findall(r'<a id="(S-[A-Z]+-\d+)"></a>', doc))
    cited: dict[str, set[str]] = {}
    for folder in ("functions", "infra", "tests", "scripts", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for fact in CITATION.findall(path.read_text()):
                cited.setdefault(fact, set()).add(str(path.relative_to(ROOT)))
    missing = {fact: sorted(paths) for fact, paths in cited.items() if fact not in anchors}
    assert missing == {}
    assert len(cited) >= 20  # the emulator cites its rules


def test_each_fact_has_one_anchor_and_a_certainty() -> None:
    doc = (ROOT / "docs" / "stripe.md").read_text()
    lines = [line for line in doc.splitlines() if line.startswith("- <a id=")]
    ids = [re.search(r'id="([^"]+)"', line).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids))
    assert all(re.search(r"\[(H|M|\?)\]|\(emulator\)", line) for line in lines)
