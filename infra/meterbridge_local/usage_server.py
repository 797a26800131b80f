"""A usage source on loopback that speaks meterbridge's HTTP USAGE_SOURCE contract.

POST JSON {"customer","tenant","meter","start","end"} → {"value": "<decimal>"}: the sum of
the usage recorded for that account and meter with start <= at < end. An account is a
tenant (customer metadata) or a Stripe customer id; a query matches either. The demo,
the end-to-end tests and `meterbridge local` feed it known usage and then check that the
invoices carry exactly that; faults (slow, failing or nonsense answers) can be scripted.

    with UsageServer() as usage:
        usage.add("tenant-acme", "api_requests", at=period_start + 60, value="1200")
        ... USAGE_SOURCE=usage.url ...
"""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from meterbridge_local.loopback import serve_in_background, stop_serving

USAGE_PATH = "/usage"
# Feeding over HTTP, for `meterbridge local`: POST {"account","meter","at","value"}.
RECORDS_PATH = "/usage/records"


@dataclass(frozen=True)
class UsageRecord:
    """Some usage of one meter by one account at one instant (unix seconds)."""

    account: str
    meter: str
    at: int
    value: Decimal


@dataclass
class Fault:
    """A scripted misbehaviour for one account's queries, used up `times` times (None = always).

    `delay` seconds before answering; then `status` (an HTTP error) or `value` (any JSON, even
    a non-decimal) instead of the real sum; with neither, the real answer, only late.
    """

    delay: float = 0.0
    status: int | None = None
    value: Any = None
    times: int | None = 1


@dataclass
class UsageQueryLog:
    """One query as received, and what was answered."""

    query: dict[str, Any]
    status: int
    answer: Any
    at: float = field(default_factory=time.time)


class UsageServer:
    """Thread-safe usage store behind a ThreadingHTTPServer on 127.0.0.1 (port 0 = free)."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._records: list[UsageRecord] = []
        self._faults: dict[str, list[Fault]] = {}
        self.queries: list[UsageQueryLog] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> "UsageServer":
        self._thread = serve_in_background(self._server, "usage-server", 0.05)
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
        self._thread = None

    def __enter__(self) -> "UsageServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """What to set as USAGE_SOURCE."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{USAGE_PATH}"

    # -- feeding and scripting

    def add(self, account: str, meter: str, *, at: int, value: Decimal | str | int) -> None:
        with self._lock:
            self._records.append(UsageRecord(account, meter, int(at), Decimal(str(value))))

    def _feed(self, record: Any) -> tuple[int, Any]:
        """One usage record sent over HTTP; the answer echoes what was stored."""
        if not isinstance(record, dict) or not {"account", "meter", "at", "value"} <= set(record):
            raise ValueError("want a JSON object with account, meter, at and value")
        value = Decimal(str(record["value"]))
        if not value.is_finite():
            raise ValueError("value must be a finite decimal")
        self.add(str(record["account"]), str(record["meter"]), at=int(record["at"]), value=value)
        return 201, {"stored": {**record, "value": format(value, "f")}}

    @property
    def records_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{RECORDS_PATH}"

    def total(self, accounts: tuple[str, ...], meter: str, start: int, end: int) -> Decimal:
        """What a query for any of `accounts` answers over [start, end)."""
        with self._lock:
            return sum(
                (
                    r.value
                    for r in self._records
                    if r.account in accounts and r.meter == meter and start <= r.at < end
                ),
                Decimal(0),
            )

    def script(self, account: str, fault: Fault) -> None:
        """Queue a fault for queries naming `account` (as customer or tenant)."""
        with self._lock:
            self._faults.setdefault(account, []).append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def queries_for(self, account: str) -> Iterator[UsageQueryLog]:
        with self._lock:
            logged = list(self.queries)
        return (q for q in logged if account in (q.query.get("customer"), q.query.get("tenant")))

    # -- serving

    def answer(self, query: dict[str, Any]) -> tuple[int, Any]:
        """(HTTP status, JSON document) for one query; applies a scripted fault first."""
        accounts = tuple(str(query[k]) for k in ("tenant", "customer") if query.get(k))
        fault = self._take_fault(accounts)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            return fault.status, {"error": f"scripted failure {fault.status}"}
        if fault is not None and fault.value is not None:
            return 200, {"value": fault.value}
        total = self.total(accounts, str(query["meter"]), int(query["start"]), int(query["end"]))
        return 200, {"value": format(total.normalize(), "f") if total else "0"}

    def _take_fault(self, accounts: tuple[str, ...]) -> Fault | None:
        with self._lock:
            for account in accounts:
                queued = self._faults.get(account)
                if not queued:
                    continue
                fault = queued[0]
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        queued.pop(0)
                return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: callers read `queries`."""

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                query: Any = None
                path = self.path.split("?")[0]
                try:
                    query = json.loads(self.rfile.read(length) or b"null")
                    if path == RECORDS_PATH:
                        status, document = server._feed(query)
                    elif path == USAGE_PATH:
                        if not isinstance(query, dict) or not {"meter", "start", "end"} <= set(
                            query
                        ):
                            raise ValueError("want a JSON object with meter, start and end")
                        status, document = server.answer(query)
                    else:
                        status, document = 404, {"error": f"POST {USAGE_PATH} or {RECORDS_PATH}"}
                except (ValueError, TypeError, KeyError, ArithmeticError) as error:
                    status, document = 400, {"error": str(error)}
                if path == USAGE_PATH:
                    with server._lock:
                        server.queries.append(
                            UsageQueryLog(
                                query if isinstance(query, dict) else {}, status, document
                            )
                        )
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
