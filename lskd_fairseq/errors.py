"""Errors lskd raises itself when a user's input cannot work.

Each is a ``ValueError`` (for callers that catch those) and an ``LskdError``:
the fairseq commands show it as one line, ``<command>: error: <message>``, and
exit with status 2, instead of a traceback (see ``fairseq_compat.apply``).
"""


class LskdError(ValueError):
    """A mistake in what the user gave lskd, explained in one line with its fix."""


class OptionError(LskdError):
    """Options that are out of range or that contradict each other."""
