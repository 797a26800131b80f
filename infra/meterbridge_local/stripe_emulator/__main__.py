"""Run the emulator on its own: `python -m meterbridge_local.stripe_emulator [--port N] ...`.

Prints its URL on the first line of stdout and serves until stdin closes or SIGINT/SIGTERM,
so another process (a benchmark, `meterbridge local --stripe-api-base URL`) can use a
Stripe whose CPU is not its own, as real Stripe's is not.
"""

import argparse
import signal
import sys
import threading
from dataclasses import fields
from typing import Any

from .config import EmulatorConfig
from .server import StripeEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meterbridge_local.stripe_emulator")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = free)")
    numbers = {f.name for f in fields(EmulatorConfig) if f.type in ("float", "int")}
    for name in sorted(numbers):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, dest=name)
    # Text settings, e.g. --contract-spec tests/fixtures/stripe_openapi_trimmed.json (findings
    # at GET /_emulator/contract) or --render-api-version 2025-09-30.clover.
    texts = {f.name for f in fields(EmulatorConfig) if f.type in ("str", "str | None")}
    for name in sorted(texts):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="stop when stdin reaches EOF"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        f.name: (int if f.type == "int" else float)(getattr(args, f.name))
        for f in fields(EmulatorConfig)
        if f.name in numbers and getattr(args, f.name) is not None
    }
    overrides.update({name: getattr(args, name) for name in texts if getattr(args, name)})
    emulator = StripeEmulator(EmulatorConfig(**overrides)).start(port=args.port)
    print(emulator.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.until_stdin_closes:

        def stop_at_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=stop_at_eof, daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
