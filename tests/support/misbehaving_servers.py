"""HTTP servers on loopback that misbehave on purpose: silent, trickling, huge, redirecting.

Each listens on 127.0.0.1 at a free port, serves every connection from its own daemon
thread with a `respond(connection, request_count)` script, records what it received, and
stops with the `with` block (listener and open connections closed), so a test that fails
never leaves a server behind.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

Script = Callable[["Connection"], None]


class Connection:
    """One accepted connection, as the script sees it."""

    def __init__(self, sock: socket.socket, server: "MisbehavingServer"):
        self.sock = sock
        self.server = server

    def read_request(self) -> bytes:
        """Headers and body of one request (by Content-Length)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        request = head + b"\r\n\r\n" + body
        with self.server.lock:
            self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> bool:
        """False once the client has gone (it hung up or shut its side down)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        with self.server.lock:
            self.server.bytes_sent += len(data)
        return True

    def trickle(self, data: bytes, every: float) -> bool:
        """One byte every `every` seconds, until the client hangs up or the server stops."""
        for index in range(len(data)):
            if self.server.stopped.is_set() or not self.send(data[index : index + 1]):
                return False
            time.sleep(every)
        return True

    def wait_until_stopped(self) -> None:
        self.server.stopped.wait()


class MisbehavingServer:
    def __init__(self, script: Script):
        self._script = script
        self.lock = threading.Lock()
        self.requests: list[bytes] = []
        self.connections = 0
        self.bytes_sent = 0
        self.stopped = threading.Event()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._open.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client hung up: the script ends here
            self._script(Connection(sock, self))

    def received(self, count: int, within: float = 5.0) -> int:
        """How many requests it has read, once `count` arrived or `within` seconds passed
        (its threads may read a request a moment after the client gave up on it)."""
        until = time.monotonic() + within
        while len(self.requests) < count and time.monotonic() < until:
            time.sleep(0.01)
        return len(self.requests)

    def __enter__(self) -> "MisbehavingServer":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stopped.set()
        self._listener.close()
        with self.lock:
            for sock in self._open:
                sock.close()


def http_answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return head.encode() + b"\r\n" + body


def silent(connection: Connection) -> None:
    """Takes the request and never answers."""
    connection.read_request()
    connection.wait_until_stopped()


def trickling_headers(every: float) -> Script:
    """Status line and headers one byte at a time: a complete answer would take minutes."""

    def script(connection: Connection) -> None:
        connection.read_request()
        answer = http_answer(200, b'{"value": "7"}', {"X-Padding": "p" * 4000})
        connection.trickle(answer, every)

    return script


def trickling_body(every: float, *, declare_length: bool = True) -> Script:
    """Headers at once, then the body one byte at a time."""

    def script(connection: Connection) -> None:
        connection.read_request()
        body = b'{"value": "7", "padding": "' + b"p" * 4000 + b'"}'
        head = b"HTTP/1.1 200 OK\r\n"
        head += f"Content-Length: {len(body)}\r\n".encode() if declare_length else b""
        head += b"Connection: close\r\n\r\n"
        if connection.send(head):
            connection.trickle(body, every)

    return script


def huge_answer(size: int, *, declare_length: bool) -> Script:
    """A 200 whose body is `size` bytes of JSON-ish padding, sent as fast as it is read."""

    def script(connection: Connection) -> None:
        connection.read_request()
        head = b"HTTP/1.1 200 OK\r\n"
        head += f"Content-Length: {size}\r\n".encode() if declare_length else b""
        head += b"Connection: close\r\n\r\n"
        if not connection.send(head + b'{"value": "7", "padding": "'):
            return
        block = b"p" * 65536
        sent = 0
        while sent < size and connection.send(block):
            sent += len(block)

    return script


def answers(*scripted: tuple[int, bytes, dict[str, str]]) -> Script:
    """Keep-alive connection answering its requests from `scripted` in turn (then 200 "7")."""
    queue = list(scripted)
    lock = threading.Lock()

    def script(connection: Connection) -> None:
        while connection.read_request():
            with lock:
                status, body, headers = queue.pop(0) if queue else (200, b'{"value":"7"}', {})
            if not connection.send(http_answer(status, body, headers)):
                return

    return script
