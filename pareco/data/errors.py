"""The one exception type of :mod:`pareco.data`."""

from __future__ import annotations


class DataError(Exception):
    """A user-facing data problem: missing or corrupt files, or an invalid argument.

    The message is one sentence naming what was wrong and what the user can do about it.
    """
