"""One botocore session per container, shared by every AWS client the functions build.

A session loads endpoint rules and service models once; a second session (boto3's
default one, or the one Powertools Parameters would make) repeats that work on every
cold start. boto3 only wraps these same clients.
"""

from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def aws_client(service: str, config: Config | None = None) -> Any:
    """A client for `service`; AWS_ENDPOINT_URL and the region come from the environment."""
    return _session().create_client(service, config=config)
