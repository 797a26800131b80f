"""Read what meterbridge's Powertools logger writes, as parsed JSON records."""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meterbridge.observability import logger


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Records are parsed into the yielded list when the block ends."""
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(logger.registered_handler.formatter)
    target = logging.getLogger(logger.name)  # the stdlib logger Powertools writes through
    target.addHandler(capture)
    records: list[dict[str, Any]] = []
    try:
        yield records
    finally:
        target.removeHandler(capture)
        records.extend(json.loads(line) for line in stream.getvalue().splitlines() if line)
