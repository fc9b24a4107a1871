"""The one exception type for problems a user can cause and fix."""


class UserError(Exception):
    """Bad input, config or environment: shown as one line, exit code 2, no traceback.

    The message names the file, line or key and says what was expected. Bugs raise
    ordinary exceptions instead, so that they keep their tracebacks.
    """
