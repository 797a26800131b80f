"""A process-wide pace for meter-event requests that finds Stripe's rate limit by itself.

Stripe answers 429 above its meter-event limit (docs/stripe.md#S-RATE-1: ~25/s sandbox,
1,000/s live, shared by every container of the account). 64 threads retrying 429s on their own turn
into a 429 storm; one limiter per process spaces the requests instead:

- requests get evenly spaced slots (a token bucket without burst) at `rate` per second;
- a 429 is one overload, however many requests in flight answer it: the limiter reacts at
  most once per `cut_interval`;
- when Stripe accepted at least `min_measured_rate` requests during the last second, that
  count is this container's share of the limit: it becomes the ceiling and the rate is cut
  to `cut_factor` (0.8) of it (multiplicative decrease; halving lost ~10 % of the limit at
  every probe past it: bench:worker measured 84-88 % of a 20/s limit with 0.5, ~91 % with
  0.8). The rate then climbs back to just under the ceiling quickly and creeps above it
  slowly (additive increase) to find out whether the limit moved;
- when fewer were accepted (a quiet container sending a few requests a second), the count
  measures the container's demand, not the limit: the 429 says only that the account is
  over its limit right now (other containers count too). The limiter then pauses every
  request for `pause_seconds` — Stripe's limits are per second — doubling while pauses
  follow each other with nothing accepted between them, and cuts the rate to `cut_factor`
  of itself, keeping any ceiling measured before. Taking the few accepted requests as the
  ceiling (the first design) left a quiet container at ~1 request/s for minutes after a
  single 429 (issue 13: 20 reports took 17 s). A second that contains a pause measures
  nothing either (the pause emptied it).

Without a ceiling the rate grows slowly from `initial_rate`. A request whose slot would
come after the caller's deadline (`outbound_deadline`) is refused at once with a
TransientError instead of sleeping past it: at 1 request/s, the 64th thread in line would
otherwise wait a minute. Pure logic: the clock and sleep are injected, so it is tested
without waiting.
"""

import collections
import math
import threading
import time
from collections.abc import Callable

from meterbridge.adapters.outbound_http import caller_deadline
from meterbridge.errors import TransientError


class AdaptiveRateLimiter:
    def __init__(
        self,
        initial_rate: float,
        *,
        min_rate: float = 1.0,
        growth_per_second: float = 0.1,
        probe_per_second: float = 0.02,
        recovery_seconds: float = 0.3,
        cut_interval: float = 1.0,
        cut_factor: float = 0.8,
        pause_seconds: float = 1.0,
        max_pause_seconds: float = 4.0,
        min_measured_rate: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._rate = max(initial_rate, min_rate)
        self._min = min_rate
        self._growth = growth_per_second
        self._probe = probe_per_second
        self._recovery = recovery_seconds
        self._cut_interval = cut_interval
        self._cut_factor = cut_factor
        self._pause = pause_seconds
        self._max_pause = max_pause_seconds
        self._min_measured = min_measured_rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._ceiling: float | None = None
        self._updated = clock()
        self._next_slot = self._updated
        self._last_cut = -math.inf
        self._paused_until = -math.inf
        self._accepted: collections.deque[float] = collections.deque()
        self._generation = 0  # changes when the pace changes: waiting slots are re-spaced
        self._pauses_in_a_row = 0  # pauses since the last accepted request
        self.requests = 0
        self.rate_limited = 0
        self.pauses = 0
        self.refused = 0  # requests refused because their slot came after the deadline

    @property
    def rate(self) -> float:
        with self._lock:
            self._grow(self._clock())
            return self._rate

    @property
    def ceiling(self) -> float | None:
        return self._ceiling

    def acquire(self) -> None:
        """Wait for this request's slot. A slot handed out before a cut is given up for one
        at the new pace: otherwise every thread already waiting would still fire at the
        overloading pace and meet 429s."""
        deadline = caller_deadline()
        while True:
            with self._lock:
                now = self._clock()
                self._grow(now)
                slot = max(now, self._next_slot)
                if deadline is not None and slot > deadline:
                    self.refused += 1
                    raise TransientError(
                        f"meter-event rate limit: no request slot before the deadline (pace"
                        f" {self._rate:.1f}/s, next slot in {slot - now:.1f} s)"
                    )
                self._next_slot = slot + 1.0 / self._rate
                generation = self._generation
            if slot > now:
                self._sleep(slot - now)
            with self._lock:
                if self._generation == generation:
                    self.requests += 1
                    return

    def on_success(self) -> None:
        with self._lock:
            now = self._clock()
            self._pauses_in_a_row = 0
            self._accepted.append(now)
            self._forget(now)

    def on_rate_limited(self) -> None:
        """Stripe answered 429: slow down (once per overload)."""
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            self._grow(now)
            self._forget(now)
            if now - self._last_cut < self._cut_interval:
                return
            self._last_cut = now
            self._generation += 1
            if self._measurable(now):
                # Limits are per second: what was accepted in the last second is the estimate.
                self._ceiling = max(self._min, min(self._rate, float(len(self._accepted))))
                self._rate = max(self._min, min(self._rate, self._ceiling) * self._cut_factor)
                # Slots handed out at the old pace would keep overloading: space from now on.
                self._next_slot = now + 1.0 / self._rate
                return
            # Nothing to measure: wait out Stripe's second, longer while 429s keep coming.
            pause = min(self._max_pause, self._pause * 2**self._pauses_in_a_row)
            self._pauses_in_a_row += 1
            self.pauses += 1
            self._rate = max(self._min, self._rate * self._cut_factor)
            self._paused_until = now + pause
            self._next_slot = self._paused_until

    def _measurable(self, now: float) -> bool:
        """Whether the last second says how much of the limit is this container's."""
        return now - self._paused_until >= 1.0 and len(self._accepted) >= self._min_measured

    def _forget(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - 1.0:
            self._accepted.popleft()

    def _grow(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if elapsed == 0:
            return
        ceiling = self._ceiling
        if ceiling is None:
            self._rate *= 1 + self._growth * elapsed
            return
        near = 0.95 * ceiling
        if self._rate < near:
            # Fast return towards the last rate that worked (exponential approach).
            self._rate = near - (near - self._rate) * math.exp(-elapsed / self._recovery)
            if self._rate >= near - 0.01 * ceiling:
                self._rate = near
        else:
            self._rate += self._probe * ceiling * elapsed
