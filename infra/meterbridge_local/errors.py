"""The one error type every `meterbridge` command raises for a problem the user can fix."""


class CliError(Exception):
    """Bad input or an unreachable target: printed as one line, no traceback, exit status 2.

    The message says what was wrong and what to do about it.
    """
