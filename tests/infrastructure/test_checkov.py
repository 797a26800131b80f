"""checkov on the template and on its SAM translation: no failed check, every skip explained.

checkov runs from its own venv (`make checkov` / `make test` install it into .venv-checkov)
and offline (--skip-download). `make test` sets MB_REQUIRE_CHECKOV, so a missing checkov
fails there; a bare `pytest` without that venv skips this test and says how to get it.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infrastructure.template_support import TEMPLATE, sam_template, translated_template

CHECKOV = TEMPLATE.parent / ".venv-checkov" / "bin" / "checkov"


def _run_checkov(*files: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        message = "checkov is not installed: `make checkov` puts it into .venv-checkov"
        if os.environ.get("MB_REQUIRE_CHECKOV"):
            pytest.fail(message)
        pytest.skip(message)
    command = [str(CHECKOV), "--framework", "cloudformation", "--skip-download"]
    for path in files:
        command += ["-f", str(path)]
    result = subprocess.run(
        [*command, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    try:
        report: Any = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not report (exit {result.returncode}): {result.stderr[-2000:]}")
    return report if isinstance(report, dict) else {"results": {}, "summary": {}, "all": report}


def test_checkov_passes_on_the_template_and_its_translation(tmp_path: Path) -> None:
    translated = tmp_path / "translated.json"
    translated.write_text(json.dumps(translated_template()))

    report = _run_checkov(TEMPLATE, translated)

    reports = report.get("all") or [report]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for one in reports
        for check in one["results"].get("failed_checks", [])
    ]
    assert failed == [], "\n".join(failed)
    assert all(one["summary"]["parsing_errors"] == 0 for one in reports)
    assert sum(one["summary"]["passed"] for one in reports) > 0, "checkov checked nothing"
    skipped = [c for one in reports for c in one["results"].get("skipped_checks", [])]
    assert skipped, "the template's justified skips were not seen"
    for check in skipped:
        assert (check.get("check_result") or {}).get("suppress_comment"), check["check_id"]


def test_every_skip_names_a_real_check_and_says_why() -> None:
    for name, resource in sam_template()["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith(("CKV_AWS_", "CKV2_AWS_")), (name, skip)
            assert len(" ".join(skip.get("comment", "").split())) > 40, (name, skip)
