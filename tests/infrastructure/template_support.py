"""Load template.yaml the way CloudFormation and SAM read it."""

import copy
import os
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str
from samtranslator.translator.transform import transform

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
EXAMPLE_PARAMETERS = {
    "StripeSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:meterbridge-stripe",
    "UsageSource": "https://usage.example.com/usage",
}


class OfflinePolicyLoader:
    """SAM asks IAM for managed-policy ARNs; offline, the policy templates we use need none."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems, problems
    return dict(template)


def translated_template() -> dict[str, Any]:
    """The CloudFormation SAM generates (what `sam deploy` would submit)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = copy.deepcopy(sam_template())
    # `sam package` uploads the code and rewrites CodeUri to S3 before the transform runs.
    template["Globals"]["Function"]["CodeUri"] = "s3://meterbridge-artifacts/functions.zip"
    return transform(template, EXAMPLE_PARAMETERS, OfflinePolicyLoader())
