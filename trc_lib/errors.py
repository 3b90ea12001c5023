"""The one exception type the command line turns into a clear message instead of a traceback."""


class TRCError(Exception):
    """A user-facing error: bad input, a missing or corrupt file, a mismatch. The message names
    the file or option and says what is wrong."""
