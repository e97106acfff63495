"""The one exception type that the command line turns into a one-line message."""


class EvoproxyError(Exception):
    """A problem with the user's input or environment, worded so that its message alone says
    what was wrong and how to fix it. The CLI prints it as one line, without a traceback."""
