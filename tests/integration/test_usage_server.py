"""The built-in usage server: fed over HTTP, answered over the USAGE_SOURCE contract."""

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from meterbridge_local.usage_server import UsageServer


def _post(url: str, document: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_records_fed_over_http_are_summed_over_half_open_periods():
    with UsageServer() as usage:
        for at, value in ((100, "1.5"), (199, "2"), (200, "40")):
            status, _ = _post(
                usage.records_url, {"account": "acme", "meter": "m", "at": at, "value": value}
            )
            assert status == 201
        query = {"customer": "cus_1", "tenant": "acme", "meter": "m", "start": 100, "end": 200}
        assert _post(usage.url, query) == (200, {"value": "3.5"})


@pytest.mark.parametrize(
    "record",
    [
        {"account": "acme", "meter": "m", "at": 1},
        {"account": "acme", "meter": "m", "at": 1, "value": "lots"},
        {"account": "acme", "meter": "m", "at": 1, "value": "NaN"},
        {"account": "acme", "meter": "m", "at": "soon", "value": "1"},
        ["not", "an", "object"],
    ],
)
def test_bad_records_are_refused_and_not_stored(record: Any):
    with UsageServer() as usage:
        status, answer = _post(usage.records_url, record)
        assert status == 400
        assert "error" in answer
        query = {"customer": "acme", "meter": "m", "start": 0, "end": 10}
        assert _post(usage.url, query) == (200, {"value": "0"})
