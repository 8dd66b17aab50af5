"""Errors that kdrun reports to the user instead of a stack of framework frames."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the bad value and what is allowed."""
