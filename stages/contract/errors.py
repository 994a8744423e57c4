"""Exceptions shared by the stages."""


class VtpipeError(Exception):
    """A configuration or input error the user can fix; the message names the bad value and the fix."""


class ConfigError(VtpipeError):
    """A config value is missing, unknown or of the wrong type."""


class FingerprintMismatch(VtpipeError):
    """A finished task exists with a different fingerprint (config or inputs changed)."""
