"""The meter-event rate limiter: holding a real limit, and recovering from a single 429.

Both through the real worker handler (bench.worker_throughput's harness: real stripe SDK →
Stripe billing emulator in its own process, real boto3 → a DynamoDB stand-in for the
ledger, dynalite when installed, else moto):

- against the limit: 300 reports at `BATCH_CONCURRENCY=64`, starting at three times the
  emulator's 20/s meter-event limit; the share of the limit achieved and the 429s;
- a quiet container after one 429: a warm worker at the template's defaults
  (`BATCH_CONCURRENCY=16`, `METER_EVENT_RATE=100`) reports one invoice a second; another
  client then uses the account's whole second (the emulator's limit, 25/s as in a sandbox),
  so the next report meets a 429; then one batch of 20 invoices is timed. The emulator
  adds no latency (its default). The same run without the other client is the baseline.

Written into docs/benchmarks.md between the bench:limiter markers.
"""

import os
import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

import stripe

from bench.report import machine_info, write_section
from bench.worker_throughput import (
    API_KEY,
    Ledger,
    _Context,
    _ledgers,
    _records,
    _worker,
    _world,
)
from meterbridge.handlers.worker import handler
from meterbridge_local.aws import LOCAL_AWS_ENVIRONMENT

LIMIT = int(os.environ.get("BENCH_METER_EVENT_LIMIT", "20"))
LIMITED_REPORTS = int(os.environ.get("BENCH_LIMITED_REPORTS", "300"))
LIMITED_RUNS = int(os.environ.get("BENCH_LIMITED_RUNS", "3"))
SETTLE_SECONDS = 3.0
QUIET_LIMIT = int(os.environ.get("BENCH_QUIET_LIMIT", "25"))
QUIET_RUNS = int(os.environ.get("BENCH_QUIET_RUNS", "5"))
AFTER = 20  # reports timed after the 429


def _rate_limited_run(ledger: Ledger) -> dict[str, Any]:
    world = _world(meter_event_rate_limit=LIMIT)
    try:
        worker = _worker(world, 64, ledger, METER_EVENT_RATE=str(LIMIT * 3))
        limiter = worker.pipeline.stripe.meter_event_limiter
        event = _records(world.customers, world.price, LIMITED_REPORTS)
        rounds = 0
        started = time.time()
        # The start-up overload (3x the limit) is over within a couple of seconds; what
        # follows is the pace the limiter holds. Sampled from a timer thread.
        at_settled: list[tuple[int, int]] = []
        timer = threading.Timer(
            SETTLE_SECONDS, lambda: at_settled.append((limiter.rate_limited, limiter.requests))
        )
        timer.start()
        while event["Records"] and rounds < 10:
            rounds += 1
            response = handler(event, _Context(), worker=worker)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            event = {"Records": [r for r in event["Records"] if r["messageId"] in failed]}
        timer.cancel()
        events = [e for e in world.emulator.meter_events() if e["status"] == "accepted"]
    finally:
        world.emulator.stop()
    identifiers = [e["identifier"] for e in events]
    # The warm-up invocation's few reports are in the emulator's records too: left out.
    times = sorted(t for t in (float(e["received_at"]) for e in events) if t >= started)
    settled = [t for t in times if t >= started + SETTLE_SECONDS]
    limited_early, requests_early = at_settled[0] if at_settled else (0, 0)
    return {
        "rounds": rounds,
        # n events over the span from the first to the last: n - 1 intervals.
        "achieved": (len(times) - 1) / (times[-1] - times[0]),
        "settled": (len(settled) - 1) / (settled[-1] - settled[0]),
        "rate_limited": limiter.rate_limited,
        "share": limiter.rate_limited / limiter.requests,
        "settled_limited": limiter.rate_limited - limited_early,
        "settled_share": (limiter.rate_limited - limited_early)
        / max(1, limiter.requests - requests_early),
        "pauses": limiter.pauses,
        "once": len(set(identifiers)) == len(identifiers) >= LIMITED_REPORTS,
    }


def _quiet_run(ledger: Ledger, *, with_429: bool) -> dict[str, Any]:
    """A quiet warm worker; optionally another client fills the account's second just
    before one report; then one batch of AFTER reports."""
    world = _world(meter_event_rate_limit=QUIET_LIMIT)
    try:
        worker = _worker(world, 16, ledger)
        limiter = worker.pipeline.stripe.meter_event_limiter
        for _ in range(5):  # one report a second: the pace holds nothing back
            _handle(worker, _records(world.customers, world.price, 1))
            time.sleep(1.0)
        if with_429:
            other = stripe.StripeClient(
                API_KEY,
                base_addresses={"api": world.emulator.url, "meter_events": world.emulator.url},
            )
            for index in range(QUIET_LIMIT):
                other.v1.billing.meter_events.create(
                    {
                        "event_name": "bench_calls",
                        "payload": {
                            "stripe_customer_id": world.customers[index % len(world.customers)],
                            "value": "1",
                        },
                    }
                )
        limited_before = limiter.rate_limited
        met = time.perf_counter()
        _handle(worker, _records(world.customers, world.price, 1))
        first = time.perf_counter() - met
        rate_limited = limiter.rate_limited - limited_before
        started = time.perf_counter()
        _handle(worker, _records(world.customers, world.price, AFTER))
        after = time.perf_counter() - started
        return {
            "first": first,
            "after": after,
            "rate_limited": rate_limited,
            "rate_limited_after": limiter.rate_limited - limited_before - rate_limited,
            "pauses": limiter.pauses,
        }
    finally:
        world.emulator.stop()


def _handle(worker: Any, event: dict[str, Any]) -> None:
    response = handler(event, _Context(), worker=worker)
    if response["batchItemFailures"]:
        raise RuntimeError(f"{len(response['batchItemFailures'])} records failed")


def run() -> None:
    from meterbridge.observability import logger

    logger.setLevel("WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.update(LOCAL_AWS_ENVIRONMENT)
    with _ledgers() as ledgers:
        ledger = ledgers[0]
        quiet: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(QUIET_RUNS):  # alternating, so both see the same machine
            for with_429 in (True, False):
                result = _quiet_run(ledger, with_429=with_429)
                quiet[with_429].append(result)
                label = "one 429" if with_429 else "no 429"
                print(
                    f"  quiet, {label}: report {result['first']:.2f} s"
                    f" ({result['rate_limited']} x 429), next {AFTER}: {result['after']:.2f} s"
                )
        limited = []
        for _ in range(LIMITED_RUNS):
            limited.append(_rate_limited_run(ledger))
            print(
                f"  against {LIMIT}/s: {limited[-1]['achieved']:.1f}/s,"
                f" {limited[-1]['rate_limited']} x 429"
            )
    _write(ledger.name, quiet, limited)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(run[key]) for run in runs)


def _figures(runs: list[dict[str, Any]], key: str, form: str) -> str:
    return ", ".join(format(run[key], form) for run in runs)


def _write(
    ledger: str, quiet: dict[bool, list[dict[str, Any]]], limited: list[dict[str, Any]]
) -> None:
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    machine = machine_info("stripe", "boto3", "moto")
    hit, calm = quiet[True], quiet[False]
    after = _median(hit, "after")
    quiet_table = "\n".join(
        [
            f"| run | the report after the other client's burst | its 429s"
            f" | next {AFTER} reports (median) | runs | 429s during them | target |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- |",
            f"| one 429 | {_median(hit, 'first'):.2f} s | {_median(hit, 'rate_limited'):.0f}"
            f" | **{after:.2f} s** | {_figures(hit, 'after', '.2f')}"
            f" | {sum(r['rate_limited_after'] for r in hit)}"
            f" | < 2 s ({'met' if after < 2 else '**NOT met**'}) |",
            f"| no 429 (baseline) | {_median(calm, 'first'):.2f} s | 0"
            f" | {_median(calm, 'after'):.2f} s | {_figures(calm, 'after', '.2f')}"
            f" | {sum(r['rate_limited_after'] for r in calm)} | — |",
        ]
    )
    achieved = _median(limited, "achieved")
    settled = _median(limited, "settled")
    limited_table = "\n".join(
        [
            "| limit | measured over | achieved, median (runs) | achieved / limit"
            " | 429 answers (runs) | 429 share of requests | quiet pauses | sent once each |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| {LIMIT}/s | the whole run | {achieved:.1f}/s"
            f" ({_figures(limited, 'achieved', '.1f')}) | {achieved / LIMIT:.0%}"
            f" | {_figures(limited, 'rate_limited', 'd')} | {_median(limited, 'share'):.1%}"
            f" | {_figures(limited, 'pauses', 'd')}"
            f" | {'yes' if all(r['once'] for r in limited) else 'NO'} |",
            f"| {LIMIT}/s | after the first {SETTLE_SECONDS:.0f} s | {settled:.1f}/s"
            f" ({_figures(limited, 'settled', '.1f')}) | {settled / LIMIT:.0%}"
            f" | {_figures(limited, 'settled_limited', 'd')}"
            f" | {_median(limited, 'settled_share'):.1%} | | |",
        ]
    )
    body = f"""## Meter-event rate limiter

Measured {measured} UTC with `make bench` (`.venv/bin/python -m bench limiter`) on {machine}.
The real worker handler, ledger on {ledger}, the Stripe billing emulator in its own process
(`adapters/rate_limiter.py` explains the limiter).

### A quiet container after a single 429

A warm worker at the template's defaults (`BATCH_CONCURRENCY=16`, `METER_EVENT_RATE=100`,
`INVOICE_GUARD=off`) reports one invoice a second for 5 s; the emulator (no added latency,
its default) limits meter events to {QUIET_LIMIT}/s as a sandbox account does. Another
client then sends {QUIET_LIMIT} meter events at once, using the account's whole second, and
the worker reports one more invoice, which meets a 429; then one invocation with {AFTER}
invoices is timed. Median of {QUIET_RUNS} runs each, alternating with the same sequence
without the other client.

{quiet_table}

Issue 13 measured 17.1 s for the {AFTER} reports after one 429 with the first design, which
took what Stripe had accepted from this container in the last second (one or two requests)
as its share of the limit; this benchmark measured it at 19.5 s (median of 3 runs: 19.44,
19.49, 19.48 s; baseline 0.85 s) on 2026-11-30, with that limiter (commit 258c2b1) in place.
A 429 now sets a ceiling only when at least 5 requests were accepted in the last second;
otherwise the limiter pauses every request for a second (Stripe's limits are per second;
doubling while pauses follow each other) and goes on at 0.8 of its pace. The report that
met the 429 waits out that second (the first design's cut to ~1/s delayed it as long).

### Against Stripe's meter-event rate limit

v1, `BATCH_CONCURRENCY=64`, {LIMITED_REPORTS} reports, the emulator limiting meter events to
{LIMIT}/s (sliding 1 s window) and the worker starting at `METER_EVENT_RATE={LIMIT * 3}`
(three times too fast); failed records redelivered at once until all were sent. Median of
{LIMITED_RUNS} runs.

{limited_table}

Target: ≥ 90 % of the limit without a 429 storm. Before the quiet-container rule (one run
in bench:worker, 2026-11-25): 18.2/s (91 %) with 13 429s, 18.7/s (94 %) with 2 after the
first 3 s. The limiter cuts its pace at a 429 to 0.8 of what Stripe accepted in the last
second, returns to 95 % of that within about a second and then probes +2 %/s. The 429s
cluster in the start-up overload, when 64 threads begin at three times the limit and the
requests already in flight answer 429 together; after it, a 429 marks each probe past the
limit. "Quiet pauses" counts the overloads met with fewer than 5 requests accepted in the
last second (0: the quiet-container rule never fires here). Halving the pace at each cut
(the first design) measured 84-88 % of the limit. Tried and dropped: estimating the limit
per second of a run younger than a second (~93 %, but twice the start-up 429s: the
emulator, like a sliding-window limiter, lets the first second's allowance through as a
burst), cutting again at once when a request sent at the new pace is refused (right after
such a burst every request is refused, so the pace collapsed to under half the limit), and
treating a 429 as quiet when most requests of the last second had not waited for their slot
(with moto's ledger the 64 threads reach the limiter slower than its starting pace, so the
start-up overload was taken as quiet and the limit never measured).
"""
    write_section("limiter", body)
    print(body)


if __name__ == "__main__":
    run()
