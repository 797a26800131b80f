"""DynamoDB stand-ins in their own processes, for benchmarks.

DynamoDB does not run on the Lambda's CPU; a stand-in in the worker's process would (its
HTTP threads share the GIL), so each runs as a child process and its CPU is read from /proc.

- moto (`python -m moto.server`): the stand-in every test uses. It answers one connection
  per request (HTTP/1.0) and spends 3-8 ms of CPU per DynamoDB call on this machine;
  `MotoProcess(keep_alive=True)` serves the same application with HTTP/1.1 keep-alive
  (`bench.moto_keepalive`), as AWS's endpoints do.
- dynalite (Node.js, an in-memory implementation of the DynamoDB API, installed by
  `make bench` with npm into `.bench/node`): keep-alive connections and about 0.5-1 ms of
  CPU per call, so on 2 shared cores the worker, not the stand-in, sets the pace. It has no
  TTL API; nothing the worker does depends on it.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meterbridge.handlers.worker import Worker

DYNALITE_VERSION = "4.0.0"  # the Makefile's bench target installs this one
DYNALITE = Path(__file__).resolve().parent.parent / ".bench" / "node" / "node_modules" / ".bin"


def cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux): who spends the 2 cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _ChildServer:
    """A server process on 127.0.0.1; `endpoint_url`, `pid`, `cpu_seconds()`, `stop()`."""

    name = "server"
    time_to_live = True

    def __init__(self, command: list[str], port: int):
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.pid = self._process.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {' '.join(command)}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class MotoProcess(_ChildServer):
    name = "moto"

    def __init__(self, *, keep_alive: bool = False) -> None:
        port = _free_port()
        command = (
            [sys.executable, "-m", "bench.moto_keepalive", str(port)]
            if keep_alive
            else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        )
        super().__init__(command, port)


class DynaliteProcess(_ChildServer):
    name = "dynalite"
    time_to_live = False

    def __init__(self, executable: str) -> None:
        port = _free_port()
        super().__init__(
            [
                executable,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--createTableMs",
                "0",
                "--updateTableMs",
                "0",
            ],
            port,
        )


def dynalite_executable() -> str | None:
    """`BENCH_DYNALITE`, else what `make bench` installed, else a dynalite on PATH."""
    configured = os.environ.get("BENCH_DYNALITE")
    if configured:
        return configured
    installed = DYNALITE / "dynalite"
    if installed.exists():
        return str(installed)
    return shutil.which("dynalite")


def bench_worker(environ: dict[str, str], usage_source: Any) -> "Worker":
    """The worker as its composition root builds it, with the benchmark's usage in-process."""
    import dataclasses

    from meterbridge.handlers.worker import Worker
    from meterbridge.worker.composition import build_pipeline, connect, worker_settings

    settings = worker_settings(environ)
    dependencies = dataclasses.replace(connect(settings), usage_source=usage_source)
    return Worker.from_pipeline(build_pipeline(settings, dependencies))


def replaced_usage_source(query: Any) -> Any:
    """USAGE_SOURCE of the benchmarks' settings (`python://bench.stand_ins:replaced_usage_source`):
    the composition root resolves it, then bench_worker puts the benchmark's own source in."""
    raise AssertionError(f"bench_worker replaces this usage source (asked for {query})")
