"""The adaptive meter-event rate limiter against a simulated Stripe limit (fake clock)."""

import collections

import pytest

from meterbridge.adapters.outbound_http import outbound_deadline
from meterbridge.adapters.rate_limiter import AdaptiveRateLimiter
from meterbridge.errors import TransientError


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class StripeWindow:
    """Stripe's meter-event limit as the emulator models it: `limit` accepted requests in
    any sliding second, shared by every container of the account."""

    def __init__(self, time: FakeTime, limit: int):
        self._time = time
        self._limit = limit
        self._accepted: collections.deque[float] = collections.deque()

    def admit(self) -> bool:
        now = self._time.now
        while self._accepted and self._accepted[0] <= now - 1.0:
            self._accepted.popleft()
        if len(self._accepted) >= self._limit:
            return False
        self._accepted.append(now)
        return True

    def fill(self) -> None:
        """Another container takes the whole second's allowance."""
        while self.admit():
            pass


def send(limiter: AdaptiveRateLimiter, stripe: StripeWindow) -> bool:
    """One meter event through the limiter, as the gateway sends it (zero latency)."""
    limiter.acquire()
    if stripe.admit():
        limiter.on_success()
        return True
    limiter.on_rate_limited()
    return False


def report(limiter: AdaptiveRateLimiter, stripe: StripeWindow, retries: int = 3) -> bool:
    """One report: the gateway retries a 429 up to `retries` times, paced by the limiter."""
    return any(send(limiter, stripe) for _ in range(retries + 1))


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


def test_a_quiet_container_recovers_in_a_second_after_a_single_429(time: FakeTime) -> None:
    """Issue 13: after one 429 a quiet container took 17 s for its next 20 reports."""
    limiter = AdaptiveRateLimiter(100, clock=time.clock, sleep=time.sleep)
    stripe = StripeWindow(time, limit=25)
    for _ in range(5):  # a report every 2 s: the pace never holds anything back
        assert report(limiter, stripe)
        time.sleep(2)

    stripe.fill()  # another container used the account's second
    met_429 = time.now
    assert report(limiter, stripe)  # refused once, then accepted after the pause
    assert limiter.rate_limited == 1
    retried = time.now

    assert all(report(limiter, stripe) for _ in range(20))
    assert time.now - retried < 0.5  # (fake time) 20 reports at ~80/s, not ~1/s
    assert limiter.rate_limited == 1
    assert retried - met_429 == pytest.approx(1.0)  # waited out Stripe's second, no more
    assert limiter.ceiling is None  # a handful of requests says nothing about the limit


def test_pauses_double_while_429s_follow_each_other_and_reset_after_an_accepted_request(
    time: FakeTime,
) -> None:
    limiter = AdaptiveRateLimiter(50, clock=time.clock, sleep=time.sleep)
    waits = []
    for _ in range(5):
        before = time.now
        limiter.acquire()
        waits.append(time.now - before)
        limiter.on_rate_limited()
    assert waits == pytest.approx([0, 1, 2, 4, 4])  # capped at max_pause_seconds
    assert limiter.pauses == 4 + 1
    limiter.acquire()
    limiter.on_success()
    time.sleep(5)
    limiter.acquire()
    limiter.on_rate_limited()
    before = time.now
    limiter.acquire()
    assert time.now - before == pytest.approx(1.0)  # back to one second


def test_a_paced_container_still_finds_the_limit_without_a_429_storm(time: FakeTime) -> None:
    """Starting at three times a 20/s limit, every request waiting for its slot: the 429s
    measure the limit (ceiling near 20) and it then holds ≥ 90 % of it."""
    limiter = AdaptiveRateLimiter(60, clock=time.clock, sleep=time.sleep)
    stripe = StripeWindow(time, limit=20)
    started = time.now
    outcomes: list[tuple[float, bool]] = []
    while time.now - started < 60:
        outcomes.append((time.now, send(limiter, stripe)))
    ceiling = limiter.ceiling
    assert ceiling is not None
    assert 18 <= ceiling <= 22
    assert limiter.pauses == 0  # paced overloads are measured, never paused
    settled = [accepted for at, accepted in outcomes if at >= started + 5]
    accepted_per_second = sum(settled) / (outcomes[-1][0] - (started + 5))
    assert accepted_per_second >= 0.9 * 20
    assert settled.count(False) <= 0.05 * len(settled)


def test_a_busy_container_is_back_to_the_limit_soon_after_another_one_stopped_hogging_it(
    time: FakeTime,
) -> None:
    """While another container holds the whole limit, this one's accepted count is ~0:
    measured, that would become a ceiling of ~1/s that outlives the other's burst."""
    limiter = AdaptiveRateLimiter(40, clock=time.clock, sleep=time.sleep)
    stripe = StripeWindow(time, limit=25)
    hogged_until = time.now + 5
    outcomes: list[tuple[float, bool]] = []
    while time.now < hogged_until + 10:
        if time.now < hogged_until:
            stripe.fill()
        outcomes.append((time.now, send(limiter, stripe)))
    assert limiter.pauses >= 2  # it backed off while refused
    later = [accepted for at, accepted in outcomes if at >= hogged_until + 2]
    assert sum(later) / 8 >= 0.9 * 25  # then took the limit again within 2 s


def test_a_slot_after_the_callers_deadline_is_refused_at_once(time: FakeTime) -> None:
    """64 threads in line at 1/s: the last would sleep a minute, past the invocation."""
    limiter = AdaptiveRateLimiter(1, clock=time.clock, sleep=time.sleep)
    with outbound_deadline(time.now + 2.5):
        for _ in range(3):  # slots at +0, +1, +2 s
            limiter.acquire()
        before = time.now
        with pytest.raises(TransientError, match="no request slot before the deadline"):
            limiter.acquire()  # +3 s is past it
        assert time.now == before  # refused without sleeping
    assert limiter.refused == 1
    assert limiter.requests == 3
    limiter.acquire()  # no deadline: the slot it did not take is still the next one
    assert 0.5 < time.now - before <= 1.0
