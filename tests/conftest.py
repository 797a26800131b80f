"""Shared fixtures: one moto server per test session, reached by the real boto3."""

import os
from collections.abc import Iterator

import pytest

from meterbridge_local.aws import MotoServer


@pytest.fixture(scope="session")
def aws() -> Iterator[MotoServer]:
    """moto in server mode on loopback; the environment points boto3 at it for the session."""
    server = MotoServer().start()
    saved = dict(os.environ)
    os.environ.update(server.environment())
    try:
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
