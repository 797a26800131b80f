"""Failure classes. The worker's retry logic reads the type, never a message string."""


class MeterbridgeError(Exception):
    """Base of every error meterbridge raises on purpose."""


class SettingsError(MeterbridgeError):
    """A required setting is missing or invalid; the message names the environment variable."""


class TransientError(MeterbridgeError):
    """Worth retrying later as it is: network, 5xx, 409, 429, throttling, usage source down."""


class PermanentError(MeterbridgeError):
    """Retrying cannot help until someone fixes the cause; the message says what is wrong."""


class AlreadyDelivered(MeterbridgeError):
    """Stripe already holds an event with this identifier: the report was delivered before."""
