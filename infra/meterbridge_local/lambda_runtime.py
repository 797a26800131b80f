"""A small Lambda runtime without Docker: API Gateway v2 in front of one handler, and an
SQS event source mapping behind another.

`sam local` needs Docker; this runs the handlers in-process with the event shapes and
delivery semantics AWS documents:
- HttpFront: HTTP API payload format 2.0 events
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
- SqsPoller: the SQS event source mapping (batch size, batching window, partial batch
  responses, visibility timeout, maximum concurrency)
  (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html). Redrive to the dead-letter
  queue is the queue's own RedrivePolicy, which moto applies on receive just like SQS.
"""

import base64
import importlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3

from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT, LOCAL_REGION
from meterbridge_local.loopback import serve_in_background, stop_serving
from meterbridge_local.resources import (
    LOCAL_ACCOUNT_ID,
    LOCAL_API_ID,
    FunctionDefinition,
    HttpRoute,
    SqsEventSource,
)

Handler = Callable[[dict[str, Any], Any], Any]

log = logging.getLogger("meterbridge_local.lambda")

MAX_HTTP_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request size limit
SQS_RECEIVE_LIMIT = 10  # ReceiveMessage returns at most 10 messages per call
# Short polls with an interruptible back-off rather than SQS long polls: a long poll
# would hold stop() for its whole wait. Idle cost: at most a few requests a second.
IDLE_BACKOFF_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.4)


def load_handler(dotted_path: str) -> Handler:
    """Import `package.module.function`, the way Lambda resolves the Handler setting."""
    module_name, _, attribute = dotted_path.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), attribute)
    return handler


@dataclass
class LambdaContext:
    """The context object Lambda passes to Python handlers (the attributes Powertools reads)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class FunctionConfig:
    """What the runtime needs of a function besides its handler."""

    name: str = "local-function"
    timeout_seconds: int = 3
    memory_mb: int = 128

    @classmethod
    def of(cls, definition: FunctionDefinition) -> "FunctionConfig":
        return cls(definition.name, definition.timeout_seconds, definition.memory_mb)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{self.name}"

    def context(self) -> LambdaContext:
        return LambdaContext(
            function_name=self.name,
            invoked_function_arn=self.arn,
            memory_limit_in_mb=self.memory_mb,
            timeout_seconds=self.timeout_seconds,
        )


# --------------------------------------------------------------------------- HTTP front


class HttpFront:
    """API Gateway HTTP API on loopback: each matching request becomes one invocation."""

    def __init__(
        self,
        handler: Handler,
        routes: Iterable[HttpRoute] = (HttpRoute("POST", "/stripe/webhook"),),
        *,
        function: FunctionConfig | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ):
        self.handler = handler
        self.routes = tuple(routes)
        self.function = function or FunctionConfig()
        self._server = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @classmethod
    def for_function(
        cls, definition: FunctionDefinition, handler: Handler | None = None, *, port: int = 0
    ) -> "HttpFront":
        return cls(
            handler or load_handler(definition.handler),
            definition.http_routes,
            function=FunctionConfig.of(definition),
            port=port,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route_url(self, route: HttpRoute | None = None) -> str:
        return self.url + (route or self.routes[0]).path

    def start(self) -> "HttpFront":
        self._thread = serve_in_background(self._server, f"http-front-{self.function.name}", 0.1)
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
        self._thread = None

    def __enter__(self) -> "HttpFront":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def invoke(self, event: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """Call the handler with a v2 event; map its result the way API Gateway does."""
        try:
            result = self.handler(event, self.function.context())
        except Exception:
            log.exception("%s raised; API Gateway answers 500", self.function.name)
            return _json_response(500, {"message": "Internal Server Error"})
        return _http_response(result)

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def _serve(self) -> None:
                front._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

        return RequestHandler

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        try:
            body = _read_body(request)
        except _PayloadTooLarge:
            self._reply(request, *_json_response(413, {"message": "Request Entity Too Large"}))
            return
        target = urlsplit(request.path)
        path_routes = [route for route in self.routes if route.path == target.path]
        route = next(
            (r for r in path_routes if r.method in (request.command, "ANY")),
            None,
        )
        if route is None:
            if path_routes:
                status, headers, payload = _json_response(405, {"message": "Method Not Allowed"})
                headers["Allow"] = ", ".join(sorted({r.method for r in path_routes}))
                self._reply(request, status, headers, payload)
            else:
                self._reply(request, *_json_response(404, {"message": "Not Found"}))
            return
        event = http_api_event(request, route, target.path, target.query, body)
        self._reply(request, *self.invoke(event))

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        # One request per connection: no idle keep-alive thread outlives stop().
        request.send_header("Connection", "close")
        request.close_connection = True
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)


class _PayloadTooLarge(Exception):
    pass


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_HTTP_PAYLOAD_BYTES:
                raise _PayloadTooLarge
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    length = int(request.headers.get("Content-Length") or 0)
    if length > MAX_HTTP_PAYLOAD_BYTES:
        request.close_connection = True
        raise _PayloadTooLarge
    return request.rfile.read(length) if length else b""


def http_api_event(
    request: BaseHTTPRequestHandler, route: HttpRoute, path: str, query: str, body: bytes
) -> dict[str, Any]:
    """Payload format 2.0: lower-cased headers (repeats joined by commas), cookies split out,
    the body base64-encoded so its exact bytes reach the handler (signatures need them)."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    now = datetime.now(UTC)
    host = headers.get("host", "127.0.0.1")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": LOCAL_API_ID,
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": request.command,
                "path": path,
                "protocol": request.request_version,
                "sourceIp": request.client_address[0],
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": bool(body),
    }
    if cookies:
        event["cookies"] = cookies
    if parameters:
        event["queryStringParameters"] = parameters
    if body:
        event["body"] = base64.b64encode(body).decode("ascii")
    return event


def _json_response(status: int, document: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(document).encode()


def _http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """API Gateway's mapping of a v2 handler result: a dict with statusCode is a response;
    anything else is a 200 JSON body."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return _json_response(200, result)
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for cookie in result.get("cookies") or ():
        headers.setdefault("Set-Cookie", cookie)  # http.server cannot repeat via a dict
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, payload


# --------------------------------------------------------------------------- SQS poller


@dataclass
class PollerStats:
    invocations: int = 0
    handler_errors: int = 0
    records_deleted: int = 0
    records_failed: int = 0


class SqsPoller:
    """The SQS event source mapping of one function.

    One receiver thread gathers batches (up to `batch_size` records, waiting at most the
    batching window for more once the first arrives) and hands each to a pool of at most
    `maximum_concurrency` invocations. After an invocation, the records not named in
    `batchItemFailures` are deleted; the others stay in flight and reappear after the
    visibility timeout. A raising (or timed-out) handler deletes nothing. After
    maxReceiveCount receives the queue's RedrivePolicy moves a message to the DLQ.

    `visibility_timeout` compresses time for tests and demos: it is passed to
    ReceiveMessage instead of using the queue's VisibilityTimeout (AWS uses the queue's).
    """

    def __init__(
        self,
        handler: Handler,
        source: SqsEventSource,
        *,
        function: FunctionConfig | None = None,
        endpoint_url: str | None = None,
        visibility_timeout: int | None = None,
        default_concurrency: int = 5,
    ):
        self.handler = handler
        self.source = source
        self.function = function or FunctionConfig()
        self.visibility_timeout = visibility_timeout
        self.concurrency = source.maximum_concurrency or default_concurrency
        self.stats = PollerStats()
        self._sqs = boto3.client(
            "sqs",
            endpoint_url=endpoint_url,
            region_name=LOCAL_REGION,
            aws_access_key_id=LOCAL_AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_AWS_ENVIRONMENT["AWS_SESSION_TOKEN"],
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._slots = threading.Semaphore(self.concurrency)
        self._receiver: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def for_function(
        cls,
        definition: FunctionDefinition,
        handler: Handler | None = None,
        *,
        endpoint_url: str | None = None,
        visibility_timeout: int | None = None,
    ) -> "SqsPoller":
        (source,) = definition.sqs_event_sources  # one SQS source per function here
        return cls(
            handler or load_handler(definition.handler),
            source,
            function=FunctionConfig.of(definition),
            endpoint_url=endpoint_url,
            visibility_timeout=visibility_timeout,
        )

    @property
    def running(self) -> bool:
        return self._receiver is not None

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def start(self) -> "SqsPoller":
        if self.running:
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"invoke-{self.function.name}"
        )
        self._receiver = threading.Thread(
            target=self._receive_loop, name=f"sqs-poller-{self.function.name}", daemon=True
        )
        self._receiver.start()
        return self

    def stop(self) -> None:
        """Stop receiving, let running invocations finish, join every thread."""
        if self._receiver is None:
            return
        self._stop.set()
        self._receiver.join()
        self._receiver = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "SqsPoller":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def queue_depth(self) -> int:
        """Messages visible, in flight or delayed in the source queue."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.source.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def drain(self, timeout: float = 30.0) -> bool:
        """Run until the queue is empty and no invocation is in flight; False on timeout.

        Starts the poller if it is not running (and stops it again afterwards). Records
        failing with the queue's full visibility timeout keep the queue non-empty until
        they reappear: use `visibility_timeout` to keep drains short in tests.
        """
        started_here = not self.running
        self.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                # Received-but-unfinished records count as NotVisible, so an empty queue
                # with nothing in flight, seen twice in a row, means done.
                if self.in_flight == 0 and self.queue_depth() == 0:
                    time.sleep(0.02)
                    if self.in_flight == 0 and self.queue_depth() == 0:
                        return True
                self._stop.wait(0.05)
            return False
        finally:
            if started_here:
                self.stop()

    # -- internals

    def _receive_loop(self) -> None:
        idle_rounds = 0
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            try:
                batch = self._receive_batch()
            except Exception:
                log.exception("receiving from %s failed", self.source.queue_url)
                batch = []
            if not batch:
                self._slots.release()
                self._stop.wait(IDLE_BACKOFF_SECONDS[idle_rounds])
                idle_rounds = min(idle_rounds + 1, len(IDLE_BACKOFF_SECONDS) - 1)
                continue
            idle_rounds = 0
            with self._lock:
                self._in_flight += 1
            assert self._pool is not None
            self._pool.submit(self._invoke, batch)

    def _receive(self, limit: int) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "QueueUrl": self.source.queue_url,
            "MaxNumberOfMessages": min(limit, SQS_RECEIVE_LIMIT),
            "WaitTimeSeconds": 0,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if self.visibility_timeout is not None:
            request["VisibilityTimeout"] = self.visibility_timeout
        response: Any = self._sqs.receive_message(**request)
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Up to batch_size records; once the first arrives, wait at most the window."""
        batch = self._receive(self.source.batch_size)
        if not batch:
            return []
        window_ends = time.monotonic() + self.source.maximum_batching_window_seconds
        while len(batch) < self.source.batch_size and not self._stop.is_set():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            more = self._receive(self.source.batch_size - len(batch))
            if not more:
                self._stop.wait(min(remaining, 0.05))
            batch.extend(more)
        return batch

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        try:
            self._invoke_once(messages)
        except Exception:
            log.exception("event source mapping for %s failed", self.function.name)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def _invoke_once(self, messages: list[dict[str, Any]]) -> None:
        records = [sqs_record(message, self.source.queue_arn) for message in messages]
        context = self.function.context()
        started = time.monotonic()
        failed: set[str]
        with self._lock:
            self.stats.invocations += 1
        try:
            result = self.handler({"Records": records}, context)
        except Exception:
            log.exception(
                "%s raised; the whole batch of %d will be retried", self.function.name, len(records)
            )
            with self._lock:
                self.stats.handler_errors += 1
            failed = {record["messageId"] for record in records}
        else:
            if time.monotonic() - started > self.function.timeout_seconds:
                log.error(
                    "%s ran past its %ss timeout; the batch counts as failed",
                    self.function.name,
                    self.function.timeout_seconds,
                )
                failed = {record["messageId"] for record in records}
            elif self.source.reports_batch_item_failures:
                failed = batch_item_failures(result, records)
            else:
                failed = set()
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), SQS_RECEIVE_LIMIT):
            chunk = done[start : start + SQS_RECEIVE_LIMIT]
            self._sqs.delete_message_batch(
                QueueUrl=self.source.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        with self._lock:
            self.stats.records_deleted += len(done)
            self.stats.records_failed += len(failed)


def batch_item_failures(result: Any, records: list[dict[str, Any]]) -> set[str]:
    """Message ids to retry, read as Lambda reads a partial batch response.

    No response, or an empty/null `batchItemFailures`, is complete success; an item
    without a valid itemIdentifier from this batch makes the whole batch a failure.
    """
    batch_ids = {record["messageId"] for record in records}
    if result is None:
        return set()
    if not isinstance(result, dict):
        log.error("partial batch response is not an object; the whole batch fails")
        return batch_ids
    items = result.get("batchItemFailures")
    if not items:
        return set()
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in batch_ids:
            log.error("invalid batchItemFailures entry %r; the whole batch fails", item)
            return batch_ids
        failed.add(identifier)
    return failed


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """A ReceiveMessage result in the shape Lambda gives the handler."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """Lambda's camelCase attribute: binary values travel base64-encoded."""
    attribute: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return attribute


__all__ = [
    "FunctionConfig",
    "Handler",
    "HttpFront",
    "LambdaContext",
    "PollerStats",
    "SqsPoller",
    "batch_item_failures",
    "http_api_event",
    "load_handler",
    "sqs_record",
]
