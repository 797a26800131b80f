"""Outbound HTTP calls (Stripe, the HTTP usage source) that end by a deadline, whatever the
server does.

urllib3's timeouts bound each socket operation, not the call: its own documentation says
that a server sending one byte every 15 s never trips a 20 s read timeout, `Timeout(total=…)`
included (urllib3.util.Timeout). A usage source doing that held a report 45 s past a 5 s
setting (issue 13). So each call here runs under an absolute deadline (`time.monotonic()`
seconds), and one watchdog thread per process shuts the call's socket down when the deadline
passes: `socket.shutdown()` is what wakes a read blocked in another thread (the way
urllib3's own `HTTPResponse.shutdown()` stops reads; closing does not). The blocked read
then fails, and `WatchedCall.interrupted` tells the adapter it was the deadline. No
library offers a total deadline for blocking urllib3 calls; this is the small part written
by hand.

The connection is watched from the moment urllib3 starts waiting for the answer's status
line until it goes back to the pool (`_put_conn`), so a socket that another call may reuse
is never shut down. Connecting and sending are bounded by urllib3's connect timeout, which
callers cap at the time left. DNS resolution is not bounded by anything (Python's resolver
ignores socket timeouts).

A caller that knows when its own work must end (the worker: the invocation's remaining
time) wraps it in `outbound_deadline(deadline)`: every call made by that thread inside
the block ends by then, whatever its own timeout says.
"""

import contextlib
import contextvars
import heapq
import itertools
import math
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_caller_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "meterbridge_outbound_deadline", default=None
)
_current_call: contextvars.ContextVar["WatchedCall | None"] = contextvars.ContextVar(
    "meterbridge_watched_call", default=None
)


def earliest(*deadlines: float | None) -> float | None:
    """The soonest of the deadlines given (None: no deadline)."""
    known = [deadline for deadline in deadlines if deadline is not None]
    return min(known) if known else None


@contextmanager
def outbound_deadline(deadline: float | None) -> Iterator[None]:
    """Cap every outbound HTTP call this thread makes inside the block (Stripe, HTTP usage
    source) at `deadline` (time.monotonic() seconds; None: no cap). Nested blocks keep the
    sooner deadline."""
    token = _caller_deadline.set(earliest(_caller_deadline.get(), deadline))
    try:
        yield
    finally:
        _caller_deadline.reset(token)


def caller_deadline() -> float | None:
    """The deadline `outbound_deadline` set for this thread, if any."""
    return _caller_deadline.get()


class WatchedCall:
    """One call's deadline and the socket it currently waits on."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.interrupted = False  # the watchdog shut the socket down: the deadline passed
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._finished = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._socket = sock
            late = time.monotonic() >= self.deadline
        if late:
            self.expire()

    def detach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if sock is None or sock is self._socket:
                self._socket = None

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._socket = None

    @property
    def finished(self) -> bool:
        return self._finished

    def expire(self) -> None:
        with self._lock:
            sock = self._socket
            if self._finished or sock is None:
                return
            self.interrupted = True
            # OSError: already closed by its owner, so nothing is blocked on it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires calls at their deadlines (earliest first)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, WatchedCall]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, call: WatchedCall) -> None:
        with self._condition:
            heapq.heappush(self._heap, (call.deadline, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="outbound-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is call:
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while True:
                if not self._heap:
                    self._condition.wait()
                    continue
                deadline, _, call = self._heap[0]
                if call.finished:
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
                call.expire()


_watchdog = _Watchdog()


@contextmanager
def watched_call(deadline: float) -> Iterator[WatchedCall]:
    """Run one HTTP call (through `WatchedPools`) that must end by `deadline`."""
    call = WatchedCall(deadline)
    if math.isfinite(deadline):
        _watchdog.watch(call)
    token = _current_call.set(call)
    try:
        yield call
    finally:
        _current_call.reset(token)
        call.finish()


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:
        call = _current_call.get()
        if call is not None:
            call.attach(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        call = _current_call.get()
        if call is not None:
            call.attach(self.sock)
        return super().getresponse()


def _released(conn: Any) -> None:
    call = _current_call.get()
    if call is not None:
        call.detach(getattr(conn, "sock", None))


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        _released(conn)  # back in the pool: another call may use it, never shut it down
        super()._put_conn(conn)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        _released(conn)
        super()._put_conn(conn)


_POOL_CLASSES = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedPools:
    """urllib3 connection pools whose calls `watched_call` can end: direct, and through
    `proxy` (HTTPS_PROXY) except for the hosts NO_PROXY names (read once per host)."""

    def __init__(self, *, pool_size: int, proxy: str | None = None, **options: Any):
        options = {"maxsize": max(pool_size, 1), "retries": False, **options}
        self._direct = urllib3.PoolManager(**options)
        self._direct.pool_classes_by_scheme = _POOL_CLASSES
        self._proxied: urllib3.PoolManager | None = None
        if proxy:
            self._proxied = urllib3.ProxyManager(proxy, **options)
            self._proxied.pool_classes_by_scheme = _POOL_CLASSES
        self._bypass: dict[str, bool] = {}

    def for_host(self, host: str, *, direct: bool = False) -> urllib3.PoolManager:
        if self._proxied is None or direct:
            return self._direct
        bypass = self._bypass.get(host)
        if bypass is None:
            bypass = self._bypass[host] = bool(urllib.request.proxy_bypass(host))
        return self._direct if bypass else self._proxied

    def clear(self) -> None:
        self._direct.clear()
        if self._proxied is not None:
            self._proxied.clear()


def call_timeout(connect: float, read: float, call: WatchedCall) -> urllib3.Timeout:
    """urllib3's per-operation timeouts, never longer than the time the call has left."""
    left = max(call.remaining(), 0.001)
    return urllib3.Timeout(connect=min(connect, left), read=min(read, left))
