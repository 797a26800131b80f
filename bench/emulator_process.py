"""The Stripe billing emulator in its own process, for benchmarks.

Real Stripe does not use the Lambda's CPU; an emulator in the worker's process would (its
HTTP threads share the GIL). Unlike `python -m meterbridge_local.stripe_emulator`, this
takes any EmulatorConfig field (e.g. `meter_event_rate_limit`) as JSON and answers the line
`events` on stdin with the recorded meter events as one JSON line, so a benchmark can check
what reached "Stripe" without sharing its process.

    python -m bench.emulator_process '{"latency_seconds": 0.15}'
"""

import json
import subprocess
import sys
from typing import Any

from meterbridge_local.stripe_emulator import EmulatorConfig, StripeEmulator


def main(argv: list[str]) -> int:
    config = EmulatorConfig(**json.loads(argv[0] if argv else "{}"))
    emulator = StripeEmulator(config).start()
    print(emulator.url, flush=True)
    try:
        for line in sys.stdin:  # EOF (the parent closed stdin or died) stops the emulator
            if line.strip() == "events":
                print(json.dumps(emulator.meter_events(), default=str), flush=True)
    finally:
        emulator.stop()
    return 0


class EmulatorProcess:
    """Starts `main` in a child process; `url`, `meter_events()`, `stop()`."""

    def __init__(self, **config: Any):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.emulator_process", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self._process.pid  # for its CPU time (bench.stand_ins.cpu_seconds)
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the emulator process did not start")

    def meter_events(self) -> list[dict[str, Any]]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write("events\n")
        self._process.stdin.flush()
        events: list[dict[str, Any]] = json.loads(self._process.stdout.readline())
        return events

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
