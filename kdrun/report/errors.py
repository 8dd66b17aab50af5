"""The one error `kdrun-report` reports to the user (exit code 2) instead of a traceback."""


class ReportError(ValueError):
    """Bad input to the report: the message names the bad value and what is allowed."""
