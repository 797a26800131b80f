"""When a failed queue message is tried again. Pure: the attempt number is passed in."""

SQS_MAX_VISIBILITY_SECONDS = 43_200


def backoff_seconds(attempt: int, base: int, ceiling: int) -> int:
    """base, 2·base, 4·base … for attempts 1, 2, 3 …, capped (and within SQS's 12 h)."""
    exponent = max(attempt, 1) - 1
    return int(min(base * 2 ** min(exponent, 20), ceiling, SQS_MAX_VISIBILITY_SECONDS))


# However near the deadline a message first arrived, it gets this long to be retried.
MIN_RETRY_SECONDS = 600


def retry_until(
    first_received: int,
    *,
    finalizes_at: int | None,
    margin_seconds: int,
    window_seconds: int,
) -> int:
    """Until when a transient failure keeps its message in the queue (unix seconds).

    For an invoice whose finalization time is known, shortly before it: after that a
    report is late whatever happens, and a person should see it now. Without one (other
    events, test clocks whose time is not real time), a fixed window from the first
    delivery. Either way at least MIN_RETRY_SECONDS, so an event that arrives late still
    gets a few tries.
    """
    until = first_received + window_seconds
    if finalizes_at is not None:
        until = finalizes_at - margin_seconds
    return max(until, first_received + MIN_RETRY_SECONDS)


def next_delay(attempt: int, base: int, ceiling: int, *, now: int, until: int) -> int:
    """The back-off for this attempt, never past `until` (the last try lands before it)."""
    return max(0, min(backoff_seconds(attempt, base, ceiling), until - now))
