"""HTTP layer: auth, idempotency, Stripe error bodies and headers, and the emulator's lifecycle."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stripe

from . import api, versions
from .api import Api, Call
from .billing import Billing
from .config import EmulatorConfig, FailRule, Stage
from .contract import Contract, ContractRecorder
from .errors import StripeApiError
from .faults import Faults, injected
from .store import Obj, Store, public
from .webhooks import THIN_EVENT, Deliveries, Events
from .wire import as_list, decode_form, to_json

CONTROL_PREFIX = "/_emulator/"


class _Idempotency:
    """Stripe's v1 idempotency (docs/stripe.md#S-IDEM-1): once an endpoint began executing, its
    answer — a 500 included — is saved under the key and replayed to every retry with that key;
    the same key with other parameters is an `idempotency_error`. Requests that failed before
    execution (validation, injected `before_execution` faults, a concurrent twin) save nothing.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str], _Saved] = {}
        self._running: set[tuple[str, str]] = set()

    def begin(self, scope: tuple[str, str], fingerprint: str) -> _Saved | None:
        with self._lock:
            stored = self._done.get(scope)
            if stored is not None and (
                time.time() - stored.at > self._config.idempotency_memory_seconds
            ):
                del self._done[scope]  # pruned: the key may now run a new request
                stored = None
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise StripeApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{scope[1]}' if you meant to execute a different request.",
                        type_="idempotency_error",
                    )
                return stored
            if scope in self._running:
                raise StripeApiError(
                    409,
                    "There is currently another in-progress request using this Idempotent Key.",
                    type_="idempotency_error",
                    code="idempotency_key_in_use",
                    should_retry=True,
                )
            self._running.add(scope)
            return None

    def finish(self, scope: tuple[str, str], saved: _Saved | None) -> None:
        with self._lock:
            self._running.discard(scope)
            if saved is not None:
                self._done[scope] = saved


@dataclass(frozen=True)
class _Saved:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    at: float


def _error_answer(exc: StripeApiError, *, v2: bool) -> tuple[int, bytes, dict[str, str]]:
    extra: dict[str, str] = {}
    if exc.should_retry is not None:
        extra["Stripe-Should-Retry"] = "true" if exc.should_retry else "false"
    return exc.status, to_json(exc.body(v2=v2)), extra


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "StripeEmulator/1.0"
    emulator: StripeEmulator  # set on the per-emulator subclass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read state through the emulator's API, not stderr."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        emulator = self.emulator
        request_id = emulator.store.new_id("req", 14)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode() if length else ""
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        extra: dict[str, str] = {}
        try:
            status, body, extra = emulator.dispatch(
                method, path, parts.query, raw_body, dict(self.headers.items()), request_id
            )
        except StripeApiError as exc:
            status, body, extra = _error_answer(exc, v2=path.startswith("/v2/"))
        except Exception:  # an emulator bug must look like a Stripe 500, not a dropped socket
            traceback.print_exc()
            status = 500
            body = to_json({"error": {"type": "api_error", "message": "Emulator internal error."}})
            extra["Stripe-Should-Retry"] = "false"
        contract = emulator.contract
        if contract is not None and not path.startswith(CONTROL_PREFIX):
            contract.check(method, path, parts.query, raw_body, status, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", request_id)
        extra.setdefault("Stripe-Version", emulator.account_api_version)
        for key, value in extra.items():
            self.send_header(key, value)
        # Headers and body in one write: two small writes meet delayed ACKs (~40 ms a request).
        self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        self.flush_headers()


class StripeEmulator:
    """A stateful Stripe-compatible server on 127.0.0.1 for the billing slice meterbridge uses."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.store = Store(self.config.seed)
        self._deliveries = Deliveries(self.config)
        self.account_api_version = self.config.api_version or stripe.api_version
        self._events = Events(self.store, self.config, self._deliveries, self.account_api_version)
        self.billing = Billing(self.store, self.config, self._events)
        self.api = Api(self.store, self.billing)
        self._faults = Faults(self.config, self.store)
        self._idempotency = _Idempotency(self.config)
        self.contract: ContractRecorder | None = None
        if self.config.contract_spec:
            self.enable_contract(self.config.contract_spec)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, port: int = 0) -> StripeEmulator:
        handler = type("BoundHandler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="stripe-emu-http",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.billing.stop()
        self._deliveries.stop()

    def __enter__(self) -> StripeEmulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test helpers -------------------------------------------------------------------

    def fail_next(
        self,
        path: str,
        count: int = 1,
        status: int = 500,
        method: str | None = None,
        stage: Stage = "before_execution",
    ) -> FailRule:
        """Fail the next `count` calls on a path prefix, e.g. the worker's meter events:
        `emu.fail_next("/v1/billing/meter_events", 1, stage="after_execution")`."""
        rule = FailRule(path, count, status, method, stage)
        self.config.fail_next.append(rule)
        return rule

    def enable_contract(self, spec: str | Path | dict[str, Any] | Contract) -> ContractRecorder:
        """Check every later request and answer against `spec` (contract.py); returns the
        recorder whose `violations()` a test asserts empty."""
        if isinstance(spec, Contract):
            contract = spec
        elif isinstance(spec, dict):
            contract = Contract(spec)
        else:
            contract = Contract.load(spec)
        self.contract = ContractRecorder(contract)
        self._events.on_webhook = self.contract.check_webhook
        return self.contract

    def set_faults(self, **changes: Any) -> None:
        """e.g. `set_faults(error_rate_5xx=1.0)`; any EmulatorConfig field."""
        for name, value in changes.items():
            if not hasattr(self.config, name):
                raise AttributeError(f"EmulatorConfig has no field {name!r}")
            setattr(self.config, name, value)

    def seed(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as given (e.g. an old-API invoice) so the API serves it back."""
        stored: Obj = json.loads(json.dumps(obj))
        prefixes = {"invoice": "in", "customer": "cus", "subscription": "sub", "price": "price"}
        with self.store.lock:
            stored.setdefault("id", self.store.new_id(prefixes.get(resource, "obj"), 14))
            stored.setdefault("object", resource)
            if resource == "invoice":
                lines = (stored.get("lines") or {}).get("data") or []
                for line in lines:
                    line.setdefault("id", self.store.new_id("il", 24))
                stored["_lines"] = lines
                stored.setdefault("status", "draft")
                stored.setdefault("created", int(time.time()))
                stored.setdefault("status_transitions", {"finalized_at": None})
                stored.setdefault("billing_reason", "manual")
            self.store.put(THIN_EVENT if resource == "v2.core.event" else resource, stored)
            if resource == "invoice":
                self.billing.track_invoice(stored)
                return self.billing.invoicing.render_invoice(stored)
            return public(stored)

    def meter_events(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [record.as_dict() for record in self.billing.metering.meter_events]

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(a) for a in self._deliveries.attempts]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until clocks are ready, usage is past the aggregation lag and webhooks settled."""
        deadline = time.monotonic() + timeout
        while True:
            if (
                self.billing.clocks_settled()
                and self.billing.metering.aggregation_settled()
                and self._deliveries.idle()
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Stripe emulator not idle after {timeout} s")
            time.sleep(0.01)

    # ---- request dispatch ---------------------------------------------------------------

    def dispatch(  # noqa: PLR0917
        self,
        method: str,
        path: str,
        query: str,
        raw_body: str,
        headers: dict[str, str],
        request_id: str,
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = {k.lower(): v for k, v in headers.items()}
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path, raw_body)
        api_key = self._authenticate(path, headers.get("authorization", ""))
        self._faults.before(method, path)
        fault = self._faults.take(method, path)
        if fault is not None and fault.stage == "before_execution":
            raise injected(fault.status)
        found = api.match(method, path)
        if found is None:
            if api.path_exists(path):
                raise StripeApiError(405, f"Method {method} not allowed for {path}.")
            raise api.not_found(path)
        handler, path_args = found
        params = decode_form(query)
        if raw_body:
            if path.startswith("/v2/"):
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    raise StripeApiError(400, "Request body is not valid JSON.") from None
                if not isinstance(body, dict):
                    raise StripeApiError(400, "Request body must be a JSON object.")
                params.update(body)
            else:
                params.update(decode_form(raw_body))
        expand = [str(e) for e in as_list(params, "expand")]
        params.pop("expand", None)
        version = (
            self.config.render_api_version
            or headers.get("stripe-version")
            or (self.account_api_version)
        )
        key = headers.get("idempotency-key")
        call = Call(method, path, params, path_args, key, request_id, api_key, headers, version)
        v2 = path.startswith("/v2/")

        def execute() -> tuple[int, bytes, dict[str, str]]:
            if fault is not None and fault.stage == "during_execution":
                raise injected(fault.status)
            result = handler(self.api, call)
            if expand:
                result = self.api.expand(result, expand)
            if fault is not None and fault.stage == "after_execution":
                raise injected(fault.status)
            return 200, to_json(versions.render(result, version)), {"Stripe-Version": version}

        if method == "GET" or not key:
            return execute()
        scope = (api_key, key)
        fingerprint = hashlib.sha256(
            json.dumps([method, path, params, expand], sort_keys=True).encode()
        ).hexdigest()
        replay = self._idempotency.begin(scope, fingerprint)
        if replay is not None:
            headers_out = {**replay.headers, "Idempotent-Replayed": "true", "Idempotency-Key": key}
            return replay.status, replay.body, headers_out
        saved: _Saved | None = None
        try:
            try:
                status, body, extra = execute()
            except StripeApiError as exc:
                if exc.before_execution:
                    raise
                status, body, extra = _error_answer(exc, v2=v2)
            # v2 keeps no failed answer: a retry finishes the work (docs/stripe.md#S-IDEM-2).
            if not (v2 and status >= 400):
                saved = _Saved(fingerprint, status, body, dict(extra), time.time())
        finally:
            self._idempotency.finish(scope, saved)
        return status, body, {**extra, "Idempotency-Key": key}

    # ---- control surface (not Stripe's): faults and contract findings over HTTP -------------

    def _control(self, method: str, path: str, raw_body: str) -> tuple[int, bytes, dict[str, str]]:
        """`/_emulator/...`: drive a running emulator from another process (no API key)."""
        route = (method, path.removeprefix(CONTROL_PREFIX))
        if route == ("GET", "faults"):
            return 200, to_json(self._faults_state()), {}
        if route == ("POST", "faults/fail_next"):
            try:
                rule = FailRule(**json.loads(raw_body or "{}"))
            except (TypeError, ValueError) as exc:
                raise StripeApiError(400, f"Invalid fail_next rule: {exc}") from None
            self.config.fail_next.append(rule)
            return 200, to_json(self._faults_state()), {}
        if route == ("DELETE", "faults"):
            self.config.fail_next.clear()
            return 200, to_json(self._faults_state()), {}
        if route == ("GET", "contract"):
            contract = self.contract
            return (
                200,
                to_json(
                    {
                        "enabled": contract is not None,
                        "operations": sorted(contract.operations()) if contract else [],
                        "violations": [str(v) for v in contract.violations()] if contract else [],
                    }
                ),
                {},
            )
        raise api.not_found(path)

    def _faults_state(self) -> Obj:
        return {"fail_next": [rule.as_dict() for rule in list(self.config.fail_next)]}

    def _authenticate(self, path: str, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if path == "/v2/billing/meter_event_stream":
            if scheme.lower() == "bearer" and self.api.session_valid(token):
                return token
            raise StripeApiError(
                401,
                "Invalid or expired meter event session token; create a new "
                "/v2/billing/meter_event_session.",
                code="billing_meter_event_session_expired",
            )
        if scheme.lower() == "bearer" and token.startswith("sk_test_"):
            return token
        if not token:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        raise StripeApiError(401, f"Invalid API Key provided: {token[:12]}****")
