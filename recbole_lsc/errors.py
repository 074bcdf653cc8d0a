"""One exception family for every input problem the user can fix.

The CLI prints such an error as a single line (``error: ...``) and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class LSCError(Exception):
    """A problem with the user's input, stated with what to do about it."""


class ConfigError(LSCError):
    """Bad model name, malformed yaml, unknown or mistyped config value."""


class DatasetNotFoundError(LSCError):
    """The dataset's atomic files are not on this machine."""


class CheckpointError(LSCError):
    """A checkpoint file is corrupt, truncated, or was not written by recbole-lsc."""


class DatasetFormatError(LSCError):
    """An atomic file that cannot be read: bad bytes, header, rows or missing columns."""


def first_line(err):
    """The first line of an exception's message (its class name when the message is empty):
    what a one-line ``error:`` quotes of a library's multi-line message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
