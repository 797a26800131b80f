"""When a failed queue message is tried again. Pure: the attempt number is passed in."""

SQS_MAX_VISIBILITY_SECONDS = 43_200


def backoff_seconds(attempt: int, base: int, ceiling: int) -> int:
    """base, 2·base, 4·base … for attempts 1, 2, 3 …, capped (and within SQS's 12 h)."""
    exponent = max(attempt, 1) - 1
    return int(min(base * 2 ** min(exponent, 20), ceiling, SQS_MAX_VISIBILITY_SECONDS))
