"""One error family for everything a user can get wrong.

Every message names the problem and the fix in one line, so the CLI can print it without a
traceback and library users can catch a single type.
"""


class VaubanError(Exception):
    """Bad input or environment; the message says what was wrong and how to fix it."""
