"""`python -m bench [name ...]`: run every registered benchmark present, or the named ones."""

import importlib
import importlib.util
import sys
import time

# name on the command line -> module in bench/. A module not (yet) present is skipped.
BENCHMARKS = {
    "webhook": "bench.webhook",
    "worker": "bench.worker_throughput",
    "limiter": "bench.limiter",
    "guard": "bench.guard_correctness",
    "storm": "bench.month_start_storm",
    "scenarios": "bench.scenario_table",
    "cli": "bench.cli_startup",
    "continuous": "bench.continuous",
    "tests": "bench.test_suite",
}
ALIASES = {
    "worker_throughput": "worker",
    "guard_correctness": "guard",
    "month_start_storm": "storm",
    "scenario_table": "scenarios",
    "cli_startup": "cli",
    "test_suite": "tests",
}


def main(argv: list[str]) -> int:
    names = [ALIASES.get(name, name) for name in argv] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        module_name = BENCHMARKS[name]
        if importlib.util.find_spec(module_name) is None:
            print(f"== {name}: {module_name} not present, skipped")
            continue
        print(f"== {name} ({module_name})", flush=True)
        started = time.monotonic()
        module = importlib.import_module(module_name)
        entry = getattr(module, "run", None) or module.main
        entry()
        print(f"== {name} done in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
